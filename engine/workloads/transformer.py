"""The transformer as a workload: a small GPT (engine/model) trained through the BFT round.

Data comes from the built-in synthetic Markov source (engine/train/synthetic.py): each node
samples its own shard from the source, and the held-out stream scores the model, next to the
source's entropy rate (the best loss any model can reach). The model is a pure function of a
flat float32 vector, as the node's aggregation and optimizer step require: the vector is
loaded into one module before each gradient, and the gradient read back in the same order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.gpt import GPT
from phalanx.engine.rng import RngStreams
from phalanx.engine.train.data import TokenStream, eval_batches
from phalanx.engine.train.synthetic import MarkovSource
from phalanx.engine.workloads.base import GradientResult, Workload


class TransformerLM(Workload):
    name = "transformer"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, vocab: int = 16, order: int = 2,
                 concentration: float = 0.3, block_size: int = 32, n_layer: int = 2,
                 n_head: int = 2, n_embd: int = 32, ffn: str = "swiglu", n_experts: int = 4,
                 top_k: int = 2, tokens_per_node: int = 20_000, val_tokens: int = 8_192,
                 batch: int = 8) -> None:
        self.rngs, self.batch, self.tokens_per_node = rngs, batch, tokens_per_node
        self.source = MarkovSource(vocab, order, concentration, rngs.seed("corpus"))
        self.entropy_rate = self.source.entropy_rate()
        self.config = GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer,
                                n_head=n_head, n_embd=n_embd, ffn=ffn,  # type: ignore[arg-type]
                                n_experts=n_experts, top_k=min(top_k, n_experts))
        with torch.random.fork_rng():  # the initial weights come from the run's seed
            torch.manual_seed(rngs.seed("init"))
            self.model = GPT(self.config).train()
        self._init = parameters_to_vector(self.model.parameters()).detach().numpy().copy()
        val = TokenStream(self.source.sample(val_tokens, rngs.stream("eval")))
        self._eval = eval_batches(val, 64, block_size)
        self._shards: dict[int, TokenStream] = {}

    @property
    def size(self) -> int:
        return len(self._init)

    def init_params(self) -> np.ndarray:
        return self._init.copy()

    def _shard(self, node: int) -> TokenStream:
        if node not in self._shards:
            ids = self.source.sample(self.tokens_per_node, self.rngs.stream("shard", node))
            self._shards[node] = TokenStream(ids)
        return self._shards[node]

    def _load(self, params: np.ndarray) -> None:
        vector_to_parameters(torch.from_numpy(np.asarray(params, np.float32)),
                             self.model.parameters())

    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        shard, block = self._shard(node), self.config.block_size
        starts = self.rngs.stream("batch", node, round).integers(
            0, len(shard) - block - 1, size=self.batch)
        index = starts[:, None] + np.arange(block + 1)[None, :]
        chunk = torch.from_numpy(shard.tokens[index])
        x, y = chunk[:, :-1], chunk[:, 1:]
        if poisoned:  # data poisoning: train on the mirrored next symbol
            y = self.config.vocab_size - 1 - y
        self._load(params)
        self.model.zero_grad(set_to_none=False)
        out = self.model(x, targets=y)
        out.loss.backward()  # type: ignore[union-attr]
        grad = torch.cat([p.grad.reshape(-1) for p in self.model.parameters()])  # type: ignore[union-attr]
        return GradientResult(grad.numpy().astype(np.float32, copy=True),
                              float(out.lm_loss.detach()), x.numel())  # type: ignore[union-attr]

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        self._load(params)
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in self._eval:
                logits = self.model(x).logits.float()
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
                count += y.numel()
        self.model.train()
        loss = total / count
        return {"loss": loss, "excess_loss": loss - self.entropy_rate}
