"""LongNAS: weight-sharing architecture search for long-sequence Transformers."""
