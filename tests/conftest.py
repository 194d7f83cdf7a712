"""Shared fixtures: repository paths and example ChatModels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

# Nothing in the tests may reach the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_cli(
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``chatmodel ARGS`` in a fresh interpreter, from the repository root, output captured
    (``env``: the whole environment, when given)."""
    return subprocess.run(
        [sys.executable, "-m", "chatmodel_operator.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO,
        timeout=timeout,
        env=env,
    )


def load_example(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
