"""The sender path: from a computed gradient to the frame a node broadcasts.

In order: the gradient is checked (never send what every peer would reject), clipped and
noised for differential privacy (engine/privacy.py: first, so all that follows is
post-processing), mixed into the worker momentum (`worker_momentum`: lower variance makes
Byzantine vectors stand out, Karimireddy, He, Jaggi 2021) or turned into the node's own Adam
direction (`worker_optimizer: adam`, engine/optim.py), then encoded as the run compresses
gradients (engine/compress/), with the top-k ratio picked from the measured uplink when
adaptive. What was sent is kept for the round: re-sent unchanged after a view change, and
carried into the next round's momentum or Adam moments once the round commits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from phalanx.engine.compress import NetworkConditions
from phalanx.engine.encoding import GradientEncoding
from phalanx.engine.events import LinkConditions
from phalanx.engine.optim import SenderAdam
from phalanx.engine.privacy import clip_and_noise
from phalanx.engine.workloads import GradientJob, GradientResult
from phalanx.net.envelope import Envelope
from phalanx.net.messages import Gradient

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class Sender:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.encoding = GradientEncoding(config.compression, dict(config.compression_params),
                                         config.error_feedback, config.adaptive,
                                         config.feedback_decay)
        self.link: LinkConditions | None = None  # the latest the driver measured
        self.worker_momentum = np.zeros_like(node.params)  # what we sent, if it is a momentum
        # `momentum` is sender Adam's beta1
        self.adam = (SenderAdam(node.params.size, beta1=config.momentum)
                     if config.worker_optimizer == "adam" else None)

    def on_computed(self, job: object, result: GradientResult) -> None:
        node = self.node
        if not isinstance(job, GradientJob) or job.round != node.round or node.finished:
            return  # stale: the node moved on (e.g. by sync) while it computed
        problem = node.intake.check_gradient(result.loss, result.samples, result.values)
        if problem:  # e.g. a diverged model: never send what every peer would reject
            node.reject(f"own_{problem}", node.id)
            return
        result = self._transform(result)
        state = node.protocol.state
        state.own_result = result
        state.sent_ratio = self.encoding.ratio_for(result.values.size, self._conditions())
        state.own_gradient = self.encoding.pack(
            Gradient(node.round, node.model_hash, result.loss, result.samples, result.values),
            result.values, self._coder_rng(), ratio=state.sent_ratio)
        self.resend()
        node.protocol.advance()

    def _transform(self, result: GradientResult) -> GradientResult:
        """Privacy, then worker momentum, then sender Adam, as configured."""
        node, config = self.node, self.node.config
        if config.privacy is not None:  # first: all that follows is post-processing
            clip, noise = config.privacy
            result = replace(result, values=clip_and_noise(result.values, clip, noise,
                                                           node.identity.seed, node.round,
                                                           node.model_hash))
        beta = config.worker_momentum
        if beta > 0.0:
            mixed = (beta * self.worker_momentum.astype(np.float64)
                     + (1.0 - beta) * result.values.astype(np.float64))
            result = replace(result, values=mixed.astype(np.float32))
        if self.adam is not None:
            result = replace(result, values=self.adam.direction(result.values))
        return result

    def committed(self, sent: GradientResult | None) -> None:
        """The round committed: what we sent carries into the next round."""
        if self.node.config.worker_momentum > 0.0 and sent is not None:
            self.worker_momentum = sent.values
        if self.adam is not None and sent is not None:
            self.adam.adopt()

    def resend(self) -> None:
        """Broadcast our gradient of the round (again: the same payload, with a fresh
        sequence number), if we have one."""
        node = self.node
        g = node.protocol.state.own_gradient
        if g is None:
            return
        frame = node.broadcast(g)
        node.protocol.grads.setdefault(node.round, {}).setdefault(node.id, node.open(frame))

    def _conditions(self) -> NetworkConditions | None:
        """The uplink as last measured, towards the members our gradient goes to."""
        if self.link is None:
            return None
        peers = sum(1 for m in self.node.membership.members if m != self.node.id)
        return NetworkConditions(self.link.bandwidth, self.link.latency, peers)

    def _coder_rng(self) -> np.random.Generator:
        """For randomized encodings (random-k): a pure function of sender, round and model."""
        node = self.node
        return np.random.default_rng([node.id, node.round,
                                      int.from_bytes(node.model_hash[:8], "big")])

    def with_values(self, g: Gradient, values: np.ndarray) -> Gradient:
        """`g` carrying other values, encoded as the run encodes gradients (for behaviours that
        craft a vector: it leaves our error feedback alone)."""
        return self.encoding.pack(g, values, self._coder_rng(), own=False)

    def dense(self, env: Envelope) -> np.ndarray:
        """The vector a gradient envelope stands for, decoded once (memoized on it; in a
        simulation every node shares the envelope). CompressError if it is malformed."""
        key = ("dense", self.encoding.name, self.node.params.size)
        facts = env.facts
        if key not in facts:
            facts[key] = self.encoding.dense(env.message, self.node.params.size)  # type: ignore[arg-type]
        return facts[key]  # type: ignore[no-any-return]
