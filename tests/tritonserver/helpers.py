"""Helpers of the real-Triton tier: local servers of tiny checkpoints and small clients for
Triton's generate endpoints and metrics."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from chatmodel_operator.api import parse_chatmodel
from chatmodel_operator.runtime.serve import LocalServer, prepare_local
from chatmodel_operator.runtime.server import Ports, free_port
from chatmodel_operator.runtime.tiny_checkpoint import Conversation
from chatmodel_operator.triton.textproc import envelope


def chatmodel_doc(name: str, checkpoint: Path, family: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.chatmodel.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": f"file://{checkpoint}", "family": family},
            "engine": {"backend": "python"},
        },
    }


@contextmanager
def local_server(
    checkpoint: Path, family: str, workdir: Path, *, openai: bool = False, **overrides: Any
) -> Iterator[LocalServer]:
    cm = parse_chatmodel(chatmodel_doc(f"tiny-{family}", checkpoint, family))
    overrides.setdefault("max_input_length", 1024)
    overrides.setdefault("max_output_length", 512)
    overrides.setdefault("max_sequence_length", 1536)
    local = prepare_local(cm, **overrides)
    server = LocalServer(local, workdir, Ports.free(), free_port() if openai else None)
    with server:
        yield server


def write_chatmodel(path: Path, checkpoint: Path, family: str) -> Path:
    path.write_text(yaml.safe_dump(chatmodel_doc(f"tiny-{family}", checkpoint, family)))
    return path


# --- Triton's HTTP generate endpoints -------------------------------------------------------


def conversation_body(conv: Conversation, max_tokens: int = 200, **extra: Any) -> dict[str, Any]:
    """A generate request whose text_input is ``conv``'s messages (the chat envelope)."""
    return {"text_input": envelope(conv.as_messages()), "max_tokens": max_tokens, **extra}


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)


def generate(url: str, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = _connection(url)
    try:
        conn.request("POST", f"/v2/models/{model}/generate", json.dumps(body))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def generate_stream(url: str, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every SSE event of one generate_stream call, parsed."""
    conn = _connection(url)
    try:
        conn.request("POST", f"/v2/models/{model}/generate_stream", json.dumps(body))
        resp = conn.getresponse()
        events = []
        for raw in resp:
            line = raw.decode("utf-8").strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
        return events
    finally:
        conn.close()


def stream_text(url: str, model: str, body: dict[str, Any]) -> list[str]:
    events = generate_stream(url, model, {**body, "stream": True})
    errors = [e["error"] for e in events if "error" in e]
    assert not errors, errors
    return [e.get("text_output", "") for e in events]


def metric(metrics_url: str, name: str) -> float:
    """The sum of one metric family's samples (our engine's have one series each)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)
