"""Validation errors as a user reads them: every mistake of a document at once, one line each,
`<field path>: <problem>`; an unknown key is named with the field it most likely stands for,
and a YAML true/false where a number belongs is refused rather than read as 1 or 0 (`Flag`)."""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from phalanx.scenario.errors import InputsRefused, ScenarioError, ScenarioRefused

__all__ = ["Flag", "describe_error", "explain_errors", "flagged", "invalid"]


class Flag:
    """A YAML true/false given where a number (or a name) is expected."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


def flagged(value: Any, annotation: Any) -> Any:
    """`value` with the bools that `annotation` does not take (the value, or the items of a
    list or mapping of plain values) made `Flag`s; a nested model checks its own."""
    if _mentions(annotation, lambda t: t is bool or t is Any):
        return value
    if isinstance(value, bool):
        return Flag(value)
    if _mentions(annotation, lambda t: isinstance(t, type) and issubclass(t, BaseModel)):
        return value
    if isinstance(value, list):
        return [Flag(v) if isinstance(v, bool) else v for v in value]
    if isinstance(value, dict):
        return {k: Flag(v) if isinstance(v, bool) else v for k, v in value.items()}
    return value


def _mentions(annotation: Any, test: Callable[[Any], bool]) -> bool:
    return test(annotation) or any(_mentions(a, test) for a in get_args(annotation))


_UNION_MEMBERS = frozenset({"float", "int", "str", "bool"})  # how pydantic names them in a path


def describe_error(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    msg = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, Flag):
        loc = ".".join(str(p) for p in error["loc"] if p not in _UNION_MEMBERS)
        if error["type"].startswith(("int", "float")):
            return f"{loc}: expected a number, got {value!r}"
    if error["type"] == "missing":
        return f"{loc}: required, and missing"
    if error["type"] == "union_tag_invalid":  # a `kind` no variant has
        ctx = error.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        tag, key = str(ctx.get("tag", "")), ctx.get("discriminator", "").strip("'")
        guess = _guess(tag, tags)
        hint = f"did you mean {guess!r}" if guess is not None else f"one of {', '.join(tags)}"
        return f"{loc}.{key}: unknown {key} {_short(tag, 40)}; {hint}"
    shown = "" if isinstance(value, dict | list) else f" (got {_short(value)})"
    if error["type"] == "literal_error" and isinstance(value, str):  # a misspelt choice
        expected = [v.strip(" '") for v in str(error.get("ctx", {}).get("expected", ""))
                    .replace(" or ", ", ").split(",")]
        guess = _guess(value, expected)
        shown += f"; did you mean {guess!r}?" if guess is not None else ""
    return f"{loc}: {msg}{shown}" if loc else f"{msg}"


def _short(value: Any, most: int = 80) -> str:
    """`repr(value)`, cut: an error line never echoes a huge value back."""
    text = repr(value)
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


# an unknown key that is another word for a field (the first that the place allows): the CLI
# says `--attack` where the schema says `behaviour`, and a whole scenario's attackers `byzantine`
SYNONYMS = {"attack": ("behaviour", "byzantine"), "attacks": ("behaviour", "byzantine"),
            "behavior": ("behaviour",), "rule": ("aggregator",), "n": ("count",)}


def invalid(err: ValidationError, source: str, root: type[BaseModel]) -> ScenarioError:
    """The error to raise for a document of `root` that failed validation: one line per
    mistake, each `<source>: <field path>: <problem>`."""
    errors = err.errors()
    lines = dict.fromkeys(f"{source}: {line}" for line in explain_errors(errors, root))
    refused = any(isinstance(e.get("ctx", {}).get("error"), InputsRefused) for e in errors)
    return (ScenarioRefused if refused else ScenarioError)(*lines)


def explain_errors(errors: list[Any], root: type[BaseModel]) -> list[str]:
    """One line per error, in the file's order; an unknown key gets a "did you mean" hint, and
    a required field that the hint names is not reported missing as well."""
    hints = {tuple(e["loc"]): _unknown_key(tuple(e["loc"]), root) for e in errors
             if e["type"] == "extra_forbidden"}
    meant = {(*loc[:-1], guess) for loc, (_, guess) in hints.items() if guess is not None}
    lines: list[str] = []
    flagged: set[str] = set()
    for error in errors:
        loc = tuple(error["loc"])
        if loc in hints:
            lines.append(hints[loc][0])
        elif error["type"] == "missing" and loc in meant:
            continue
        else:
            line = describe_error(error)
            path = line.partition(":")[0]
            if isinstance(error.get("input"), Flag) and path in flagged:
                continue  # a union refuses it once per member
            flagged.add(path)
            lines.append(line)
    return lines


def _unknown_key(loc: tuple[Any, ...], root: type[BaseModel]) -> tuple[str, str | None]:
    """The line for an unknown key at `loc`, and the field it most likely stands for."""
    allowed = _fields_at(loc[:-1], root)
    guess = _guess(str(loc[-1]), allowed)
    hint = (f"; did you mean {guess!r}?" if guess is not None else
            f"; allowed: {', '.join(allowed)}" if allowed else "")
    return f"{'.'.join(str(p) for p in loc)}: unknown field{hint}", guess


def _guess(key: str, allowed: list[str]) -> str | None:
    synonym = next((s for s in SYNONYMS.get(key.lower(), ()) if s in allowed), None)
    if synonym is not None:
        return synonym
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def _fields_at(path: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The field names of the model at `path` (a pydantic error's location) in `root`, []
    if unknown."""
    annotation: Any = root
    parts = list(path)
    while True:
        annotation = _unwrapped(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not parts:
                return list(annotation.model_fields)
            field = annotation.model_fields.get(str(parts.pop(0)))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict) and parts:
            parts.pop(0)  # an index or a key
            annotation = get_args(annotation)[-1]
        elif get_origin(annotation) in (Union, types.UnionType):
            models = [m for m in map(_unwrapped, get_args(annotation)) if m is not type(None)]
            if len(models) == 1:
                annotation = models[0]
            elif parts:  # a tagged union: the path names the member by its kind
                tag = parts.pop(0)
                annotation = next((m for m in models if _kind_of(m) == tag), None)
            else:
                return []
        else:
            return []


def _unwrapped(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _kind_of(model: Any) -> Any:
    field = getattr(model, "model_fields", {}).get("kind")
    kinds = get_args(field.annotation) if field is not None else ()
    return kinds[0] if len(kinds) == 1 else None
