"""``chatmodel chat URL [--stream] [--system TEXT] MESSAGE``: one turn with a served model.

It speaks gRPC through ``tritonclient`` (Triton's HTTP endpoint takes no decoupled models, and
generate_stream is not in ``tritonclient.http``) to ``ensemble`` by default, or any model with
the same tensors (``--model tensorrt_llm_bls``). The reply is printed as it streams.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from chatmodel_operator.cli_args import bounded
from chatmodel_operator.triton.textproc import envelope


@dataclass
class Reply:
    text: str
    chunks: list[str] = field(default_factory=list)
    first_token_s: float | None = None
    total_s: float = 0.0


def _grpc_address(url: str) -> str:
    for prefix in ("grpc://", "http://", "https://"):
        url = url.removeprefix(prefix)
    return url.rstrip("/")


def unreachable_hint(url: str) -> str:
    """What to fix when nothing answers gRPC at ``url``: Triton's HTTP or metrics port, or no
    port at all, is most likely the wrong address; otherwise the server is not running there."""
    address = _grpc_address(url)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"; fix: give the gRPC address with its port (host:port, 8001 by default), not {url}"
    if port in ("8000", "8002"):
        return (
            f"; fix: port {port} is Triton's HTTP or metrics port by default, and chat speaks "
            "gRPC: give the gRPC port (8001 by default)"
        )
    return f"; fix: start the server (chatmodel serve) or check that {address} is its gRPC port"


def chat(
    url: str,
    message: str,
    *,
    system: str | None = None,
    history: list[dict[str, str]] | None = None,
    stream: bool = True,
    model: str = "ensemble",
    max_tokens: int = 256,
    timeout_s: float = 120.0,
    out: TextIO | None = None,
    extra: dict[str, Any] | None = None,
) -> Reply:
    """Send one user message (after ``history``) and collect the reply; chunks are written to
    ``out`` as they arrive when given."""
    import tritonclient.grpc as grpcclient

    messages = [{"role": "system", "content": system}] if system else []
    messages += [*(history or []), {"role": "user", "content": message}]
    inputs = []

    def add(name: str, value: Any, dtype: str) -> None:
        arr = np.array([[value]], dtype=object if dtype == "BYTES" else None)
        if dtype != "BYTES":
            arr = arr.astype({"INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32}[dtype])
        tensor = grpcclient.InferInput(name, list(arr.shape), dtype)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)

    add("text_input", envelope(messages).encode("utf-8"), "BYTES")
    add("max_tokens", max_tokens, "INT32")
    add("stream", stream, "BOOL")
    for name, value in (extra or {}).items():
        add(name, value, "FP32" if isinstance(value, float) else "INT32")
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(_grpc_address(url))
    start = time.perf_counter()
    reply = Reply("")
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        try:
            client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        except Exception:
            # The stream had failed already (no server there): its callback has the reason.
            with contextlib.suppress(queue.Empty):
                _, error = results.get(timeout=2)
                if error is not None:
                    raise RuntimeError(str(error)) from None
            raise
        while True:
            result, error = results.get(timeout=timeout_s)
            if error is not None:
                raise RuntimeError(str(error))
            response = result.get_response()
            output = result.as_numpy("text_output")
            if output is not None and output.size:
                text = b"".join(output.reshape(-1)).decode("utf-8")
                if text:
                    if reply.first_token_s is None:
                        reply.first_token_s = time.perf_counter() - start
                    reply.chunks.append(text)
                    if out is not None:
                        out.write(text)
                        out.flush()
            final = response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    reply.total_s = time.perf_counter() - start
    reply.text = "".join(reply.chunks)
    return reply


def cmd_chat(args: argparse.Namespace) -> int:
    try:
        reply = chat(
            args.url,
            args.message,
            system=args.system,
            stream=args.stream,
            model=args.model,
            max_tokens=args.max_tokens,
            out=sys.stdout,
        )
    except Exception as exc:
        hint = unreachable_hint(args.url) if "UNAVAILABLE" in str(exc) else ""
        print(f"\nerror: {exc}{hint}", file=sys.stderr)
        return 1
    print()
    if args.verbose and reply.first_token_s is not None:
        print(
            f"first token {reply.first_token_s * 1000:.0f} ms, "
            f"total {reply.total_s * 1000:.0f} ms, {len(reply.chunks)} chunks",
            file=sys.stderr,
        )
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="send one message to a served model and print the reply")
    p.add_argument("url", help="Triton gRPC address, e.g. localhost:8001")
    p.add_argument("message")
    p.add_argument("--stream", action="store_true", help="stream the reply token by token")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--model", default="ensemble", help="ensemble (default) or tensorrt_llm_bls")
    p.add_argument("--max-tokens", type=bounded(int, 1), default=256)
    p.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")
    p.set_defaults(func=cmd_chat)
