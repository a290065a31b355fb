"""Rules, attacks and workloads from the user's own package, without forking phalanx.

A scenario names a user class in one of two ways:

- by an entry point of the user's installed package, in the group of its kind::

      # the user's pyproject.toml
      [project.entry-points."phalanx.aggregators"]
      clipped_mean = "mylab.rules:ClippedMean"

  then ``aggregator: clipped_mean`` in a scenario (groups: ``phalanx.aggregators``,
  ``phalanx.attacks``, ``phalanx.workloads``);
- by its import path, ``module:Class`` (``aggregator: {kind: "mylab.rules:ClippedMean"}``),
  for a module on the Python path that is not packaged.

A user class subclasses the built-ins' base (``phalanx.engine.aggregate.Aggregator``,
``phalanx.engine.byzantine.attacks.GradientAttack`` or ``phalanx.engine.byzantine.Behaviour``,
``phalanx.engine.workloads.Workload``), so it is built, validated and called exactly as a
built-in is, in the simulator and in every real node process (each process resolves the name
again: the package must be installed where the nodes run). Built-in names always win: an entry
point that reuses one is ignored (`phalanx plugins` lists it as shadowed), so a built-in name
means the same thing on every machine.

Loading is not I/O the core performs while it runs: a name is resolved once, when the scenario
is built, and the class is cached.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import TypeVar

T = TypeVar("T")

GROUPS = ("aggregators", "attacks", "workloads")


class PluginError(ValueError):
    """A user class that cannot be used; `str()` is one line naming it and why."""


def is_path(name: str) -> bool:
    """`module:Class` rather than a registered name."""
    return ":" in name


@cache
def registered(group: str) -> dict[str, str]:
    """Entry point name → its `module:Class` value, for the group `phalanx.<group>`."""
    if group not in GROUPS:
        raise PluginError(f"unknown plugin group {group!r}; groups: {', '.join(GROUPS)}")
    return {ep.name: ep.value for ep in entry_points(group=f"phalanx.{group}")}


@cache
def load_class(group: str, name: str, base: type | tuple[type, ...],
               builtins: frozenset[str] = frozenset()) -> type | None:
    """The class `name` names in `group` (a `module:Class` path or an entry point), checked
    to subclass `base` (or one of them); None when `name` is a built-in or names nothing (the
    caller reports it as unknown)."""
    if name in builtins:
        return None
    what = f"{group[:-1]} {name!r}"
    if is_path(name):
        target = name
    else:
        target = registered(group).get(name, "")
        if not target:
            return None
        what += f" (entry point phalanx.{group} → {target})"
    obj = _import(target, what, "module:Class")
    if not (isinstance(obj, type) and issubclass(obj, base)):
        bases = base if isinstance(base, tuple) else (base,)
        raise PluginError(f"{what}: {target} is not a subclass of " + " or ".join(
            f"{b.__module__}.{b.__qualname__}" for b in bases))
    return obj


@cache
def load_function(target: str, what: str) -> Callable[..., object]:
    """The callable `target` (`module:function`) names, for hooks such as the safety
    filter's scorer; PluginError (one line, starting with `what`) when it cannot be used."""
    obj = _import(target, what, "module:function")
    if not callable(obj) or isinstance(obj, type):
        raise PluginError(f"{what}: {target[:200]} is not a function")
    return obj  # type: ignore[no-any-return]


def _import(target: str, what: str, form: str) -> object:
    """The object at `target` (`module:attr.attr`), imported once; PluginError otherwise."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{what}: expected '{form}'")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as err:
        raise PluginError(f"{what}: cannot import {module_name} ({err})") from None
    except AttributeError:
        raise PluginError(f"{what}: {module_name} has no {attr}") from None
    except Exception as err:  # the user's module failed while importing
        raise PluginError(f"{what}: importing {module_name} raised "
                          f"{type(err).__name__}: {err}") from None
    return obj


class LazyClasses(Mapping[str, T]):
    """Built-in classes by name, each imported from its `module:Class` when first looked up:
    listing or checking names (a scenario's validation, `phalanx --help`) then never loads the
    modules behind them, some of which load torch (seconds of CPU)."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> T:
        module, _, attr = self._paths[name].partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def resolve(group: str, name: str, builtins: Mapping[str, T], base: type | tuple[type, ...],
            what: str) -> T | type:
    """The built-in `builtins[name]`, else the user class `name` names in `group`; ValueError
    "unknown <what> ...; known: ..." when it names neither."""
    if name in builtins:
        return builtins[name]
    names = frozenset(builtins)
    cls = load_class(group, name, base, names)
    if cls is None:
        raise ValueError(f"unknown {what} {name!r}; known: {known_names(group, names)}")
    return cls


def shadowed(group: str, builtins: frozenset[str]) -> list[str]:
    """Entry points of `group` whose names a built-in already takes (they are never used)."""
    return sorted(set(registered(group)) & builtins)


def known_names(group: str, builtins: frozenset[str]) -> str:
    """The names a scenario may use in `group`, for error messages."""
    extra = sorted(set(registered(group)) - builtins)
    names = ", ".join(sorted(builtins))
    return names + (f"; from installed packages: {', '.join(extra)}" if extra else "") + \
        "; or 'module:Class'"


__all__ = ["GROUPS", "LazyClasses", "PluginError", "is_path", "known_names", "load_class",
           "load_function", "registered", "resolve", "shadowed"]
