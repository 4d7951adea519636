"""LongNAS: weight-sharing architecture search for long-sequence Transformers.

Dimension key, one for the whole package (shape comments use these letters and no others):
# b batch, n sequence, N padded sequence, D model width, h heads, d head dim, C classes or
# choices, k projected length (Linformer), r rank (Synthesizer), R hash rounds (LSH),
# m random features (Performer), w blocks and c block size (local), g global tokens,
# s chunk size, S sorted rows (LSH), a sampled archs, K decisions, H controller width
"""
