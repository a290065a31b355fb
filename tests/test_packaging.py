"""The explicit package list in pyproject.toml names every package folder (a folder missing
from it is silently left out of a non-editable install)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {"phalanx"} | {
        "phalanx." + ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.rglob("__init__.py")
        if init.parent != ROOT and not {"tests", "runs", "build"} & set(init.parts)
        and ".venv" not in init.parts}
    assert found == listed
