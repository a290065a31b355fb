"""One committed round as a row of `rounds.parquet`: built by the simulator's runner and by
a real node's host (which must not load polars and the results code to build it)."""

from __future__ import annotations

from typing import Any

from phalanx.engine.events import RoundCommitted


def commit_row(metric: RoundCommitted, time: float, order: int, bytes_sent: int,
               byzantine: bool) -> dict[str, Any]:
    return {"round": metric.round, "order": order, "node": metric.node, "time": time,
            "view": metric.view,
            "contributors": metric.contributors, "train_loss": metric.train_loss,
            "model_hash": metric.model_hash.hex(), "via_sync": metric.via_sync,
            "bytes_sent": bytes_sent, "byzantine": byzantine, "ratio": metric.ratio,
            **{f"metric_{k}": float(v) for k, v in sorted(metric.metrics.items())}}
