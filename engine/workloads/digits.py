"""A real data set: the 8×8 handwritten digits of UCI (1797 images, 10 classes, 64 pixels with
values 0..16), as bundled inside the scikit-learn wheel (sklearn/datasets/data/digits.csv.gz, the
data of `sklearn.datasets.load_digits`). Nothing is downloaded: the file is located with
`importlib.util.find_spec` and read with numpy, without importing scikit-learn (0.05 s instead
of about 2 s here).

Pixels are scaled to [0, 1] (divided by 16). A fixed, stratified 20% of each class is held out
(359 images) by a permutation from a constant seed, not the run's: every node, run and seed
evaluates on the same images, so accuracies compare across scenarios and seeds. The other 1438
images (or a seeded subset of n × `samples_per_node` of them) are shared out among the nodes
by the scenario's split (engine/workloads/splits.py), drawing from the run's "pool" and "split"
streams. The model is the one-hidden-layer classifier the mlp workload uses.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.classifier import HiddenLayerClassifier
from phalanx.engine.workloads.splits import Split, make_split

FEATURES, CLASSES = 64, 10
HOLDOUT_FRACTION = 0.2  # of each class
HOLDOUT_SEED = 0  # the held-out images are the same whatever the run's seed


@cache
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as float32 pixels in [0, 1] (rows of 64) and their int64 labels."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the digits workload reads the data set bundled with scikit-learn: "
                         "pip install 'scikit-learn>=1.3'")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return (table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64)


def holdout_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) sorted indices: a stratified HOLDOUT_FRACTION of each class held out,
    picked by a permutation from RngStreams(HOLDOUT_SEED)."""
    rng = RngStreams(HOLDOUT_SEED).stream("digits", "holdout")
    held = [rng.permutation(np.flatnonzero(labels == c))[: round(HOLDOUT_FRACTION
                                                                   * np.sum(labels == c))]
            for c in range(CLASSES)]
    test = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), test), test


class DigitsClassifier(HiddenLayerClassifier):
    name = "digits"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, hidden: int = 64,
                 samples_per_node: int | None = None, batch: int = 32,
                 split: Split | Mapping[str, Any] | str | None = None) -> None:
        super().__init__(rngs=rngs, features=FEATURES, classes=CLASSES, hidden=hidden,
                         batch=batch)
        self.split = make_split(split)
        x, y = load_digits()
        train, test = holdout_indices(y)
        self.eval_x, self.eval_y = torch.from_numpy(x[test]), torch.from_numpy(y[test])
        if samples_per_node is not None:
            if n_nodes * samples_per_node > len(train):
                raise ValueError(f"digits: {n_nodes} nodes × samples_per_node "
                                 f"{samples_per_node} exceeds the {len(train)} training images "
                                 f"(leave samples_per_node out to share them all)")
            pick = rngs.stream("pool").permutation(len(train))[: n_nodes * samples_per_node]
            train = train[np.sort(pick)]
        if len(train) < n_nodes:
            raise ValueError(f"digits: {n_nodes} nodes but only {len(train)} training images")
        parts = self.split(y[train], n_nodes, rngs.stream("split"))
        self._shards = [(torch.from_numpy(x[train[idx]]), torch.from_numpy(y[train[idx]]))
                        for idx in parts]

    def _shard(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._shards[node]
