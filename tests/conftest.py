"""Test-suite setup: make the shared harness modules in this folder importable.

pytest runs with `--import-mode=importlib` (see pyproject), which leaves `sys.path` alone, so
`from nodekit import ...` in a test module needs this folder put on the path by hand. The
harness's asserts get pytest's rewriting, like the test modules' own.
"""

from __future__ import annotations

import os

from phalanx.apps.numerics import pin, requested_mode

# first: the suite computes on the simulator's pinned kernel paths (apps/numerics.py), fixed
# before torch or numpy load, so in-process runs replay the CLI's hashes
pin(requested_mode(os.environ, "portable"))

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

# Without a GPU, the Triton kernels are tested through Triton's interpreter on the CPU. Triton
# reads this when it is first imported, so it is set here, before any test module (or the
# engine, through phalanx.kernels) can import it.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

pytest.register_assert_rewrite("nodekit")
pytest.register_assert_rewrite("tcpkit")
pytest.register_assert_rewrite("webkit")


# ---- the Byzantine matrix's summary table -------------------------------------------------
# Each cell test (tests/test_byzantine_matrix.py, spread over xdist workers) drops its row in a
# folder of its own session (so concurrent pytest runs do not mix); the controlling process
# gathers the rows into one table when the session ends.

MATRIX_OUT = Path(__file__).resolve().parent.parent / "runs" / "byzantine-matrix"


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


class _HandRowsToWorkers:
    """xdist's hook, registered only when xdist is there (pytest refuses unknown hooks)."""

    @staticmethod
    def pytest_configure_node(node: Any) -> None:
        node.workerinput["matrix_rows"] = str(node.config.stash[_ROWS])


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        config.stash[_ROWS] = MATRIX_OUT / f"cells-{os.getpid()}"
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_HandRowsToWorkers())


@pytest.fixture
def matrix_rows(request: pytest.FixtureRequest) -> Path:
    config = request.config
    if _is_controller(config):
        return config.stash[_ROWS]
    return Path(config.workerinput["matrix_rows"])  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _is_controller(session.config):
        return
    rows_dir = session.config.stash.get(_ROWS, None)
    if rows_dir is None or not rows_dir.exists():
        return
    from phalanx.apps.matrix import table, write_table

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    shutil.rmtree(rows_dir, ignore_errors=True)
    if rows:
        write_table(table(rows), MATRIX_OUT, f"Byzantine matrix ({len(rows)} cells, pytest)")


_ROWS = pytest.StashKey[Path]()


# ---- longest tests first ---------------------------------------------------------------------
# pytest-xdist's load scheduling hands each worker a first chunk of consecutive tests
# (about a quarter of its share) and then feeds whoever is free. A test of several minutes that
# lands at the end of the order runs alone while the other workers sit idle, so the suite's wall
# time becomes its own. These tests (the slowest measured with `--durations`) are placed at the
# starts of the workers' first chunks, the longest first: the longest-processing-time rule.
LONGEST = (
    "test_learning.py::test_shakespeare_reaches_nanogpts_published_cpu_loss",
    "test_learning.py::test_synthetic_corpus_is_learned_to_within_a_tenth_of_a_nat_of_its_entropy_rate",
    "test_membership_real.py::test_a_new_machine_is_added_to_a_running_cluster_and_joins",
    "test_transformer_workload.py::test_transformer_trains_through_consensus_despite_sign_flippers",
    "test_adaptive.py::test_real_nodes_size_their_gradients_from_what_tcp_measured",
)

# Tests that read what others wrote in this session, when it is there (test_robustness.py
# reads the matrix cells' rows instead of running those cells again): placed last.
LAST = ("test_robustness.py::test_robust_rules_hold_and_attacks_bite",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [it for it in items if _short_id(it) in LAST]
    items[:] = [it for it in items if _short_id(it) not in LAST] + last
    rank = {name: i for i, name in enumerate(LONGEST)}
    slow = sorted((it for it in items if _short_id(it) in rank),
                  key=lambda it: rank[_short_id(it)])
    if not slow:
        return
    rest = [it for it in items if _short_id(it) not in rank]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    chunk = max(min(len(items) // workers // 4, len(items)), 2)  # xdist's first chunk per worker
    order: list[pytest.Item | None] = [None] * len(items)
    for i, item in enumerate(slow):  # worker i % workers, position i // workers in its chunk
        spot = (i % workers) * chunk + i // workers
        while spot < len(order) and order[spot] is not None:
            spot += 1
        if spot < len(order):
            order[spot] = item
        else:
            rest.insert(0, item)
    fill = iter(rest)
    items[:] = [it if it is not None else next(fill) for it in order]


def _short_id(item: pytest.Item) -> str:
    return item.nodeid.split("/")[-1]
