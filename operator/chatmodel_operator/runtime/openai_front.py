"""A small OpenAI-compatible front (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``)
for local serving.

It holds no model and renders nothing: each request becomes one call to Triton's generate (or
generate_stream) endpoint of ``ensemble`` (or of ``tensorrt_llm_bls``, when the request names it),
with the messages in ``text_input`` as the ``{"messages": [...]}`` envelope (a completion's prompt
as plain text, which preprocessing takes as one user turn, as it does from every client), so our
preprocessing model applies the chat format and the truncation rules exactly as for every other
client. Text deltas come back UTF-8 safe from postprocessing and are re-framed as OpenAI chunks.

A request's ``model`` is the ChatModel's name or one of Triton's model names, which is what the
clients of Triton's own OpenAI frontend in a pod send: the same client code works on both.

Triton 2.51 does not cancel a running ensemble step when its client leaves, so this front gives
each request an id (Triton passes it down to the engine) and, when its own client disconnects,
stops the engine's request the TensorRT-LLM way: a request with the same id and ``stop``. That
frees the engine's slot at once. The BLS does the same by itself when this front hangs up on it.

Token counts come from the engine: every response of ``ensemble`` and ``tensorrt_llm_bls``
carries ``num_input_tokens`` (the prompt as the engine was given it) and ``num_output_tokens``
(the engine's tokens behind that response), the outputs Triton's own frontend reads too. So
``usage`` never re-tokenizes text, and ``finish_reason`` is ``length`` exactly when the engine
returned ``max_tokens`` tokens (the engine stops on its end id or a stop word before that, and
never counts the end id as a token of the answer).

In a pod, Triton's own OpenAI frontend serves the same route where the image ships it (see
docs/data-plane.md); this one is for ``chatmodel serve`` and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from chatmodel_operator.triton.textproc import RequestError, envelope, normalize_messages

TRITON_MODEL = "ensemble"
BLS_MODEL = "tensorrt_llm_bls"
ENGINE_MODEL = "tensorrt_llm"


def served_models(name: str) -> dict[str, str]:
    """The names a request's ``model`` may take, each with the Triton model it goes to: the
    ChatModel's name (the ensemble), and Triton's own names, as Triton's frontend lists them."""
    return {name: TRITON_MODEL, TRITON_MODEL: TRITON_MODEL, BLS_MODEL: BLS_MODEL}


class _UpstreamError(Exception):
    """Triton put an error in the stream it was sending."""


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status)


def _number(body: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{key} must be a number")
    if kind is int and value != int(value):
        raise RequestError(f"{key} must be an integer")
    if not low <= value <= high:
        raise RequestError(f"{key} must be within [{low}, {high}]")
    return kind(value)


def _generation(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """The generate request's fields common to chat and completion requests, but the input."""
    if body.get("n", 1) != 1:
        raise RequestError("n: only one choice per request is supported")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError("max_tokens must be a positive integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise RequestError("stream_options: only allowed when stream is true")
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise RequestError('stream_options must be an object like {"include_usage": true}')
    out: dict[str, Any] = {
        "max_tokens": max_tokens,
        "stream": stream,
        # Counts from the engine; our models always return them, Triton's frontend asks so.
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
    }
    for key, name, kind, low, high in (
        ("temperature", "temperature", float, 0.0, 2.0),
        ("top_p", "top_p", float, 0.0, 1.0),
        ("presence_penalty", "presence_penalty", float, -2.0, 2.0),
        ("frequency_penalty", "frequency_penalty", float, -2.0, 2.0),
        ("seed", "seed", int, 0, 2**63 - 1),
        # Not OpenAI's, but vLLM's OpenAI server takes them too (clients send them in
        # extra_body), and they are Triton's fields.
        ("top_k", "top_k", int, 0, 2**31 - 1),
        ("min_tokens", "min_tokens", int, 0, 2**31 - 1),
    ):
        value = _number(body, key, kind, low, high)
        if value is not None:
            out[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("stop must be a string or a list of strings")
        out["stop_words"] = stop
    return out


def _refuse(unsupported: dict[str, bool]) -> None:
    """A field this front cannot honour is an error, not silently ignored."""
    for key, asked in unsupported.items():
        if asked:
            raise RequestError(f"{key} is not supported here; leave it out")


def triton_request(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """The generate request for one OpenAI chat completion request (raises RequestError)."""
    messages = normalize_messages(body.get("messages"))
    response_format = body.get("response_format")
    _refuse(
        {
            # No tool calling: a client that offers tools would get text it takes for an answer.
            "tools": bool(body.get("tools")) and body.get("tool_choice") != "none",
            "response_format": response_format is not None
            and not (isinstance(response_format, dict) and response_format.get("type") == "text"),
            "logprobs": bool(body.get("logprobs")) or body.get("top_logprobs") is not None,
        }
    )
    return {"text_input": envelope(messages), **_generation(body, default_max_tokens)}


def triton_completion_request(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """The generate request for one OpenAI (legacy) completion request (raises RequestError).

    The prompt goes in as plain text, which preprocessing renders as one user turn in the
    model's chat format: these are chat models."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt must be a non-empty string (or a list of one string)")
    _refuse(
        {
            "echo": bool(body.get("echo")),
            "logprobs": body.get("logprobs") is not None,
            "suffix": body.get("suffix") is not None,
            "best_of": body.get("best_of", 1) != 1,
        }
    )
    return {"text_input": prompt, **_generation(body, default_max_tokens)}


@dataclass(frozen=True)
class _Kind:
    """How one OpenAI route frames its answers."""

    request: Callable[[dict[str, Any], int], dict[str, Any]]
    id_prefix: str
    object: str
    chunk_object: str
    chat: bool

    def choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def opening_choice(self) -> dict[str, Any] | None:
        """The chunk a stream starts with: the role, as OpenAI's chat streams do."""
        if self.chat:
            delta = {"role": "assistant", "content": ""}
            return {"index": 0, "delta": delta, "finish_reason": None}
        return None

    def chunk_choice(self, text: str | None, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}


CHAT = _Kind(triton_request, "chatcmpl-", "chat.completion", "chat.completion.chunk", True)
COMPLETION = _Kind(triton_completion_request, "cmpl-", "text_completion", "text_completion", False)


@dataclass
class Usage:
    """The engine's token counts for one answer, added up over its responses."""

    prompt_tokens: int | None = None
    completion_tokens: int = 0

    def add(self, doc: dict[str, Any]) -> None:
        """Count one generate response: the prompt's count is the same in each of them, the
        completion's is the engine's tokens behind that response."""
        prompt, completion = doc.get("num_input_tokens"), doc.get("num_output_tokens")
        if prompt is not None:
            self.prompt_tokens = int(_first(prompt))
        if completion is not None:
            self.completion_tokens += int(_first(completion))

    def document(self) -> dict[str, int] | None:
        if self.prompt_tokens is None:  # a model that returns no counts
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def finish_reason(self, max_tokens: int) -> str:
        # The engines stop before max_tokens on their end id (which is not counted) or a stop
        # word, so only an answer that used every token it was allowed was cut by the limit.
        return "length" if self.completion_tokens >= max_tokens else "stop"


def _first(value: Any) -> Any:
    """Triton's JSON gives a [1] tensor as a number, a batched one as a list."""
    while isinstance(value, list):
        value = value[0]
    return value


@dataclass(frozen=True)
class _Call:
    """One request in flight: how it is framed, the name it answers as, where it goes."""

    kind: _Kind
    model: str  # as the request named it (the ChatModel's name when it named none)
    triton_model: str
    request_id: str
    max_tokens: int
    include_usage: bool = False  # stream_options.include_usage

    @property
    def answer_id(self) -> str:
        return f"{self.kind.id_prefix}{self.request_id}"

    def frame(
        self, choices: list[dict[str, Any]], *, chunk: bool, usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.answer_id,
            "object": self.kind.chunk_object if chunk else self.kind.object,
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }
        # Streamed with include_usage, as OpenAI: null on every chunk but the last.
        if not chunk or self.include_usage:
            doc["usage"] = usage
        return doc


class Front:
    def __init__(self, triton_http: str, model_name: str, max_tokens_default: int) -> None:
        self.triton = triton_http.rstrip("/")
        self.model = model_name
        self.routes = served_models(model_name)
        self.max_tokens_default = max_tokens_default
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.close)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "chatmodel"}
            for name in self.routes
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, COMPLETION)

    async def _serve(self, request: web.Request, kind: _Kind) -> web.StreamResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model = body.get("model") or self.model
        if not isinstance(model, str) or model not in self.routes:
            names = ", ".join(repr(name) for name in self.routes)
            return _error(
                404, f"model {model!r} is not served here; use one of {names}", "not_found_error"
            )
        try:
            payload = kind.request(body, self.max_tokens_default)
        except RequestError as exc:
            return _error(400, str(exc))
        # A number: TensorRT-LLM's C++ backend takes request ids that parse as integers.
        options = body.get("stream_options") or {}
        call = _Call(
            kind,
            model,
            self.routes[model],
            str(secrets.randbits(62)),
            max_tokens=payload["max_tokens"],
            include_usage=bool(options.get("include_usage", False)),
        )
        payload["id"] = call.request_id
        try:
            if payload["stream"]:
                return await self._stream(request, payload, call)
            return await self._complete(payload, call)
        except asyncio.CancelledError:
            # Our client left (run_front has aiohttp cancel the handler then, even while no
            # text is coming to write): stop the engine, shielded from this task's cancellation.
            await asyncio.shield(self._hang_up(call))
            raise
        except aiohttp.ClientError as exc:  # before any answer: Triton is not there
            return _error(
                503, f"Triton is not reachable at {self.triton}: {exc}", "service_unavailable"
            )

    async def _hang_up(self, call: _Call) -> None:
        """Our client left: stop the engine's request. (The BLS gives the engine its own id,
        and stops it itself when we hang up on it.)"""
        if call.triton_model == TRITON_MODEL:
            await self._stop(call.request_id)

    async def _stop(self, request_id: str) -> None:
        assert self.session is not None
        body = {
            "id": request_id,
            "input_ids": [0],
            "input_lengths": 1,
            "request_output_len": 1,
            "stop": True,
        }
        url = f"{self.triton}/v2/models/{ENGINE_MODEL}/generate"
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with self.session.post(url, json=body) as resp:
                await resp.read()

    @staticmethod
    def _chunk(
        call: _Call, choice: dict[str, Any] | None, usage: dict[str, int] | None = None
    ) -> bytes:
        doc = call.frame([] if choice is None else [choice], chunk=True, usage=usage)
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()

    async def _complete(self, payload: dict[str, Any], call: _Call) -> web.Response:
        assert self.session is not None
        url = f"{self.triton}/v2/models/{call.triton_model}/generate"
        async with self.session.post(url, json=payload) as resp:
            doc = await resp.json(content_type=None)
            if resp.status != 200 or "error" in doc:
                return _error(resp.status if resp.status != 200 else 500, str(doc.get("error")))
        usage = Usage()
        usage.add(doc)
        choice = call.kind.choice(doc.get("text_output", ""), usage.finish_reason(call.max_tokens))
        return web.json_response(call.frame([choice], chunk=False, usage=usage.document()))

    async def _stream(
        self, request: web.Request, payload: dict[str, Any], call: _Call
    ) -> web.StreamResponse:
        assert self.session is not None
        kind = call.kind
        url = f"{self.triton}/v2/models/{call.triton_model}/generate_stream"
        # A client that leaves cancels this task (see _serve), or makes a write raise first.
        async with self.session.post(url, json=payload) as upstream:
            if upstream.status != 200:
                text = await upstream.text()
                try:
                    message = str(json.loads(text.removeprefix("data:").strip()).get("error"))
                except ValueError:
                    message = text
                return _error(upstream.status, message)
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            error = None
            usage = Usage()
            try:
                opening = kind.opening_choice()
                if opening is not None:
                    await resp.write(self._chunk(call, opening))
                await self._relay(resp, upstream, call, usage)
            except aiohttp.ClientPayloadError as exc:  # Triton went away in the middle
                error = f"Triton ended the stream early: {exc}"
            except _UpstreamError as exc:
                error = str(exc)
            except ConnectionResetError:  # our client left: aiohttp ends resp quietly
                await self._hang_up(call)
                return resp
            try:
                if error is None:
                    finish = usage.finish_reason(call.max_tokens)
                    await resp.write(self._chunk(call, kind.chunk_choice(None, finish)))
                    if call.include_usage:  # OpenAI's last chunk: no choices, the usage
                        await resp.write(self._chunk(call, None, usage.document()))
                else:
                    err = {"error": {"message": error, "type": "server_error"}}
                    await resp.write(f"data: {json.dumps(err)}\n\n".encode())
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
            except ConnectionResetError:  # our client left after the last token
                pass
            return resp

    async def _relay(
        self,
        resp: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        call: _Call,
        usage: Usage,
    ) -> None:
        """Forward Triton's stream as chunks until it ends, counting the engine's tokens."""
        async for raw in upstream.content:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            doc = json.loads(line[5:])
            if "error" in doc:
                raise _UpstreamError(str(doc["error"]))
            usage.add(doc)
            text = doc.get("text_output", "")
            if text:
                await resp.write(self._chunk(call, call.kind.chunk_choice(text, None)))


async def run_front(
    *,
    triton_http: str,
    model_name: str,
    port: int,
    stop: asyncio.Event,
    ready: threading.Event | None = None,
    max_tokens_default: int = 512,
    host: str = "127.0.0.1",
) -> None:
    """Serve until ``stop`` is set."""
    front = Front(triton_http, model_name, max_tokens_default).app()
    # A client that hangs up cancels its handler at once, so the engine is stopped even while
    # nothing is being written to that client.
    runner = web.AppRunner(front, handler_cancellation=True)
    await runner.setup()
    try:  # also when the port cannot be had: the cleanup closes the front's client session
        await web.TCPSite(runner, host, port).start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
