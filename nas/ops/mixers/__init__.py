"""Linear-recurrent and convolutional sequence mixers, as plain functions of per-head tensors:
gla (GLA and RetNet's retention), gated_deltanet, mamba2 (SSD and its short convolution), hyena.

Each has a chunkwise-parallel (or FFT) causal form for training, a step form on a fixed-shape
state for decoding, a bidirectional form, and cost functions (FLOPs, activations, decode state).
"""
