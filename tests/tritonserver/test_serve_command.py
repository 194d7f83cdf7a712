"""``chatmodel serve FILE`` as a user runs it: prints its endpoints, answers, and stops cleanly
(tritonserver and its Python stubs gone) on Ctrl-C; ``chatmodel tiny-checkpoint`` too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.tritonserver.helpers import generate, write_chatmodel

from chatmodel_operator.runtime.server import free_port
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS

pytestmark = pytest.mark.triton


def _chatmodel(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatmodel_operator.cli", *args]


def test_tiny_checkpoint_command_writes_a_checkpoint(tmp_path: Path) -> None:
    out = subprocess.run(
        _chatmodel(
            "tiny-checkpoint", str(tmp_path / "x"), "--family", "xverse", "--train-steps", "5"
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "xverse" in out.stdout
    names = {p.name for p in (tmp_path / "x").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names


def test_serve_prints_endpoints_answers_and_stops_on_ctrl_c(
    tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    spec = write_chatmodel(tmp_path / "chatmodel.yaml", tiny("yi-chat"), "yi-chat")
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        _chatmodel(
            "serve",
            str(spec),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--openai-port",
            "0",
            "--workdir",
            str(tmp_path / "work"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while not any("Ctrl-C stops" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert f"127.0.0.1:{http}/v2/models/ensemble/generate" in text
        assert f"127.0.0.1:{grpc}" in text and f"127.0.0.1:{metrics}/metrics" in text
        body = {"text_input": "Hello, who are you?", "max_tokens": 64, "top_k": 1}
        status, doc = generate(f"http://127.0.0.1:{http}", "ensemble", body)
        assert status == 200 and doc["text_output"] == CONVERSATIONS[1].reply
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, "tritonserver or a Python stub outlived serve"
