"""Fixtures of the real-Triton tier: tiny trained checkpoints, written once per session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (for tests/conftest.py); from there this very folder would be
# found as the package `triton` when torch probes for OpenAI's Triton compiler, and torch's
# import would fail. Nothing here imports from tests/ by a bare name, so it goes.
_TESTS = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _TESTS]
if getattr(sys.modules.get("triton"), "__file__", "") is None:
    del sys.modules["triton"]

from chatmodel_operator.runtime.server import ServerError, find_tritonserver  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def triton_available() -> None:
    try:
        find_tritonserver()
    except ServerError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny(family)``: the path of a tiny trained checkpoint, written on first use."""
    from chatmodel_operator.runtime.tiny_checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = write_tiny_checkpoint(root / family, family)
        return made[family]

    return get
