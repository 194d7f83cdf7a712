"""``python -m chatmodel_operator.demo``: the data plane end to end, on this machine.

``make demo`` starts the local control plane (``make cluster``: kube-apiserver, the controllers,
kwok's GPU nodes, the chart and the operator). With ``--cluster`` this module first runs the
README's "Your first ChatModel" commands as the README writes them (``readme.command``): ``chatmodel
plan examples/suschat.yaml``, ``kubectl apply -f examples/suschat.yaml``, ``kubectl get chm -w``
until it is Ready, ``kubectl describe chm suschat`` and the conditions one per line. Then it makes
a tiny SUS-Chat checkpoint, serves it with a real ``tritonserver`` (CPU), runs the README's two
``curl`` commands against it (the Service's address replaced by the local server's), streams one
Chinese conversation through Triton's gRPC stream (``ensemble``) and one English conversation
through the OpenAI-compatible API, prints the answers, time to first token and a few Triton
metrics, and stops the server. Each step says how long it took.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from chatmodel_operator import readme
from chatmodel_operator.api import parse_chatmodel
from chatmodel_operator.runtime.chat import chat
from chatmodel_operator.runtime.serve import LocalServer, prepare_local
from chatmodel_operator.runtime.server import Ports, free_port
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS, write_tiny_checkpoint

FAMILY = "sus-chat"
# Conversations the tiny checkpoint was trained on, so that it answers them sensibly.
CHINESE = CONVERSATIONS[3].as_messages()[:-1]
CHINESE_QUESTION = CONVERSATIONS[3].as_messages()[-1]["content"]
ENGLISH = CONVERSATIONS[2].as_messages()
METRICS = (
    "nv_inference_request_success",
    "nv_inference_exec_count",
    "nv_inference_compute_infer_duration_us",
    "chatmodel_engine_generated_tokens_total",
)


def _say(text: str) -> None:
    print(text, flush=True)


def _metrics(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    lines = []
    for name in METRICS:
        for labels, value in re.findall(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.MULTILINE):
            model = re.search(r'model="([^"]+)"', labels)
            lines.append(f"  {name}{{{model.group(1) if model else ''}}} = {float(value):g}")
    return lines


# The Service address the README's curl commands use, by port.
SERVICE = "http://suschat.default.svc"


def _env() -> dict[str, str]:
    """This environment with the virtualenv's ``chatmodel`` on PATH, as after activating it."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def _shell(*args: str, timeout: float = 60, lines: int | None = None) -> str:
    """Runs a command as a user would type it, prints it with its output (its first ``lines``
    lines, if given) and duration."""
    _say(f"$ {shlex.join(args)}")
    t = time.perf_counter()
    proc = subprocess.run(args, text=True, capture_output=True, timeout=timeout, env=_env())
    out = (proc.stdout + proc.stderr).rstrip()
    shown = out.splitlines()
    if lines is not None and len(shown) > lines:
        shown = [*shown[:lines], f"... ({len(shown) - lines} more lines)"]
    _say("\n".join(shown))
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(args)}` failed (exit {proc.returncode})")
    _say(f"   [{time.perf_counter() - t:.1f}s]")
    return out


def _watch_until(args: list[str], name: str, phase: str, timeout: float) -> None:
    """`kubectl get -w`, printed line by line, until the Phase column of `name` says `phase`."""
    _say(f"$ {shlex.join(args)}")
    t = time.perf_counter()
    proc = subprocess.Popen(
        args, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env()
    )
    assert proc.stdout is not None
    column = None
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            _say(f"{line.rstrip()}    [{time.perf_counter() - t:.1f}s]")
            words = line.split()
            if column is None and "PHASE" in words:
                column = words.index("PHASE")
            elif (
                column is not None and words[:1] == [name] and words[column : column + 1] == [phase]
            ):
                return
            if time.monotonic() > deadline:
                break
        raise SystemExit(f"demo: not {phase} within {timeout:.0f}s (see kubectl describe)")
    finally:
        proc.terminate()
        proc.wait(10)


def on_cluster() -> None:
    """The README's first ChatModel on the local control plane (KUBECONFIG and PATH from make
    cluster), each command as the README writes it."""
    _say("== control plane: the README's first ChatModel through the operator ==")
    t = time.perf_counter()
    _shell(*readme.command("chatmodel plan examples/suschat.yaml"))
    _shell(*readme.command("kubectl apply -f examples/suschat.yaml"))
    _watch_until(readme.command("kubectl get chm -w"), "suschat", "Ready", timeout=180)
    _shell(*readme.command("kubectl describe chm suschat"))
    _shell(
        *readme.command(
            'kubectl get chm suschat -o jsonpath=\'{range .status.conditions[*]}{.type}{"\\t"}'
            '{.status}{"\\t"}{.reason}{"\\t"}{.message}{"\\n"}{end}\''
        )
    )
    _say(f"apply to Ready and described in {time.perf_counter() - t:.1f}s\n")


def _curl(words: list[str], http_url: str, openai_url: str) -> None:
    """A README curl command against the local server instead of the ChatModel's Service."""
    local = {f"{SERVICE}:8000": http_url, f"{SERVICE}:9000": openai_url}
    for service, url in local.items():
        words = [w.replace(service, url) for w in words]
    out = _shell(*words, lines=6)
    if not out.strip():
        raise SystemExit(f"demo: `{' '.join(words)}` printed nothing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatmodel_operator.demo")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="first run the README's first ChatModel on the cluster kubectl points at",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.cluster:
        on_cluster()
    work = Path(tempfile.mkdtemp(prefix="chatmodel-demo-"))
    _say(f"== data plane: a tiny {FAMILY} checkpoint on a real Triton server (CPU) ==")
    t = time.perf_counter()
    ckpt = write_tiny_checkpoint(work / FAMILY, FAMILY)
    elapsed = time.perf_counter() - t
    _say(f"tiny checkpoint (trained on a few conversations): {ckpt} [{elapsed:.1f}s]")
    cm = parse_chatmodel(
        {
            "apiVersion": "serving.chatmodel.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": "tiny-sus-chat"},
            "spec": {
                "model": {"source": f"file://{ckpt}", "family": FAMILY},
                "engine": {"backend": "python", "maxInputLength": 1024, "maxOutputLength": 256},
            },
        }
    )
    local = prepare_local(cm, max_batch_size=8)
    server = LocalServer(local, work / "serve", Ports.free(), free_port())
    t = time.perf_counter()
    with server:
        _say(f"tritonserver ready [{time.perf_counter() - t:.1f}s]")
        for label, url in server.endpoints():
            _say(f"  {label:28} {url}")

        # One request first: the engine's first forward pass pays for lazy initialisation.
        chat(server.triton.grpc_url, "Hello", max_tokens=4, stream=False)

        _say("\n-- the README's curl commands, against this server --")
        assert server.openai_url is not None
        openai_root = server.openai_url.removesuffix("/v1")
        for words in (
            readme.command(
                "curl -sN http://suschat.default.svc:8000/v2/models/ensemble/generate_stream "
                """-d '{"text_input": "Hello, who are you?", "max_tokens": 64, "stream": true}'"""
            ),
            readme.command(
                "curl -sN http://suschat.default.svc:9000/v1/chat/completions "
                "-H 'Content-Type: application/json' "
                """-d '{"model": "ensemble", "messages": [{"role": "user", "content": "你好"}], """
                """"stream": true}'"""
            ),
        ):
            _curl(words, server.triton.http_url, openai_root)

        _say("\n-- Chinese, multi-turn, streamed over gRPC (ensemble) --")
        for m in CHINESE:
            _say(f"{m['role']}: {m['content']}")
        _say(f"user: {CHINESE_QUESTION}")
        sys.stdout.write("assistant: ")
        reply = chat(server.triton.grpc_url, CHINESE_QUESTION, history=CHINESE, out=sys.stdout)
        _say("")
        assert reply.first_token_s is not None
        _say(
            f"   time to first token {reply.first_token_s * 1000:.0f} ms, "
            f"{len(reply.chunks)} chunks, total {reply.total_s * 1000:.0f} ms, "
            f"U+FFFD: {'yes' if chr(0xFFFD) in reply.text else 'none'}"
        )

        _say("\n-- English, system prompt, streamed through the OpenAI-compatible API --")
        import openai

        client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0)
        for m in ENGLISH:
            _say(f"{m['role']}: {m['content']}")
        sys.stdout.write("assistant: ")
        t = time.perf_counter()
        first: float | None = None
        messages: Any = ENGLISH  # plain dicts are what the API takes; the stubs want TypedDicts
        stream = client.chat.completions.create(
            model=local.name, messages=messages, max_tokens=128, stream=True
        )
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                first = first if first is not None else time.perf_counter() - t
                sys.stdout.write(delta)
                sys.stdout.flush()
        _say("")
        _say(f"   time to first token {(first or 0) * 1000:.0f} ms")

        _say("\n-- Triton metrics --")
        for line in _metrics(server.triton.metrics_url):
            _say(line)
        _say("\nstopping tritonserver ...")
    shutil.rmtree(work, ignore_errors=True)
    _say(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
