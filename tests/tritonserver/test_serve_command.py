"""``chatmodel serve FILE`` as a user runs it: prints its endpoints, answers, and stops cleanly
(tritonserver and its Python stubs gone) on Ctrl-C; ``chatmodel tiny-checkpoint`` too."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.tritonserver.helpers import generate, write_chatmodel

from chatmodel_operator.runtime.serve import LocalServer, load_chatmodel, prepare_local
from chatmodel_operator.runtime.server import Ports, ServerError, free_port
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS

pytestmark = pytest.mark.triton


def _chatmodel(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatmodel_operator.cli", *args]


def test_tiny_checkpoint_command_writes_a_checkpoint(tmp_path: Path) -> None:
    out = run_cli(
        "tiny-checkpoint", str(tmp_path / "x"), "--family", "xverse", "--train-steps", "5"
    )
    assert out.returncode == 0, out.stderr
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


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--http-port", "{busy}"], "already in use: --http-port {busy}"),
        (["--openai-port", "{busy}"], "already in use: --openai-port {busy}"),
        (
            ["--http-port", "{free}", "--grpc-port", "{free}"],
            "--http-port and --grpc-port are both {free}",
        ),
    ],
    ids=["http-busy", "openai-busy", "twice"],
)
def test_serve_with_ports_it_cannot_have_exits_2_before_starting(
    tiny: Callable[[str], Path], tmp_path: Path, busy_port: int, flags: list[str], expected: str
) -> None:
    spec = write_chatmodel(tmp_path / "chatmodel.yaml", tiny("yi-chat"), "yi-chat")
    free = free_port()
    args = [f.format(busy=busy_port, free=free) for f in flags]
    work = tmp_path / "work"
    proc = run_cli("serve", str(spec), *args, "--workdir", str(work))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected.format(busy=busy_port, free=free) in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert not work.exists(), "serve went on after the port check"


def test_a_front_that_cannot_listen_is_a_server_error_naming_its_port(
    tiny: Callable[[str], Path], tmp_path: Path, busy_port: int
) -> None:
    """The port was free when checked and taken before the front bound it."""
    spec = write_chatmodel(tmp_path / "chatmodel.yaml", tiny("yi-chat"), "yi-chat")
    local = prepare_local(load_chatmodel(spec))
    server = LocalServer(local, tmp_path / "work", Ports.free(), busy_port)
    with pytest.raises(ServerError, match=f"did not start on port {busy_port}: .*address"):
        server._start_front()
    assert server._thread is not None
    server._thread.join(10)  # the front's loop is closed now: stopping must still work
    server.stop()


def test_a_model_triton_cannot_load_is_named_in_one_error(
    tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    """Corrupt weights: the engine model fails to load, and serve says which model and why
    instead of a page of Triton's log."""
    ckpt = tmp_path / "broken"
    shutil.copytree(tiny("yi-chat"), ckpt)
    (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    spec = write_chatmodel(tmp_path / "chatmodel.yaml", ckpt, "yi-chat")
    ports = [str(free_port()) for _ in range(3)]
    proc = run_cli(
        "serve",
        str(spec),
        *("--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]),
        *("--openai-port", "0", "--workdir", str(tmp_path / "work")),
        timeout=240,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith("error: tritonserver exited") and "\n" not in error, error
    assert "could not load tensorrt_llm: " in error and "Traceback" not in error
    assert str(tmp_path / "work" / "tritonserver.log") in error


def test_a_checkpoint_without_a_tokenizer_exits_2_before_starting(
    tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    ckpt = tmp_path / "weights-only"
    ckpt.mkdir()
    shutil.copy(tiny("yi-chat") / "config.json", ckpt)
    spec = write_chatmodel(tmp_path / "chatmodel.yaml", ckpt, "yi-chat")
    proc = run_cli("serve", str(spec), "--workdir", str(tmp_path / "work"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "spec.model.source" in proc.stderr and "no tokenizer" in proc.stderr
    assert not (tmp_path / "work" / "tritonserver.log").exists()
