"""The help screens' look: `phalanx run [OPTIONS] SCENARIO`, not typer's `{scenario}`; no
`<bool>` beside a flag (a flag takes no value); docstrings wrapped to the terminal, not at
their source's line breaks. `Typer` here is typer's, with these commands and groups as its
defaults."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# (typer >= 0.24 vendors click: its parameters are typer's own classes, not click's)


def _plain_params(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # shown as the type column: empty for a flag
    return params


def _usage(command: TyperCommand, ctx: typer.Context) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = (param.metavar or param.name or "").upper()
            pieces.append(name if param.required else f"[{name}]")
        else:
            pieces.extend(param.get_usage_pieces(ctx))
    return pieces


def _reflowed(text: str | None) -> str | None:
    """A docstring's paragraphs without its hard line breaks: the help screen wraps them to the
    terminal's width (kept, they break lines mid-sentence on a narrow one)."""
    if text is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


class Command(TyperCommand):
    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, help=_reflowed(help), **kwargs)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        return _usage(self, ctx)


class Group(TyperGroup):
    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_params(super().get_params(ctx))


class Typer(typer.Typer):
    """typer.Typer whose groups and commands render as above."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
