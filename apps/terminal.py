"""The command line's two consoles and its one way to fail: a one-line error, exit code 2."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)
out = Console()


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)
