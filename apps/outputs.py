"""Where a command writes, checked before it starts: a bad `--out` (a file where a folder is
expected, a folder it may not write, /proc) fails at once in one line with exit code 2, not
after a simulation of several minutes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from phalanx.apps.terminal import fail


def output_folder(path: Path, option: str = "--out") -> Path:
    """`path` as a folder this process can write into; `fail` naming the option otherwise.
    A missing folder is not created here (a command refused for another reason leaves
    nothing behind): its nearest existing ancestor must be a folder that can be written."""
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {_short(path)}: is a file, not a folder")
    problem = _unwritable(path)
    if problem:
        raise fail(f"{option} {_short(path)}: cannot write there ({problem})")
    return path


def output_file(path: Path, option: str = "--out") -> Path:
    """`path` as a file this process can write: not a folder, in a writable folder."""
    if path.is_dir():
        raise fail(f"{option} {_short(path)}: is a folder, not a file")
    if path.parent.exists() and not path.parent.is_dir():
        raise fail(f"{option} {_short(path)}: {_short(path.parent)} is a file, not a folder")
    problem = _unwritable(path.parent)
    if problem:
        raise fail(f"{option} {_short(path)}: cannot write its folder ({problem})")
    return path


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (or, when it is missing, created in its nearest
    existing ancestor), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return "no such folder"
        existing = existing.parent
    if not existing.is_dir():
        return f"{_short(existing)} is a file, not a folder"
    try:
        # a real write: permission bits do not tell root about read-only mounts or /proc
        with tempfile.TemporaryFile(dir=existing, prefix=".phalanx-probe-"):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _short(path: Path, most: int = 120) -> str:
    text = str(path)
    return text if len(text) <= most else text[:most] + "..."
