"""The command line's two consoles and its one way to fail: a one-line error, exit code 2."""

from __future__ import annotations

import typer
from rich.console import Console

# emoji=False: rich would turn ":ab:" in a fingerprint or a user's text into an emoji
err = Console(stderr=True, emoji=False)
out = Console(emoji=False)


def fail(message: str) -> typer.Exit:
    """Print `message` (one error per line, e.g. every mistake of a scenario) and return the
    exit to raise."""
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(2)
