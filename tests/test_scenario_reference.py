"""The scenario reference: every field of every scenario model is described, docs/scenario.md
is what `phalanx validate --explain --markdown` prints today, and `--explain FIELD` answers for
every field and variant (or names the field meant, in one line, with exit code 2)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from test_cli import cli, invoke, one_error_line

import phalanx
from phalanx.engine.aggregate.registry import AGGREGATORS, PRE_AGGREGATORS
from phalanx.engine.byzantine import BEHAVIOURS
from phalanx.engine.compress import COMPRESSORS
from phalanx.scenario.reference import render
from phalanx.scenario.schema import Scenario

DOC = Path(phalanx.__file__).resolve().parent / "docs" / "scenario.md"


def models_in(annotation: object) -> list[type[BaseModel]]:
    """Every model a field can hold: inside lists, dicts, Optional, unions and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return models_in(get_args(annotation)[0])
    if get_origin(annotation) in (list, dict, Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in models_in(arg)]
    return []


def all_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.append(model)
            todo += [m for f in model.model_fields.values() for m in models_in(f.annotation)]
    return seen


def undescribed(root: type[BaseModel]) -> list[str]:
    """`Model.field` for each field without a description, `Model` for a model without a
    docstring (pydantic gives a bare model none)."""
    missing = []
    for model in all_models(root):
        if not (model.__doc__ or "").strip():
            missing.append(model.__name__)
        missing += [f"{model.__name__}.{name}" for name, info in model.model_fields.items()
                    if not (info.description or "").strip()]
    return missing


# (path as --explain takes it, description) for every field, variants included
def described_paths(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append((path, info.description or ""))
        inner = models_in(info.annotation)
        if len(inner) == 1:
            out += described_paths(inner[0], path + ".")
        for variant in inner if len(inner) > 1 else []:
            kind = get_args(variant.model_fields["kind"].annotation)
            tag = kind[0] if kind else "plugin"
            out += [(p, d) for p, d in described_paths(variant, f"{path}.{tag}.")
                    if kind == () or not p.endswith(".kind")]
    return out


def test_every_field_of_every_model_has_a_description() -> None:
    models = all_models(Scenario)
    names = {m.__name__ for m in models}
    # the walk reaches the union variants (faults, topologies, workloads, splits), not just
    # the sections, so a new variant without descriptions cannot slip through
    assert {"CrashFault", "JoinRequest", "GeoClustersTopology", "DirichletSplit",
            "TransformerWorkload", "UserWorkload", "AdaptiveSpec", "AggregatorSpec"} <= names
    assert len(models) >= 30
    assert undescribed(Scenario) == []


def test_a_field_without_a_description_is_reported() -> None:
    class Inner(BaseModel):
        """Documented."""

        bare: int = 0

    class Outer(BaseModel):
        """Documented too."""

        inner: list[Inner | None] = []

    assert undescribed(Outer) == ["Outer.inner", "Inner.bare"]


def test_docs_scenario_md_is_what_the_command_prints() -> None:
    result = invoke("validate", "--explain", "--markdown")
    assert result.exit_code == 0, result.output
    assert DOC.exists(), "docs/scenario.md is missing"
    assert DOC.read_text() == result.stdout, (
        "docs/scenario.md is out of date with scenario/schema.py: run "
        "`phalanx validate --explain --markdown > docs/scenario.md`")


def test_docs_scenario_md_covers_every_field_and_built_in() -> None:
    text = DOC.read_text()
    for path, description in described_paths(Scenario):
        assert description in text, f"{path}: description missing from docs/scenario.md"
    for name in (*AGGREGATORS, *PRE_AGGREGATORS, *BEHAVIOURS, *COMPRESSORS):
        assert f"**`{name}`**" in text, name
    # the header names the command that writes it
    assert "phalanx validate --explain --markdown > docs/scenario.md" in text.splitlines()[2]


def test_explain_answers_for_every_field_and_variant() -> None:
    # what `validate --explain PATH` prints (the command's own wiring is tested below), for
    # all ~200 paths without a CLI round trip each
    for path, description in described_paths(Scenario):
        text = render(path)
        assert text.startswith(path), (path, text[:100])
        assert " ".join(description.split()[:6]) in " ".join(text.split()), path


def test_explain_a_field_shows_type_default_and_meaning() -> None:
    out = invoke("validate", "--explain", "links.latency").stdout
    assert "type: number ≥ 0" in out and "default: 0.005" in out
    assert "One-way propagation delay per hop, in seconds" in " ".join(out.split())
    out = invoke("validate", "--explain", "nodes").stdout
    assert "required" in out.splitlines()[2]
    for field in ("count", "speed", "speeds", "observers"):
        assert f"    {field}  (" in out, field


@pytest.mark.parametrize(("path", "names"), [
    ("training.aggregator.kind", list(AGGREGATORS)),
    ("training.aggregator.pre", list(PRE_AGGREGATORS)),
    ("byzantine.behaviour", list(BEHAVIOURS)),
    ("compression.method", sorted(COMPRESSORS)),  # registered on import: sorted
    ("faults", ["crash", "partition", "isolate", "one_way", "bridge", "degrade", "slow", "join",
                "leave"]),
    ("workload", ["linear", "mlp", "digits", "transformer"]),
    ("topology", ["complete", "ring", "random_regular", "watts_strogatz", "barabasi_albert",
                  "geo_clusters"]),
])
def test_explain_lists_every_variant(path: str, names: list[str]) -> None:
    lines = invoke("validate", "--explain", path).stdout.splitlines()
    shown = [line.strip().removeprefix("kind: ").split()[0] for line in lines
             if line.startswith("    ") and not line.startswith("     ")]
    assert shown[:len(names)] == names


def test_explain_a_variant_and_a_built_in() -> None:
    out = invoke("validate", "--explain", "faults.crash").stdout
    assert out.startswith("faults.crash  (kind: crash)")
    assert "keep_disk  (true or false; default true)" in out
    out = invoke("validate", "--explain", "byzantine.behaviour.alie").stdout
    assert "A Little Is Enough" in out and "z_rule" in out
    # list indices, as error lines name them, are skipped
    assert invoke("validate", "--explain", "faults.0.crash.nodes").stdout.startswith(
        "faults.crash.nodes")
    out = invoke("validate", "--explain", "workload.plugin").stdout
    assert "phalanx.workloads" in out


def test_explain_without_a_field_is_the_tree_of_sections() -> None:
    out = invoke("validate", "--explain").stdout
    top = [line.split()[0] for line in out.splitlines()[4:] if line and not line[0].isspace()]
    assert top == list(Scenario.model_fields)
    assert "  kind: geo_clusters" in out and "    inter_latency  (number ≥ 0; default 0.05)" in out


@pytest.mark.parametrize(("path", "hint"), [
    ("training.aggregatr", "did you mean training.aggregator?"),
    ("network.links.latency", "did you mean links.latency?"),
    ("aggregator", "did you mean training.aggregator?"),
    ("training.aggregator.krum", "did you mean training.aggregator.kind.krum?"),
])
def test_unknown_field_gets_a_hint(path: str, hint: str) -> None:
    result = invoke("validate", "--explain", path)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"no scenario field {path!r}" in line and hint in line, line


def test_unknown_field_subprocess_is_one_short_line(tmp_path: Path) -> None:
    huge = "x" * 5000 + "\n" + "y"
    proc = cli("validate", "--explain", huge, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert len(line) < 300 and "x" * 61 not in line
    assert proc.stdout == ""


def test_markdown_with_a_field_and_validate_without_a_file_are_one_line_errors() -> None:
    line = one_error_line(invoke("validate", "--explain", "links", "--markdown").stderr)
    assert "--markdown renders the whole reference" in line
    result = invoke("validate")
    assert result.exit_code == 2
    assert "give a scenario file" in one_error_line(result.stderr)
