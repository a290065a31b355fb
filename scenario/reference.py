"""The scenario reference, generated from the schema itself (`scenario/schema.py`).

Every field's type, default, allowed values and description come from the pydantic models, and
each `kind` of a union (topology, workload, split, fault) is explained as its own variant; the
fields named from a registry (aggregation rules, pre-aggregation steps, Byzantine behaviours,
compression methods) list the built-in names with their docstrings and parameters. One tree
feeds both renderings: `phalanx validate --explain [FIELD]` (text) and `phalanx validate
--explain --markdown`, which writes docs/scenario.md.
"""

from __future__ import annotations

import difflib
import inspect
import json
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from phalanx.scenario.schema import (
    AggregatorSpec,
    ByzantineSpec,
    CompressionSpec,
    Scenario,
    parse_scenario,
)

DOC_COMMAND = "phalanx validate --explain --markdown > docs/scenario.md"
DISCRIMINATOR = "kind"  # every union of the schema picks its variant by this field
PLUGIN = "plugin"  # the variant name of a union member whose `kind` is free text (a user's class)
WIDTH = 92
SHOWN_QUERY = 60  # an unknown path longer than this is cut in the error line

# A minimal scenario: the reference shows it as written and with every default filled in.
EXAMPLE = """\
name: example
nodes: {count: 4}
workload: {kind: mlp}
training: {rounds: 20, aggregator: median}
byzantine:
  - {nodes: [3], behaviour: sign_flip}
"""


class ExplainError(ValueError):
    """A request the reference cannot answer; `str()` is one line."""


class UnknownField(ExplainError):
    """A path that names no scenario field; `str()` carries a "did you mean" hint."""


@dataclass(frozen=True)
class Entry:
    """One field of the scenario (or one variant of a `kind`, or one built-in of a registry)."""

    path: str  # dotted, as --explain takes it: "links.latency", "faults.crash.nodes"
    title: str  # the key a user writes, or the variant's name
    type: str  # "" for a variant or a registry item
    default: str | None  # as YAML would show it; None when the field is required
    description: str
    note: str = ""  # a section's own docstring, beside the field's description
    allowed: tuple[str, ...] = ()  # the kinds of a union
    children: tuple[Entry, ...] = ()  # sub-fields of a mapping, or a variant's fields
    variants: tuple[Entry, ...] = ()  # one per `kind` of a union
    registry: str | None = None  # names the built-ins a free-text field takes (see REGISTRIES)

    @property
    def items(self) -> tuple[Entry, ...]:
        """The variants, or the registry's built-ins (imported only when asked for)."""
        return self.variants or (registry_entries(self.registry, self.path)
                                 if self.registry else ())

    @property
    def leaf(self) -> bool:
        return not self.children and not self.variants

    def walk(self, registries: bool = True) -> Iterator[Entry]:
        """This entry and everything below it (the registries' built-ins only if asked)."""
        yield self
        for sub in (*self.children, *(self.items if registries else self.variants)):
            yield from sub.walk(registries)


# ---- the registries behind free-text fields ---------------------------------------------------


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    first = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(first.split())


def _aggregators(pre: bool) -> list[tuple[str, str, list[str]]]:
    from phalanx.engine.aggregate.registry import AGGREGATORS, PRE_AGGREGATORS, parameters

    table = PRE_AGGREGATORS if pre else AGGREGATORS
    return [(name, _summary(cls.__doc__), parameters(cls)) for name, cls in table.items()]


def _behaviours() -> list[tuple[str, str, list[str]]]:
    from phalanx.engine.byzantine import BEHAVIOURS
    from phalanx.engine.byzantine.attacks import attack_class

    rows = []
    for name, cls in BEHAVIOURS.items():
        attack = getattr(cls, "attack_name", "")  # a gradient attack: its docstring says it
        doc = attack_class(attack).__doc__ if attack else cls.__doc__
        rows.append((name, _summary(doc), list(cls.params)))
    return rows


def _compressors() -> list[tuple[str, str, list[str]]]:
    from phalanx.engine.compress import COMPRESSORS

    return [(name, _summary(cls.__doc__), list(inspect.signature(cls).parameters))
            for name, cls in sorted(COMPRESSORS.items())]


REGISTRIES: dict[str, Callable[[], list[tuple[str, str, list[str]]]]] = {
    "aggregators": lambda: _aggregators(pre=False),
    "pre-aggregators": lambda: _aggregators(pre=True),
    "behaviours": _behaviours,
    "compressors": _compressors,
}
# (model, field) -> the registry its free text names
REGISTRY_FIELDS: dict[tuple[type[BaseModel], str], str] = {
    (AggregatorSpec, "kind"): "aggregators",
    (AggregatorSpec, "pre"): "pre-aggregators",
    (ByzantineSpec, "behaviour"): "behaviours",
    (CompressionSpec, "method"): "compressors",
}


@cache
def registry_entries(registry: str, path: str) -> tuple[Entry, ...]:
    return tuple(
        Entry(path=f"{path}.{name}", title=name, type="", default=None,
              description=summary + (f" Parameters: {', '.join(params)}." if params else ""))
        for name, summary, params in REGISTRIES[registry]())


# ---- types as a newcomer reads them -----------------------------------------------------------

_BOUNDS = ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<"))


def _number(value: Any) -> str:
    if isinstance(value, int) and value >= 2**16 and (value & (value - 1)) == 0:
        return f"2^{value.bit_length() - 1}"  # 2^63, not 9223372036854775808
    return str(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bounds(metadata: list[Any]) -> list[str]:
    """Readable constraints of annotated-types metadata (FieldInfo objects hold their own)."""
    out: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _bounds(item.metadata)
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {_number(getattr(item, attr))}")
        if isinstance(item, at.MinLen):
            out.append(f"at least {_count(item.min_length, 'item')}")
        if isinstance(item, at.MaxLen):
            out.append(f"at most {_count(item.max_length, 'item')}")
    return out


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _strip(tp: Any) -> Any:
    """The type inside Annotated wrappers (Tag, Field, Discriminator)."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _models(tp: Any) -> list[type[BaseModel]]:
    """The models a field holds, in a list or not, null or not: one for a section, one per
    variant for a union; [] for anything else."""
    tp = _strip(tp)
    if get_origin(tp) is list:
        return _models(get_args(tp)[0])
    if _is_union(tp):
        return [m for a in get_args(tp) for m in _models(a)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def type_text(tp: Any, metadata: tuple[Any, ...] = ()) -> str:
    """`tp` in words: "number ≥ 0 or null", "list of integer ≥ 0", "one of: a, b"."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        return type_text(base, (*metadata, *meta))
    bounds = _bounds(list(metadata))
    if _is_union(tp):
        if len(_models(tp)) > 1:
            text = f"mapping with a `{DISCRIMINATOR}`"
        else:
            text = " or ".join(type_text(a) for a in get_args(tp))
    elif origin is Literal:
        text = "one of: " + ", ".join(str(v) for v in get_args(tp))
    elif origin is list:
        (item,) = get_args(tp)
        text = ("list of values from: " + ", ".join(_literals(item))
                if get_origin(_strip(item)) is Literal else f"list of {type_text(item)}")
    elif origin is dict:
        key, value = get_args(tp)
        text = f"mapping of {type_text(key)} to {type_text(value)}"
    else:
        text = {int: "integer", float: "number", str: "text", bool: "true or false",
                type(None): "null", Any: "anything"}.get(tp, "")
        if not text and isinstance(tp, type) and issubclass(tp, BaseModel):
            text = "mapping"
        text = text or getattr(tp, "__name__", str(tp))
    joiner = "; " if origin is list else " "  # "list of integer ≥ 0; at least 1 item"
    return f"{text}{joiner}{', '.join(bounds)}" if bounds else text


def _literals(tp: Any) -> tuple[str, ...]:
    """The values of a Literal, also inside Optional, list or Annotated."""
    tp = _strip(tp)
    if get_origin(tp) is Literal:
        return tuple(str(v) for v in get_args(tp))
    if _is_union(tp) or get_origin(tp) is list:
        return tuple(v for a in get_args(tp) for v in _literals(a))
    return ()


def _default(info: FieldInfo) -> str | None:
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        kind = getattr(value, DISCRIMINATOR, None)
        return f"{{{DISCRIMINATOR}: {kind}}}" if kind else "{}"  # {}: every sub-field's default
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)


# ---- the tree ----------------------------------------------------------------------------------


def _variant_name(model: type[BaseModel]) -> str:
    values = _literals(model.model_fields[DISCRIMINATOR].annotation)
    return values[0] if values else PLUGIN


def _allowed_name(variant: str) -> str:
    return "another name (a plugin)" if variant == PLUGIN else variant


def _fields(model: type[BaseModel], path: str, skip: str | None = None) -> tuple[Entry, ...]:
    return tuple(_field(model, name, info, f"{path}.{name}" if path else name)
                 for name, info in model.model_fields.items() if name != skip)


def _field(owner: type[BaseModel], name: str, info: FieldInfo, path: str) -> Entry:
    tp = info.annotation
    models = _models(tp)
    children: tuple[Entry, ...] = ()
    variants: tuple[Entry, ...] = ()
    if len(models) == 1:
        children = _fields(models[0], path)
    elif models:
        variants = tuple(_variant(m, path) for m in models)
    return Entry(path=path, title=name, type=type_text(tp, tuple(info.metadata)),
                 default=_default(info), description=info.description or "",
                 note=_summary(models[0].__doc__) if len(models) == 1 else "",
                 allowed=tuple(_allowed_name(_variant_name(m)) for m in models) if variants
                 else (),
                 children=children, variants=variants,
                 registry=REGISTRY_FIELDS.get((owner, name)))


def _variant(model: type[BaseModel], path: str) -> Entry:
    name = _variant_name(model)
    # a literal `kind` is the variant's name, said in its title; a free one is a field to fill
    skip = DISCRIMINATOR if name != PLUGIN else None
    title = (f"{DISCRIMINATOR}: {name}" if name != PLUGIN
             else f"{DISCRIMINATOR}: any other name (your own class)")
    return Entry(path=f"{path}.{name}", title=title, type="", default=None,
                 description=_summary(model.__doc__), children=_fields(model, f"{path}.{name}",
                                                                       skip))


@cache
def reference() -> Entry:
    """The whole scenario format, from the schema."""
    return Entry(path="", title="scenario", type="mapping", default=None,
                 description=_summary(Scenario.__doc__), children=_fields(Scenario, ""))


def all_paths() -> list[str]:
    return [e.path for e in reference().walk() if e.path]


def _parts(path: str) -> list[str]:
    """A dotted path's keys; list indices (`faults.0.kind`, as error lines name them) are
    skipped."""
    return [p for p in path.strip().split(".") if p and not p.isdigit()]


def _deepest(parts: list[str]) -> tuple[Entry, int]:
    """The entry the longest known prefix of `parts` names, and how many parts it took."""
    entry = reference()
    for depth, part in enumerate(parts):
        nxt = next((e for e in (*entry.children, *entry.items)
                    if e.path.rsplit(".", 1)[-1] == part), None)
        if nxt is None:
            return entry, depth
        entry = nxt
    return entry, len(parts)


def find(path: str) -> Entry:
    """The entry at a dotted path; UnknownField with a "did you mean" hint otherwise."""
    parts = _parts(path)
    entry, depth = _deepest(parts)
    if depth < len(parts):
        raise UnknownField(_unknown(path, entry))
    return entry


def _unknown(path: str, near: Entry) -> str:
    shown = path if len(path) <= SHOWN_QUERY else path[:SHOWN_QUERY] + "…"
    shown = shown.replace("\n", "\\n").replace("\r", "\\r")
    # the registries' built-ins are suggested only next to the known part of the path: loading
    # every registry imports torch, seconds for a typo
    paths = [e.path for e in reference().walk(registries=False) if e.path] + [
        item.path for e in (near, *near.children) if e.registry for item in e.items]
    wanted = ".".join(_parts(path))
    by_suffix = [p for p in paths if p.endswith("." + wanted)]
    close = by_suffix or difflib.get_close_matches(wanted, paths, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"no scenario field {shown!r}; {hint}(`phalanx validate --explain` lists the "
            f"sections)")


# ---- text for the terminal ---------------------------------------------------------------------


def _facts(entry: Entry) -> str:
    """"type; default X" (or "; required")."""
    if not entry.type:
        return ""
    default = "required" if entry.default is None else f"default {entry.default}"
    return f"{entry.type}; {default}"


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent) or []


def _tree_lines(entry: Entry, depth: int) -> Iterator[str]:
    for sub in (*entry.children, *entry.variants):
        facts = _facts(sub)
        yield "  " * depth + sub.title + (f"  ({facts})" if facts else "")
        yield from _tree_lines(sub, depth + 1)


def explain(path: str | None = None) -> str:
    """The tree of sections (no path), or one field in full: type, default, allowed values,
    description, its sub-fields and its variants."""
    if not path:
        head = ("The scenario file: every section and field with its type and default. "
                "`phalanx validate --explain FIELD` (e.g. training.aggregator) explains one; "
                "docs/scenario.md is the full reference.")
        return "\n".join([*_wrap(head, ""), "", *_tree_lines(reference(), 0)])
    entry = find(path)
    is_variant = entry.title.startswith(f"{DISCRIMINATOR}: ")
    lines = [entry.path + (f"  ({entry.title})" if is_variant else "")]
    if entry.type:
        lines.append(f"  type: {entry.type}")
        lines.append("  required" if entry.default is None else f"  default: {entry.default}")
    if entry.allowed:
        lines.append(f"  kinds: {', '.join(entry.allowed)}")
    lines += _wrap(entry.description, "  ")
    if entry.note:
        lines += ["", *_wrap(entry.note, "  ")]
    if entry.children:
        lines += ["", "  fields:"]
        for sub in entry.children:
            lines.append(f"    {sub.title}  ({_facts(sub)})")
            lines += _wrap(sub.description, "      ")
            if sub.variants:
                lines += _wrap(f"{DISCRIMINATOR}: " + ", ".join(sub.allowed), "      ")
            for item in sub.items if sub.registry else ():
                lines += _wrap(f"{item.title}: {item.description}", "        ")
    if entry.items:
        lines += ["", "  variants:" if entry.variants else "  built-in:"]
        for item in entry.items:
            fields = ", ".join(f.title for f in item.children)
            lines.append(f"    {item.title}" + (f"  (fields: {fields})" if fields else ""))
            lines += _wrap(item.description, "      ")
    return "\n".join(lines)


# ---- Markdown for docs/scenario.md -------------------------------------------------------------


def _md_facts(entry: Entry) -> str:
    facts = _facts(entry)
    allowed = f"; kinds: {', '.join(entry.allowed)}" if entry.allowed else ""
    return f"*{facts}{allowed}*" if facts else ""


def _md_bullet(entry: Entry, indent: str = "") -> list[str]:
    lines = [f"{indent}- **`{entry.title}`** ({_md_facts(entry)}): {entry.description}"
             if entry.type else f"{indent}- **`{entry.title}`**: {entry.description}"]
    for item in entry.items:  # a registry's built-ins under the field that names them
        lines += _md_bullet(item, indent + "  ")
    return lines


def _variant_heading(entry: Entry) -> str:
    name = entry.path.rsplit(".", 1)[-1]
    return f"kind `{name}`" if name != PLUGIN else "of any other kind (a plugin)"


def _md_section(entry: Entry, level: int) -> list[str]:
    heading = (f"`{entry.path}`" if entry.type else
               f"`{entry.path.rsplit('.', 1)[0]}` {_variant_heading(entry)}")
    lines = ["#" * min(level, 6) + " " + heading, ""]
    facts = _md_facts(entry)
    lines += [entry.description + (f" {facts}" if facts else ""), ""]
    if entry.note:
        lines += [entry.note, ""]
    leaves = [e for e in entry.children if e.leaf]
    for sub in leaves:
        lines += _md_bullet(sub)
    if leaves:
        lines.append("")
    if not entry.children and not entry.variants:
        lines += ["(no fields besides `kind`)", ""]
    for sub in (*(e for e in entry.children if not e.leaf), *entry.variants):
        lines += _md_section(sub, level + 1)
    return lines


def markdown() -> str:
    """The full reference: docs/scenario.md."""
    example = parse_scenario(yaml.safe_load(EXAMPLE), "example")
    root = reference()
    lines = [
        "# Scenario reference", "",
        f"<!-- Generated from scenario/schema.py by `{DOC_COMMAND}`; do not edit by hand: "
        "tests/test_scenario_reference.py fails when it is out of date. -->", "",
        f"Generated from the schema by `{DOC_COMMAND}`. In a terminal, "
        "`phalanx validate --explain` prints the tree of sections and "
        "`phalanx validate --explain FIELD` (e.g. `training.aggregator`) one field in full.", "",
        root.description, "",
        "A field marked *required* must be given; every other field may be left out and takes "
        "its default. A `kind` picks a variant, and each variant has its own fields.", "",
        "## Example", "",
        "A minimal scenario (four nodes, one of them flipping its gradient's sign):", "",
        "```yaml", EXAMPLE.rstrip(), "```", "",
        "The same scenario with every default filled in, as `phalanx validate FILE` prints it:",
        "", "```yaml", example.resolved_yaml().rstrip(), "```", "",
        "## Top-level fields", "",
    ]
    for sub in root.children:
        lines += _md_bullet(sub) if sub.leaf else [
            f"- **`{sub.title}`** ({_md_facts(sub)}): {sub.description} See below."]
    lines.append("")
    for sub in root.children:
        if not sub.leaf:
            lines += _md_section(sub, 2)
    return "\n".join(lines).rstrip() + "\n"


def render(path: str | None, as_markdown: bool = False) -> str:
    """What `phalanx validate --explain [FIELD] [--markdown]` prints."""
    if as_markdown and path:
        raise ExplainError("--markdown renders the whole reference (docs/scenario.md); leave "
                           "out the field, or drop --markdown to explain one")
    return markdown() if as_markdown else explain(path)


__all__ = ["DOC_COMMAND", "Entry", "ExplainError", "UnknownField", "all_paths", "explain", "find",
           "markdown", "reference", "render", "type_text"]
