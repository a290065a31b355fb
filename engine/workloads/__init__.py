"""Workloads: what a node trains. Pluggable by name from the scenario's `workload.kind`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phalanx.engine.plugins import LazyClasses, resolve
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientJob, GradientResult, Workload

# imported when first built: the classifiers and the transformer load torch
WORKLOADS: Mapping[str, type[Workload]] = LazyClasses({
    "digits": "phalanx.engine.workloads.digits:DigitsClassifier",
    "linear": "phalanx.engine.workloads.linear:LinearRegression",
    "mlp": "phalanx.engine.workloads.mlp:MlpClassifier",
    "rlhf": "phalanx.engine.rlhf.workload:RlhfWorkload",
    "transformer": "phalanx.engine.workloads.transformer:TransformerLM",
})


def workload_class(kind: str) -> type[Workload]:
    """The workload called `kind`: a built-in, or a user's (engine/plugins.py: an entry point
    in `phalanx.workloads`, or `module:Class`); ValueError naming the known ones otherwise."""
    return resolve("workloads", kind, WORKLOADS, Workload, "workload")  # type: ignore[return-value]


def make_workload(kind: str, params: dict[str, Any], n_nodes: int, rngs: RngStreams) -> Workload:
    """Build the workload `kind` with its scenario parameters (already validated): the class
    is called as `Class(n_nodes=..., rngs=..., batch=..., **params)`."""
    return workload_class(kind)(n_nodes=n_nodes, rngs=rngs, **params)


__all__ = ["WORKLOADS", "GradientJob", "GradientResult", "Workload", "make_workload",
           "workload_class"]
