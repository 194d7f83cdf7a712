"""Fixtures of the real-Triton tier: tiny trained checkpoints, written once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatmodel_operator.runtime.server import ServerError, find_tritonserver


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
