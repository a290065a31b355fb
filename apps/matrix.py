"""The Byzantine-tolerance matrix: attacks × aggregators × topologies over base scenarios.

A matrix file names groups; each group takes a base scenario file and expands into one cell
per (topology, attack, aggregator). A cell is the base with the topology swapped in, the attack
given to the group's Byzantine nodes (a behaviour, or faults such as their crash) and the
aggregator set; its expectations are the base's `expect:` plus the attack's own (e.g.
`excluded:` for equivocation). Every cell is a complete scenario, so `phalanx matrix FILE
--write DIR` can dump it as a YAML file that `phalanx run` replays on its own; a cell whose
rule needs more gradients than the members are sure to send is refused as `phalanx validate`
refuses it, and reported with that line instead of run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args

import polars as pl
import yaml
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from phalanx.scenario.schema import (
    Fault,
    Scenario,
    ScenarioError,
    ScenarioRefused,
    Strict,
    describe_error,
    parse_scenario,
)


class AttackSpec(Strict):
    """A Byzantine behaviour given to the group's `byzantine_nodes`, or faults instead
    (`faults: [{kind: crash, at_round: 2}]`): scenario fault entries, where one that names no
    `nodes` hits the group's `byzantine_nodes`."""

    behaviour: str | None = None
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    faults: list[dict[str, Any]] = Field(default_factory=list)
    # added to the base's expectations in this attack's cells
    expect: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> AttackSpec:
        if (self.behaviour is None) == (not self.faults):
            raise ValueError("give either 'behaviour' (Byzantine nodes) or 'faults'")
        if self.faults and self.params:
            raise ValueError("'params' belong to a behaviour; a fault takes its own fields")
        for i, fault in enumerate(self.faults):
            try:  # checked once here, with a stand-in node where the group's go
                _FAULT.validate_python(with_nodes(fault, [0]))
            except ValidationError as err:
                raise ValueError(f"faults.{i}: {describe_error(err.errors()[0])}") from None
        return self

    def faults_for(self, nodes: list[int]) -> list[dict[str, Any]]:
        return [with_nodes(f, nodes) for f in self.faults]


def with_nodes(fault: dict[str, Any], nodes: list[int]) -> dict[str, Any]:
    """A fault entry with `nodes` filled in where its kind takes nodes and it names none."""
    if not isinstance(fault, dict) or "nodes" in fault or fault.get("kind") not in _NODE_KINDS:
        return fault
    return {**fault, "nodes": list(nodes)}


_FAULT: TypeAdapter[Any] = TypeAdapter(Fault)
# the fault kinds that take a `nodes` list
_NODE_KINDS = {get_args(cls.model_fields["kind"].annotation)[0]
               for cls in get_args(get_args(Fault)[0]) if "nodes" in cls.model_fields}


class GroupSpec(Strict):
    name: str
    base: str  # scenario file, relative to the matrix file
    byzantine_nodes: list[int]
    topologies: list[dict[str, Any]] = Field(default_factory=lambda: [{"kind": "complete"}])
    attacks: list[str]  # names from the matrix's `attacks:` table; "none" = attack-free
    aggregators: list[str | dict[str, Any]]
    # fields set on the base for this group, a section at a time: {training: {votes: leader}}
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # data heterogeneity as a dimension: values of the workload's `split` (a name or
    # {kind: dirichlet, alpha: 0.1}); empty: the base's own
    splits: list[str | dict[str, Any]] = Field(default_factory=list)
    # every cell once per seed (the report averages over them); empty: the base's seed
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


class MatrixSpec(Strict):
    name: str
    description: str = ""
    attacks: dict[str, AttackSpec]
    groups: list[GroupSpec]


@dataclass(frozen=True)
class Cell:
    """One scenario of the matrix, or (`scenario` None) one that `phalanx validate` refuses,
    with its one-line reason: its rule needs more gradients than the members are sure to send,
    so it is reported as refused up front rather than run into endless view changes."""

    group: str
    topology: str
    attack: str
    aggregator: str
    scenario: Scenario | None
    n: int
    f: int
    refused: str | None = None
    split: str = ""  # the split's label when the group has a `splits` dimension
    seed: int | None = None  # set when the group lists `seeds`

    @property
    def id(self) -> str:
        parts = [self.group, self.topology, self.split, self.attack, self.aggregator,
                 "" if self.seed is None else f"seed={self.seed}"]
        return "/".join(p for p in parts if p)


def _step_label(step: str | dict[str, Any]) -> str:
    if isinstance(step, str):
        return step
    params = ",".join(f"{k}={v}" for k, v in sorted(step.items()) if k != "name")
    return f"{step.get('name')}({params})" if params else str(step.get("name"))


def aggregator_label(spec: str | dict[str, Any]) -> str:
    """`krum`, `krum,f=2`, `median+bucketing(s=2),f=1`, `multi_krum,m=4`."""
    if isinstance(spec, str):
        return spec
    label = "+".join([spec.get("kind", "mean"), *map(_step_label, spec.get("pre", []))])
    params = spec.get("params", {})
    label += "".join(f",{k}={v}" for k, v in sorted(params.items()))
    return label + (f",f={spec['f']}" if spec.get("f") is not None else "")


def split_label(split: str | dict[str, Any]) -> str:
    """`iid`, `dirichlet(alpha=0.1)`, `extreme`."""
    if isinstance(split, str):
        return split
    params = ",".join(f"{k}={v}" for k, v in sorted(split.items()) if k != "kind")
    return f"{split.get('kind')}({params})" if params else str(split.get("kind"))


def topology_label(topo: dict[str, Any]) -> str:
    extra = "".join(f"-{v}" for k, v in sorted(topo.items()) if k != "kind")
    return topo["kind"] + extra


def load_matrix(path: str | Path, seeds: list[int] | None = None
                ) -> tuple[MatrixSpec, list[Cell]]:
    """Parse a matrix file and expand it (`seeds`: every group runs each cell under these,
    in place of its own `seeds`); ScenarioError (one line) on any bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"{path}: cannot read matrix ({err})") from None
    try:
        spec = MatrixSpec.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(f"{path}: {describe_error(err.errors()[0])}") from None
    cells = []
    for group in spec.groups:
        base_path = path.parent / group.base
        try:
            base = yaml.safe_load(base_path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ScenarioError(f"{path}: group {group.name}: cannot read {base_path} ({err})"
                                ) from None
        for attack in group.attacks:
            if attack != "none" and attack not in spec.attacks:
                raise ScenarioError(f"{path}: group {group.name}: attack {attack!r} is not in "
                                    f"the attacks table ({', '.join(sorted(spec.attacks))})")
        for split in group.splits or [None]:
            for seed in seeds or group.seeds or [None]:
                for topo in group.topologies:
                    for attack in group.attacks:
                        for agg in group.aggregators:
                            cells.append(_cell(spec, group, base, topo, attack, agg, path,
                                               split, seed))
    return spec, cells


def _cell(spec: MatrixSpec, group: GroupSpec, base: dict[str, Any], topo: dict[str, Any],
          attack: str, agg: str | dict[str, Any], path: Path,
          split: str | dict[str, Any] | None = None, seed: int | None = None) -> Cell:
    data = json.loads(json.dumps(base))  # a deep copy
    split_name = "" if split is None else split_label(split)
    label = "-".join(p for p in (group.name, topology_label(topo), split_name, attack,
                                 aggregator_label(agg), "" if seed is None else f"seed{seed}")
                     if p)
    data["name"] = label
    for section, fields in group.overrides.items():
        data[section] = {**data.get(section, {}), **fields}
    if split is not None:
        data["workload"] = {**data.get("workload", {}), "split": split}
    if seed is not None:
        data["seed"] = seed
    data["topology"] = topo
    data.setdefault("training", {})["aggregator"] = agg
    expect = dict(data.get("expect", {}))
    if attack != "none":
        a = spec.attacks[attack]
        if a.behaviour is not None:
            data["byzantine"] = [{"nodes": group.byzantine_nodes, "behaviour": a.behaviour,
                                  "params": a.params}]
        else:
            data["faults"] = [*data.get("faults", []), *a.faults_for(group.byzantine_nodes)]
        expect.update(a.expect)
    data["expect"] = expect
    source = f"{path} ({label})"
    names = (topology_label(topo), attack, aggregator_label(agg))
    try:
        scenario = parse_scenario(data, source)
    except ScenarioRefused as err:  # any other bad field stops the loading
        nodes = data.get("nodes", {})
        n = nodes.get("count", 0) - len(nodes.get("observers", []))
        return Cell(group.name, *names, None, nodes.get("count", 0), (n - 1) // 3,
                    refused=str(err).removeprefix(f"{source}: "), split=split_name, seed=seed)
    return Cell(group.name, *names, scenario, scenario.nodes.count, scenario.f,
                split=split_name, seed=seed)


def honest_split_rounds(rounds: pl.DataFrame) -> list[int]:
    """Rounds in which honest commits (every one ever made) name more than one model."""
    honest = rounds.filter(~pl.col("byzantine"))
    if not len(honest):
        return []
    per_round = honest.group_by("round").agg(pl.col("model_hash").n_unique().alias("k"))
    return sorted(per_round.filter(pl.col("k") > 1)["round"].to_list())


def row_file(cell: Cell) -> str:
    """The file name a cell's row is kept under (one folder per session or run)."""
    return cell.id.replace("/", "__") + ".json"


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell; a row of the matrix table (never raises: a crash is a failed row)."""
    from phalanx.apps.runner import run_scenario

    row: dict[str, Any] = {"group": cell.group, "topology": cell.topology,
                           "split": cell.split, "attack": cell.attack,
                           "aggregator": cell.aggregator, "seed": cell.seed,
                           "n": cell.n, "f": cell.f, "refused": cell.refused}
    if cell.scenario is None:  # refused up front: neither run nor a failure
        return {**row, "failures": [], "safety_violations": [], "rounds_committed": 0}
    try:
        result = run_scenario(cell.scenario)
    except Exception as err:  # reported in the table, not raised: one cell never hides others
        return {**row, "failures": [f"crashed: {type(err).__name__}: {err}"],
                "safety_violations": [], "rounds_committed": 0}
    s = result.summary
    split = honest_split_rounds(result.rounds)
    failures = list(result.failures)
    if split:
        failures.append(f"safety: honest nodes committed different models in rounds {split}")
    if cell.seed is not None:
        failures = [f"seed {cell.seed}: {line}" for line in failures]
    return {**row,
            "final_accuracy": s.get("final_eval_accuracy"),
            "final_loss": s.get("final_eval_loss"),
            "rounds_committed": s["min_rounds_committed"],
            "distinct_final_hashes": s["distinct_final_hashes"],
            "safety_violations": split,
            "excluded": sorted(int(k) for k, v in s.get("exclusions", {}).items()
                               if v["by_all_honest"]),
            "view_changes": s.get("view_changes", 0),
            "sim_seconds": s["sim_seconds"],
            "failures": failures}


def run_matrix(cells: Iterable[Cell], workers: int | None = None) -> list[dict[str, Any]]:
    cells = list(cells)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return [run_cell(c) for c in cells]
    # spawned, not forked: polars starts threads on import, and a forked child can inherit a
    # lock one of them held (a matrix run inside a pytest worker hung that way)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_cell, cells))


KEYS = ["group", "topology", "split"]  # a grid of the report: attacks × aggregators
BELOW_MEAN = 0.01  # a robust rule this far (accuracy) below the mean under the same attack: flagged


def table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per cell, averaged over its seeds (accuracy and loss; `lowest_accuracy` is the
    worst seed's; failures of every seed), with the cell's attack-free baseline (same grid and
    aggregator), the accuracy it lost against the attack-free mean, the mean's accuracy under
    the same attack, and `below_mean` for a robust rule that ends more than BELOW_MEAN below
    it."""
    df = pl.DataFrame(rows, infer_schema_length=None)
    for col, dtype in (("final_accuracy", pl.Float64), ("final_loss", pl.Float64),
                       ("split", pl.Utf8), ("seed", pl.Int64), ("refused", pl.Utf8)):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype).alias(col))
    df = df.with_columns(pl.col("split").fill_null(""))
    df = (df.group_by([*KEYS, "attack", "aggregator"], maintain_order=True)
          .agg(pl.col("n").first(), pl.col("f").first(), pl.col("refused").first(),
               pl.len().alias("seeds"),
               pl.col("final_accuracy").mean(),
               pl.col("final_accuracy").min().alias("lowest_accuracy"),
               pl.col("final_loss").mean(),
               pl.col("rounds_committed").min(),
               *[pl.col(c).max() for c in ("distinct_final_hashes", "view_changes",
                                           "sim_seconds") if c in df.columns],
               *([pl.col("excluded").first()] if "excluded" in df.columns else []),
               pl.col("failures").list.explode(keep_nulls=False, empty_as_null=False),
               pl.col("safety_violations").list.explode(keep_nulls=False, empty_as_null=False)))
    base = (df.filter(pl.col("attack") == "none")
            .select(*KEYS, "aggregator", pl.col("final_accuracy").alias("baseline_accuracy"),
                    pl.col("final_loss").alias("baseline_loss")))
    # the attack-free mean: the reference every robust rule is compared with
    free = (df.filter((pl.col("attack") == "none") & (pl.col("aggregator") == "mean"))
            .select(*KEYS, pl.col("final_accuracy").alias("attack_free_accuracy")))
    mean = (df.filter(pl.col("aggregator") == "mean")
            .select(*KEYS, "attack", pl.col("final_accuracy").alias("mean_accuracy")))
    return (df.join(base, on=[*KEYS, "aggregator"], how="left")
            .join(free, on=KEYS, how="left")
            .join(mean, on=[*KEYS, "attack"], how="left")
            .with_columns((pl.col("attack_free_accuracy") - pl.col("final_accuracy"))
                          .alias("accuracy_lost"),
                          ((pl.col("aggregator") != "mean")
                           & (pl.col("mean_accuracy") - pl.col("final_accuracy") > BELOW_MEAN))
                          .fill_null(False).alias("below_mean"))
            .sort(*KEYS, "attack", "aggregator"))


def markdown(df: pl.DataFrame, title: str) -> str:
    """One accuracy grid (attacks × aggregators) per group and topology, then the failures."""
    lines = [f"# {title}", "", "Final accuracy of the worst honest node (loss where the "
             "workload has no accuracy); ↓: more than 1 point below the plain mean under the "
             "same attack; ✗: a failed expectation.", ""]
    for (group, topo, split), part in df.group_by(KEYS, maintain_order=True):
        aggs = part["aggregator"].unique(maintain_order=True).to_list()
        seeds = int(part["seeds"].max() or 1)
        over = f", mean of {seeds} seeds" if seeds > 1 else ""
        lines += [f"## {', '.join(str(k) for k in (group, topo, split) if k)} "
                  f"(n={part['n'][0]}, f={part['f'][0]}{over})", "",
                  "| attack | " + " | ".join(aggs) + " |",
                  "|---|" + "---:|" * len(aggs)]
        for attack, rows in part.group_by("attack", maintain_order=True):
            cells = []
            for agg in aggs:
                r = rows.filter(pl.col("aggregator") == agg)
                if not len(r):
                    cells.append("")
                    continue
                if "refused" in r.columns and r["refused"][0] is not None:
                    cells.append("refused")
                    continue
                acc, loss = r["final_accuracy"][0], r["final_loss"][0]
                mark = (" ↓" if r["below_mean"][0] else "") + (
                    " ✗" if len(r["failures"][0]) else "")
                cells.append((f"{acc:.3f}" if acc is not None else
                              f"{loss:.4g}" if loss is not None else "—") + mark)
            lines.append(f"| {attack[0] if isinstance(attack, tuple) else attack} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += robustness_markdown(df)
    below = df.filter(pl.col("below_mean"))
    if len(below):
        per_rule = below.group_by("aggregator").len().sort("aggregator")
        lines += [f"Robust rules ending more than {100 * BELOW_MEAN:.0f} point below the plain "
                  f"mean under the same attack (↓): {len(below)} cells; "
                  + ", ".join(f"{a} {k}" for a, k in per_rule.iter_rows()) + ".", ""]
    failed = df.filter(pl.col("failures").list.len() > 0)
    refused = (df.filter(pl.col("refused").is_not_null()) if "refused" in df.columns
               else df.clear())
    lines += [f"{len(df)} cells, {len(refused)} refused up front (`phalanx validate` refuses "
              f"their scenario), {len(failed)} with failed expectations (✗)", ""]
    for r in failed.iter_rows(named=True):
        lines.append(f"- {cell_name(r)}: " + "; ".join(r["failures"]))
    if len(refused):
        lines += ["", "Refused up front:", ""]
        lines += [f"- {cell_name(r)}: {r['refused']}" for r in refused.iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def cell_name(row: dict[str, Any]) -> str:
    """group/topology[/split]/attack/aggregator, as Cell.id (without the seed)."""
    parts = [row["group"], row["topology"], row.get("split") or "", row["attack"],
             row["aggregator"]]
    return "/".join(p for p in parts if p)


CLASSIC = ("krum", "median", "trimmed_mean")  # the rules ALIE and IPM were designed against
# a classic rule's cell label: the rule alone, or with its parameters or tolerance (krum,f=2),
# but not after a pre-aggregation step (median+nnm)
_CLASSIC_LABEL = rf"^({'|'.join(CLASSIC)})(,|$)"


def robustness(df: pl.DataFrame) -> pl.DataFrame:
    """Per (group, topology, attack) with accuracies: the best robust rule (any but the plain
    mean) and how far it ends below the attack-free mean, what the attack costs the mean, and
    the worst it costs a classic rule (against that rule's own attack-free run)."""
    scored = df.filter(pl.col("final_accuracy").is_not_null() & (pl.col("attack") != "none"))
    rows = []
    for (group, topo, split, attack), part in scored.group_by([*KEYS, "attack"],
                                                              maintain_order=True):
        robust = part.filter(pl.col("aggregator") != "mean").sort("final_accuracy",
                                                                    descending=True)
        if not len(robust):
            continue  # a group that runs the mean only says nothing about robust rules
        mean = part.filter(pl.col("aggregator") == "mean")
        classic = part.filter(pl.col("aggregator").str.contains(_CLASSIC_LABEL)).with_columns(
            (pl.col("baseline_accuracy") - pl.col("final_accuracy")).alias("cost"))
        worst = classic.sort("cost", descending=True)
        rows.append({
            "group": group, "topology": topo, "split": split, "attack": attack,
            "best_rule": robust["aggregator"][0],
            "best_accuracy": robust["final_accuracy"][0],
            "best_gap": robust["accuracy_lost"][0],
            "mean_lost": mean["accuracy_lost"][0] if len(mean) else None,
            "worst_classic": worst["aggregator"][0] if len(worst) else None,
            "worst_classic_cost": worst["cost"][0] if len(worst) else None})
    return pl.DataFrame(rows, infer_schema_length=None)


def _points(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def robustness_markdown(df: pl.DataFrame) -> list[str]:
    r = robustness(df)
    if not len(r):
        return []
    lines = ["## Robustness: the best rule per attack, and what attacks cost", "",
             "Accuracy points against the attack-free run with the plain mean (same group and "
             "topology); a classic rule's cost is against its own attack-free run.", "",
             "| group | topology | attack | best rule | its accuracy | below attack-free | "
             "mean loses | worst classic rule | it loses |", "|---|---|---|---|---:|---:|---:|---|---:|"]
    for x in r.iter_rows(named=True):
        topo = f"{x['topology']}, {x['split']}" if x["split"] else x["topology"]
        lines.append(f"| {x['group']} | {topo} | {x['attack']} | {x['best_rule']} | "
                     f"{x['best_accuracy']:.3f} | {_points(x['best_gap'])} | {_points(x['mean_lost'])} | "
                     f"{x['worst_classic'] or ''} | {_points(x['worst_classic_cost'])} |")
    return [*lines, ""]


def write_table(df: pl.DataFrame, out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.write_parquet(out / "matrix.parquet")
    (out / "matrix.md").write_text(markdown(df, title))
