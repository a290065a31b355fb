"""Test-suite setup: make the shared harness modules in this folder importable.

pytest runs with `--import-mode=importlib` (see pyproject), which leaves `sys.path` alone, so
`from nodekit import ...` in a test module needs this folder put on the path by hand. The
harness's asserts get pytest's rewriting, like the test modules' own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

pytest.register_assert_rewrite("nodekit")
