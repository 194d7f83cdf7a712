"""Covers `chatmodel operator` as shipped: the command in its own process, logging in from
KUBECONFIG, serving /metrics, taking a ChatModel to Ready against the emulated cluster, and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from emulator import ApiServer, Controllers
from test_lifecycle import ready

from conftest import CM, NS, SMALL_SPEC, chatmodel, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


async def _wait_metrics(port: int, text: str, timeout: float = 30) -> None:
    """Poll /metrics off the event loop (the emulator serving the operator runs on it)."""
    for _ in range(int(timeout * 5)):
        if text in await asyncio.to_thread(_metrics, port):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} not in /metrics")


async def test_the_operator_command_serves_a_chatmodel(
    api: ApiServer, controllers: Controllers, tmp_path: Path
) -> None:
    port = _free_port()
    api.put("", "v1", "namespaces", {"metadata": {"name": NS}})  # kopf serves namespaces that exist
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatmodel_operator.cli",
            "operator",
            "--namespace",
            NS,
            "--metrics-port",
            str(port),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await _wait_metrics(port, "chatmodel_reconciles_total")
        await wait_for(
            lambda: any(c.verb == "watch" and c.plural == "chatmodels" for c in api.calls), 30
        )
        api.put(*CM, chatmodel("xverse", SMALL_SPEC))
        await ready(api, "xverse", 30)
        await _wait_metrics(port, 'chatmodel_chatmodels{phase="Ready"} 1.0')
        assert 'chatmodel_reconciles_total{result="success"}' in await asyncio.to_thread(
            _metrics, port
        )
    except AssertionError:
        log.flush()
        print((tmp_path / "operator.log").read_text()[-5000:])
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        log.close()
    text = (tmp_path / "operator.log").read_text()
    assert code == 0, text[-3000:]
    assert "running standalone" in text  # no peering in this cluster: said once
    assert text.count("running standalone") == 1
