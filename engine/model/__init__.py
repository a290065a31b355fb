"""The transformer phalanx trains: a GPT-style decoder (multi-head and grouped-query attention,
rotary positions, optional sliding window, KV cache, SwiGLU or mixture-of-experts feed-forward,
RMSNorm or LayerNorm), its tokenizers and text generation."""
