"""NVIDIA's aiperf against `chatmodel serve` counts the tokens the engine generated: runs
bench/aiperf_check.py where `make aiperf` has made .venv-aiperf, and skips elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.conftest import REPO

pytestmark = pytest.mark.triton
AIPERF = REPO / ".venv-aiperf" / "bin" / "aiperf"


@pytest.mark.skipif(not AIPERF.exists(), reason="no .venv-aiperf: `make aiperf` makes it")
def test_aiperf_with_server_token_counts_matches_the_engine() -> None:
    env = dict(os.environ)
    # aiperf 0.13 refuses a local tokenizer path as a hub repo id when the hub is offline
    # (tests/conftest.py sets HF_HUB_OFFLINE); the tokenizer here is a local directory.
    env.pop("HF_HUB_OFFLINE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), str(REPO), env.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "aiperf_check.py"), "--aiperf", str(AIPERF)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "token counts match" in lines
    counts = dict(line.rsplit(None, 1) for line in lines if line.startswith(("aiperf", "engine")))
    assert counts["engine generated tokens"] == "288"
