"""Workloads: what a node trains. Pluggable by name from the scenario's `workload.kind`."""

from __future__ import annotations

from typing import Any

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientJob, GradientResult, Workload
from phalanx.engine.workloads.linear import LinearRegression
from phalanx.engine.workloads.mlp import MlpClassifier
from phalanx.engine.workloads.transformer import TransformerLM

WORKLOADS: dict[str, type[Workload]] = {
    "linear": LinearRegression,
    "mlp": MlpClassifier,
    "transformer": TransformerLM,
}


def make_workload(kind: str, params: dict[str, Any], n_nodes: int, rngs: RngStreams) -> Workload:
    """Build the workload `kind` with its scenario parameters (already validated)."""
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r}; known: {', '.join(sorted(WORKLOADS))}")
    return WORKLOADS[kind](n_nodes=n_nodes, rngs=rngs, **params)


__all__ = ["WORKLOADS", "GradientJob", "GradientResult", "Workload", "make_workload"]
