"""Triton kernels for the transformer's hot spots, each with a `torch.autograd.Function`
wrapper and a plain-torch reference that defines what it computes.

Which path runs is decided in `dispatch` (Triton on CUDA, Triton interpreted on the CPU when
TRITON_INTERPRET=1, else the reference) and is always reported, never silent. This package
imports only torch and triton.
"""
