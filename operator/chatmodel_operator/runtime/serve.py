"""``chatmodel serve FILE``: a ChatModel with a ``file://`` checkpoint, served here by a real
Triton server with our Python engine (CPU, or the GPU if torch sees one), plus the local
OpenAI-compatible endpoint.

It renders the same repository the operator would (``triton.python_layout``, the layout of
``backend: python``), sized for this machine rather than by the GPU planner: batch slots are
capped at ``--max-batch-size`` and the lengths come from the spec and the checkpoint's context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chatmodel_operator.adapters.checkpoint import read_model_files
from chatmodel_operator.api import ChatModel, parse_chatmodel
from chatmodel_operator.catalog import ModelInfo, parse_source, resolve_model
from chatmodel_operator.cli_args import PORT, PORT_OR_OFF, CliError, bounded, load_documents
from chatmodel_operator.errors import SpecError
from chatmodel_operator.runtime.server import (
    Ports,
    ServerError,
    TritonServer,
    port_in_use,
    write_repository,
)
from chatmodel_operator.triton.repository import (
    Repository,
    Settings,
    chat_format,
    default_sources,
    python_layout,
    stream_interval_settings,
)

DEFAULT_LOCAL_BATCH = 16
# One of these makes a Hugging Face tokenizer (fast, SentencePiece, BPE, WordPiece, or code).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class LocalModel:
    """A ChatModel prepared for serving here."""

    name: str
    checkpoint: Path
    model: ModelInfo
    settings: Settings
    repository: Repository


def local_settings(cm: ChatModel, model: ModelInfo, max_batch_size: int) -> Settings:
    e = cm.spec.engine
    ctx = model.arch.context_length
    out = e.max_output_length or min(2048, max(16, ctx // 4))
    inp = e.max_input_length or max(16, ctx - out)
    if inp + out > ctx:
        raise SpecError(
            "spec.engine.maxInputLength",
            f"maxInputLength {inp} + maxOutputLength {out} exceeds the model's context of {ctx}",
            f"lower them so that their sum is at most {ctx}",
        )
    batch = min(e.max_batch_size, max_batch_size)
    return Settings(
        max_batch_size=batch,
        max_input_length=inp,
        max_output_length=out,
        max_sequence_length=inp + out,
        max_num_tokens=max(inp, 2048),
        streaming=cm.spec.serving.streaming,
        dtype=e.dtype,
        trust_remote_code=cm.spec.model.trust_remote_code,
        engine_key="local",
        **stream_interval_settings(cm.spec),
    )


def load_chatmodel(path: str | Path) -> ChatModel:
    """The first ChatModel of a YAML file (CliError when the file cannot be read or parsed)."""
    return parse_chatmodel(load_documents(str(path))[0])


def check_ports(flags: Mapping[str, int]) -> None:
    """Ports given twice or already taken, as one CliError naming the flags, before anything
    starts (tritonserver would otherwise fail half-way with its own log)."""
    by_port: dict[int, list[str]] = {}
    for flag, port in flags.items():
        by_port.setdefault(port, []).append(flag)
    shared = [
        " and ".join(names) + f" are {'both' if len(names) == 2 else 'all'} {port}"
        for port, names in by_port.items()
        if len(names) > 1
    ]
    if shared:
        raise CliError(f"{'; '.join(shared)}; fix: give each its own port")
    busy = [f"{flag} {port}" for flag, port in flags.items() if port_in_use(port)]
    if busy:
        raise CliError(
            f"already in use: {', '.join(busy)}; fix: stop what listens there or pick free ports"
        )


def prepare_local(
    cm: ChatModel, *, max_batch_size: int = DEFAULT_LOCAL_BATCH, **overrides: Any
) -> LocalModel:
    """Resolve the model and render its repository for local serving; ``overrides`` replace
    Settings fields (tests shrink limits this way)."""
    source = parse_source(cm.spec.model.source)
    if source.scheme != "file":
        raise SpecError(
            "spec.model.source",
            f"chatmodel serve needs a local checkpoint, not {cm.spec.model.source}",
            "use file:///path/to/checkpoint (chatmodel tiny-checkpoint makes one)",
        )
    config, tokenizer_config = read_model_files(cm.spec.model.source)
    if not any((Path(source.location) / name).is_file() for name in TOKENIZER_FILES):
        raise SpecError(
            "spec.model.source",
            f"{source.location} has a config.json but no tokenizer (none of "
            f"{', '.join(TOKENIZER_FILES)})",
            "copy the checkpoint's tokenizer files next to its config.json",
        )
    model = resolve_model(cm.spec.model, config=config, tokenizer_config=tokenizer_config)
    settings = replace(local_settings(cm, model, max_batch_size), **overrides)
    ckpt = source.location
    repo = python_layout(
        settings, chat_format(model), tokenizer_dir=ckpt, engine_dir=ckpt, sources=default_sources()
    )
    name = str(cm.metadata.get("name", "chatmodel"))
    return LocalModel(name, Path(ckpt), model, settings, repo)


class LocalServer:
    """Triton plus the OpenAI-compatible front, started and stopped together."""

    def __init__(
        self, local: LocalModel, workdir: Path, ports: Ports, openai_port: int | None
    ) -> None:
        self.local = local
        self.workdir = workdir
        self.ports = ports
        self.openai_port = openai_port
        repo_dir = write_repository(local.repository, workdir / "model_repository")
        self.triton = TritonServer(repo_dir, ports, log_path=workdir / "tritonserver.log")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._front_stop: asyncio.Event | None = None
        self._front_error: BaseException | None = None

    @property
    def openai_url(self) -> str | None:
        return f"http://127.0.0.1:{self.openai_port}/v1" if self.openai_port else None

    def start(self, timeout_s: float = 300.0) -> LocalServer:
        self.triton.start()
        self.triton.wait_ready(timeout_s)
        if self.openai_port:
            self._start_front()
        return self

    def _start_front(self) -> None:
        from chatmodel_operator.runtime.openai_front import run_front

        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._front_stop = asyncio.Event()
            assert self.openai_port is not None
            try:
                loop.run_until_complete(
                    run_front(
                        triton_http=self.triton.http_url,
                        model_name=self.local.name,
                        port=self.openai_port,
                        stop=self._front_stop,
                        ready=ready,
                        max_tokens_default=min(512, self.local.settings.max_output_length),
                    )
                )
            except Exception as exc:  # reported by _start_front, in the caller's thread
                self._front_error = exc
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="openai-front", daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._front_error is not None:
            why = f": {self._front_error}" if self._front_error is not None else ""
            raise ServerError(
                f"the OpenAI-compatible front did not start on port {self.openai_port}{why}"
            )

    def stop(self) -> None:
        if self._loop is not None and self._front_stop is not None:
            with contextlib.suppress(RuntimeError):  # the front failed and closed its loop
                self._loop.call_soon_threadsafe(self._front_stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.triton.stop()

    def __enter__(self) -> LocalServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def endpoints(self) -> list[tuple[str, str]]:
        out = [
            ("HTTP (KServe v2, generate)", f"{self.triton.http_url}/v2/models/ensemble/generate"),
            ("gRPC", self.triton.grpc_url),
            ("metrics", self.triton.metrics_url),
        ]
        if self.openai_url:
            out.append(("OpenAI-compatible", f"{self.openai_url}/chat/completions"))
        return out


def cmd_serve(args: argparse.Namespace) -> int:
    cm = load_chatmodel(args.file)
    local = prepare_local(cm, max_batch_size=args.max_batch_size)
    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    openai_port = args.openai_port
    flags = {"--http-port": ports.http, "--grpc-port": ports.grpc, "--metrics-port": ports.metrics}
    if openai_port:
        flags["--openai-port"] = openai_port
    check_ports(flags)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="chatmodel-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = LocalServer(local, workdir, ports, openai_port or None)
    print(f"serving {local.name} ({cm.spec.model.source}) from {workdir}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for label, url in server.endpoints():
            print(f"  {label:28} {url}", flush=True)
        print("Ctrl-C stops.", flush=True)
        while not stop.wait(0.5):
            proc = server.triton.process
            if proc is not None and proc.poll() is not None:
                print(f"tritonserver exited ({proc.returncode}):\n{server.triton.log_tail()}")
                return 1
    finally:
        print("stopping ...", flush=True)
        server.stop()
        for s, handler in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(s, handler)
    print("stopped.", flush=True)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve a ChatModel with a file:// checkpoint on a local Triton server"
    )
    p.add_argument("file", help="ChatModel YAML whose spec.model.source is file:///...")
    p.add_argument("--http-port", type=PORT, default=8000)
    p.add_argument("--grpc-port", type=PORT, default=8001)
    p.add_argument("--metrics-port", type=PORT, default=8002)
    p.add_argument(
        "--openai-port", type=PORT_OR_OFF, default=9000, help="OpenAI-compatible API (0: off)"
    )
    p.add_argument("--max-batch-size", type=bounded(int, 1, 4096), default=DEFAULT_LOCAL_BATCH)
    p.add_argument("--workdir", help="where the model repository and logs go (default: temp)")
    p.set_defaults(func=cmd_serve)
