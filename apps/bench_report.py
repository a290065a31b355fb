"""What every `phalanx bench` writes: a JSON report stamped with the date and machine, and a
table of its rows on the console."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from phalanx.apps.tables import WholeNumbers


def stamp() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "python": platform.python_version()}}


def save_report(report: dict[str, Any], out_file: Path) -> None:
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(report, indent=2) + "\n")


def results_table(title: str, columns: tuple[str, ...],
                  rows: list[tuple[str, ...]]) -> WholeNumbers:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return WholeNumbers(table)
