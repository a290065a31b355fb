"""Console tables that never cut a number.

Left to itself, rich squeezes a table into the terminal by ending cells with "…" (at 80
columns a bench table printed "265,5…" and the summary cut the final model hash). Here the
column widths are chosen for the width at hand: a number is never narrowed below its length,
other text wraps at spaces and folds words too long for their column (a hash goes on two lines,
whole). A table too wide with its rules is printed without them, and when even that does not
fit, each row is printed as its own `header: value` lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# 12, -3.5, 265,500, 1.2e-05, +0.6%, 10.0x
NUMBER = re.compile(r"[-+]?(\d[\d,]*)?\.?\d+(e[-+]?\d+)?[%x×]?")
TEXT_MIN = 12  # a text column may shrink to this (or its longest word, if shorter)


class WholeNumbers:
    """A rich table, laid out so that no number is cut; print it as the table itself."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._box, self._pad_edge = table.box, table.pad_edge
        for column in table.columns:
            column.overflow = "fold"  # a word wider than its column folds, never ends in "…"

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table)

    def __rich_console__(self, console: Console,
                         options: ConsoleOptions) -> Iterator[RenderableType]:
        table, n = self.table, len(self.table.columns)
        cells = [[_plain(c) for c in column.cells] for column in table.columns]
        headers = [_plain(column.header) for column in table.columns]
        full = [max([*map(len, col), len(h), 1]) for h, col in zip(headers, cells, strict=True)]
        # narrowing in steps: headers wrap at their spaces, then long text wraps (each header
        # word whole), then only the numbers stay whole
        steps = [[max([*map(len, col), *map(len, h.split()), 1])
                  for h, col in zip(headers, cells, strict=True)],
                 [_least_width([h, *col]) for h, col in zip(headers, cells, strict=True)],
                 [_least_width(col) for col in cells]]
        # what is not cells: boxed, a space each side of a cell and a rule between cells (rich's
        # defaults); compact, no rules and two spaces between cells
        boxed, compact = (self._box, self._pad_edge, 3 * n + 1), (None, False, 2 * n - 2)
        for (box, pad_edge, overhead), depth in ((boxed, 2), (compact, 2), (boxed, 3),
                                                 (compact, 3)):
            room = options.max_width - overhead
            if sum(steps[depth - 1]) <= room:
                widths = full
                for floor in steps[:depth]:
                    widths = _shrink(widths, floor, room)
                table.box, table.pad_edge = box, pad_edge
                for column, width in zip(table.columns, widths, strict=True):
                    column.width = width
                yield table
                return
        yield from _records(table.title, headers, cells)


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


def _least_width(cells: list[str]) -> int:
    """How narrow a column may get: its longest number, and its longest word up to TEXT_MIN."""
    numbers = [len(c) for c in cells if NUMBER.fullmatch(c.strip())]
    words = [len(w) for c in cells if not NUMBER.fullmatch(c.strip()) for w in c.split()]
    return max([*numbers, min(max(words, default=1), TEXT_MIN), 1])


def _shrink(widths: list[int], floor: list[int], room: int) -> list[int]:
    """Narrow the widest columns first, none below its floor, until the table fits or no
    column can give more."""
    widths = list(widths)
    while sum(widths) > room:
        slack = [k for k, (w, f) in enumerate(zip(widths, floor, strict=True)) if w > f]
        if not slack:
            break
        widths[max(slack, key=widths.__getitem__)] -= 1
    return widths


def _records(title: object, headers: list[str], cells: list[list[str]]) -> Iterator[Text]:
    """Too narrow even for the numbers: one block of `header: value` lines per row."""
    if title:
        yield Text(_plain(title), style="italic")
    for row in zip(*cells, strict=True):
        for header, value in zip(headers, row, strict=True):
            yield Text.assemble((f"{header}: ", "bold"), value)
        yield Text("")
