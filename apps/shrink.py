"""Shrink a failing scenario to a small one that still fails the same way.

A failing seed of a 60-round, 10-node scenario with every fault is a poor regression: slow to
replay and hard to read. As QuickCheck and Hypothesis shrink a failing input, this module
tries smaller variants of the scenario (fewer rounds, fewer nodes, fewer faults and
attackers, shorter fault windows, optional sections dropped), keeps each variant that still
fails *the same way* and starts again from it, until no variant fails or the run budget is
spent. "The same way" means the same set of failure kinds: the violated invariants
(apps/invariants.py), the `expect:` entries missed, and for a run that raised, the exception's
type.

Variants are edits of the scenario's own mapping (its YAML as written, not the resolved
config), so the saved regression file stays as short as what the author wrote. A variant the
schema refuses is skipped. Every run is a pure function of (scenario, seed), so the shrunk
file fails when replayed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from phalanx.scenario.schema import ScenarioError, parse_scenario

Data = dict[str, Any]
Edit = tuple[str, Data]  # (what the edit did, the edited scenario)

# the id-holding fields of faults, Byzantine entries and expectations (lists of node ids, or
# lists of lists for partition groups and bridge sides)
_ID_LISTS = ("nodes", "source", "target")
_ID_GROUPS = ("groups", "sides")
_OPTIONAL_SECTIONS = ("nemesis", "compression", "privacy")


@dataclass(frozen=True)
class Failure:
    """How a run failed: the kinds, e.g. {"liveness", "expect:final_accuracy_above"}."""

    kinds: frozenset[str]

    def __str__(self) -> str:
        return ", ".join(sorted(self.kinds))


@dataclass
class Shrunk:
    data: Data  # the smallest failing scenario found
    failure: Failure
    size_before: int  # rounds × nodes
    size_after: int
    runs: int  # scenario runs the search spent
    steps: list[str] = field(default_factory=list)  # the accepted edits, in order

    @property
    def factor(self) -> float:
        return self.size_before / max(self.size_after, 1)


def size(data: Data) -> int:
    """The measure shrinking lowers first: planned rounds × nodes."""
    return int(data["training"]["rounds"]) * int(data["nodes"]["count"])


def failure_of(data: Data, seed: int) -> Failure | None:
    """Run the scenario `data` with `seed`; how it failed, or None (it passed, or the schema
    refuses it)."""
    from phalanx.apps.invariants import check_run
    from phalanx.apps.runner import run_scenario

    try:
        scenario = parse_scenario({**data, "seed": seed}, str(data.get("name", "scenario")))
    except ScenarioError:
        return None
    try:
        result = run_scenario(scenario, progress=False)
    except Exception as error:  # a run that raises is a failure kind of its own
        return Failure(frozenset({f"crash:{type(error).__name__}"}))
    kinds = {v.invariant for v in check_run(result, seed)}
    kinds |= {f"expect:{line.split(':', 1)[0]}" for line in result.failures}
    return Failure(frozenset(kinds)) if kinds else None


def shrink(data: Data, seed: int, target: Failure, *, max_runs: int = 120,
           check: Callable[[Data, int], Failure | None] = failure_of,
           say: Callable[[str], None] | None = None) -> Shrunk:
    """Greedily shrink `data` (which fails as `target` with `seed`) within `max_runs` runs."""
    best = copy.deepcopy(data)
    result = Shrunk(best, target, size(data), size(data), 0)
    improved = True
    while improved and result.runs < max_runs:
        improved = False
        for what, candidate in edits(best):
            if result.runs >= max_runs:
                break
            result.runs += 1
            if check(candidate, seed) == target:
                best = candidate
                result.steps.append(what)
                if say:
                    say(f"shrink: {what} (rounds × nodes {size(best)})")
                improved = True
                break  # start over from the smaller scenario: earlier edits may apply again
    result.data, result.size_after = best, size(best)
    return result


# ---- the edits, most shrinking first -------------------------------------------------------


def edits(data: Data) -> Iterator[Edit]:
    yield from _fewer_rounds(data)
    yield from _fewer_nodes(data)
    yield from _fewer_attackers(data)
    yield from _fewer_faults(data)
    yield from _shorter_faults(data)
    for key in _OPTIONAL_SECTIONS:
        if data.get(key) is not None:
            yield f"dropped {key}", _without(data, key)


def _without(data: Data, key: str) -> Data:
    out = copy.deepcopy(data)
    out.pop(key, None)
    return out


def _without_entry(data: Data, key: str, i: int) -> Data:
    """`data` less entry `i` of the list `key` (the key itself once the list is empty)."""
    out = copy.deepcopy(data)
    del out[key][i]
    return out if out[key] else _without(out, key)


def _fewer_rounds(data: Data) -> Iterator[Edit]:
    rounds = int(data["training"]["rounds"])
    tried: set[int] = set()
    for fewer in (rounds // 8, rounds // 4, rounds // 2, rounds - rounds // 4, rounds - 1):
        if 1 <= fewer < rounds and fewer not in tried:
            tried.add(fewer)
            out = copy.deepcopy(data)
            out["training"]["rounds"] = fewer
            expect = out.get("expect") or {}
            if (expect.get("rounds_committed_at_least") or 0) > fewer:  # keep it reachable
                expect["rounds_committed_at_least"] = fewer
            yield f"rounds {rounds} → {fewer}", out


def referenced_nodes(data: Data) -> set[int]:
    """Every node id the scenario names outside `nodes.count`."""
    ids: set[int] = set()
    nodes = data["nodes"]
    ids |= {int(i) for i in nodes.get("speeds") or {}} | set(nodes.get("observers") or [])
    for entry in [*(data.get("byzantine") or []), *(data.get("faults") or [])]:
        ids |= {i for key in _ID_LISTS for i in entry.get(key) or []}
        ids |= {i for key in _ID_GROUPS for group in entry.get(key) or [] for i in group}
    expect = data.get("expect") or {}
    ids |= set(expect.get("excluded") or []) | set(expect.get("members_at_end") or [])
    return ids


def renumbered(data: Data, count: int) -> Data | None:
    """`data` with `count` nodes: the named ids keep their order and move to the lowest ids;
    None when more ids are named than `count` holds."""
    named = sorted(referenced_nodes(data))
    if len(named) > count:
        return None
    new_id = {old: new for new, old in enumerate(named)}
    out = copy.deepcopy(data)
    nodes = out["nodes"]
    nodes["count"] = count
    if "speeds" in nodes:
        nodes["speeds"] = {new_id[int(k)]: v for k, v in nodes["speeds"].items()}
    if "observers" in nodes:
        nodes["observers"] = [new_id[i] for i in nodes["observers"]]
    for entry in [*(out.get("byzantine") or []), *(out.get("faults") or [])]:
        for key in _ID_LISTS:
            if entry.get(key):
                entry[key] = [new_id[i] for i in entry[key]]
        for key in _ID_GROUPS:
            if entry.get(key):
                entry[key] = [[new_id[i] for i in group] for group in entry[key]]
    expect = out.get("expect") or {}
    for key in ("excluded", "members_at_end"):
        if expect.get(key):
            expect[key] = [new_id[i] for i in expect[key]]
    return out


def _fewer_nodes(data: Data) -> Iterator[Edit]:
    count = int(data["nodes"]["count"])
    tried: set[int] = set()
    for fewer in (count // 4, count // 2, count - count // 4, count - 1):
        if 1 <= fewer < count and fewer not in tried:
            tried.add(fewer)
            out = renumbered(data, fewer)
            if out is not None:
                yield f"nodes {count} → {fewer}", out


def _fewer_attackers(data: Data) -> Iterator[Edit]:
    entries = data.get("byzantine") or []
    for i, entry in enumerate(entries):
        yield f"dropped byzantine.{i} ({entry.get('behaviour')})", _without_entry(
            data, "byzantine", i)
        for node in entry.get("nodes") or []:
            if len(entry["nodes"]) > 1:
                out = copy.deepcopy(data)
                out["byzantine"][i]["nodes"].remove(node)
                yield f"byzantine.{i}: node {node} honest", out


def _fewer_faults(data: Data) -> Iterator[Edit]:
    for i, fault in enumerate(data.get("faults") or []):
        yield f"dropped faults.{i} ({fault.get('kind')})", _without_entry(data, "faults", i)


def _shorter_faults(data: Data) -> Iterator[Edit]:
    for i, fault in enumerate(data.get("faults") or []):
        duration = fault.get("duration")
        if isinstance(duration, int | float) and duration > 0.01:
            out = copy.deepcopy(data)
            out["faults"][i]["duration"] = round(duration / 2, 6)
            yield f"faults.{i}: duration {duration} → {duration / 2:g} s", out
    nemesis = data.get("nemesis")
    if nemesis:
        stop = nemesis.get("stop")
        if isinstance(stop, int | float) and stop > nemesis.get("start", 1.0):
            out = copy.deepcopy(data)
            out["nemesis"]["stop"] = round((stop + nemesis.get("start", 1.0)) / 2, 6)
            yield f"nemesis: stop {stop} → {out['nemesis']['stop']:g} s", out


__all__ = ["Failure", "Shrunk", "failure_of", "referenced_nodes", "renumbered", "shrink",
           "size"]
