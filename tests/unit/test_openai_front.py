"""The local OpenAI front: request building (OpenAI bodies in, Triton generate bodies out), and
what it answers when Triton is not there or goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chatmodel_operator.runtime.openai_front import (
    CHAT,
    COMPLETION,
    run_front,
    triton_completion_request,
    triton_request,
)
from chatmodel_operator.runtime.server import free_port
from chatmodel_operator.triton.textproc import RequestError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def test_chat_request_carries_the_conversation_and_the_sampling_fields() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "你好"},
        ],
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 3,
        "top_k": 40,
        "stop": "###",
        "stream": True,
        # What clients send by default, and may: no tool, plain text, no log probabilities.
        "tools": [],
        "response_format": {"type": "text"},
        "logprobs": False,
    }
    out = triton_request(body, default_max_tokens=512)
    assert json.loads(out.pop("text_input")) == {"messages": body["messages"]}
    assert out == {
        "max_tokens": 64,
        "stream": True,
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 3,
        "top_k": 40,
        "stop_words": ["###"],
    }


TOOL = {"type": "function", "function": {"name": "weather", "parameters": {}}}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "auto"}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "logprobs"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
    ],
)
def test_a_chat_request_that_cannot_be_honoured_names_its_field(
    extra: dict[str, object], field: str
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(RequestError, match=field):
        triton_request(body, default_max_tokens=16)


def test_tools_the_request_forbids_using_are_no_error() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL], "tool_choice": "none"}
    assert triton_request(body, default_max_tokens=16)["max_tokens"] == 16


def test_completion_request_sends_the_prompt_as_plain_text() -> None:
    out = triton_completion_request({"prompt": ["Hello"], "stop": ["\n\n"]}, default_max_tokens=99)
    assert out == {
        "text_input": "Hello",
        "max_tokens": 99,
        "stream": False,
        "stop_words": ["\n\n"],
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
    }
    assert (
        triton_completion_request({"prompt": "hi", "max_completion_tokens": 5}, 99)["max_tokens"]
        == 5
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": "a", "echo": True}, "echo"),
        ({"prompt": "a", "logprobs": 2}, "logprobs"),
        ({"prompt": "a", "suffix": "z"}, "suffix"),
        ({"prompt": "a", "best_of": 3}, "best_of"),
        ({"prompt": "a", "n": 2}, "n"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "temperature": 3}, "temperature"),
        ({"prompt": "a", "stop": [1]}, "stop"),
    ],
)
def test_a_completion_request_that_cannot_be_served_names_its_field(
    body: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestError, match=field):
        triton_completion_request(body, default_max_tokens=16)


def test_the_two_routes_frame_choices_as_openai_does() -> None:
    assert CHAT.choice("hi", "stop") == {
        "index": 0,
        "message": {"role": "assistant", "content": "hi"},
        "finish_reason": "stop",
    }
    assert CHAT.chunk_choice("hi", None) == {
        "index": 0,
        "delta": {"content": "hi"},
        "finish_reason": None,
    }
    assert CHAT.chunk_choice(None, "stop")["delta"] == {}
    assert COMPLETION.choice("hi", "stop") == {
        "index": 0,
        "text": "hi",
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert CHAT.opening_choice() == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": None,
    }
    assert COMPLETION.opening_choice() is None
    assert COMPLETION.chunk_choice(None, "stop")["text"] == ""
    assert (COMPLETION.object, CHAT.chunk_object) == ("text_completion", "chat.completion.chunk")


@contextlib.asynccontextmanager
async def _front(triton: str) -> AsyncIterator[str]:
    """A front over ``triton``, listening: its chat completions URL."""
    port, stop, ready = free_port(), asyncio.Event(), threading.Event()
    serving = asyncio.create_task(
        run_front(triton_http=triton, model_name="m", port=port, stop=stop, ready=ready)
    )
    try:
        for _ in range(500):
            if ready.is_set() or serving.done():
                break
            await asyncio.sleep(0.01)
        assert ready.is_set(), "the front did not listen"
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        stop.set()
        await serving


@contextlib.asynccontextmanager
async def _fake_triton(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """An HTTP server answering ``routes`` (path: handler) as Triton would: its URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _chat_body(stream: bool) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def _ask(triton: str, stream: bool) -> tuple[int, str]:
    """One chat request through a front whose Triton is ``triton``."""
    async with (
        _front(triton) as url,
        aiohttp.ClientSession() as session,
        session.post(url, json=_chat_body(stream)) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize("stream", [False, True])
def test_no_triton_behind_the_front_is_a_503_that_says_so(stream: bool) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    status, text = asyncio.run(_ask(dead, stream))
    assert status == 503
    assert json.loads(text)["error"]["message"].startswith(f"Triton is not reachable at {dead}")


def test_triton_gone_in_the_middle_of_a_stream_ends_it_with_an_error_event() -> None:
    async def run() -> tuple[int, str]:
        async def generate_stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"text_output": "\xe4\xbd\xa0"}\n\n')
            assert request.transport is not None
            request.transport.close()  # Triton dies
            return resp

        routes = {"/v2/models/ensemble/generate_stream": generate_stream}
        async with _fake_triton(routes) as triton:
            return await _ask(triton, True)

    status, text = asyncio.run(run())
    assert status == 200
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "你"}
    assert json.loads(events[-2])["error"]["message"].startswith("Triton ended the stream early")
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_while_nothing_is_written_stops_the_engine(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens that decode to nothing yet (a character's first bytes, skipped special tokens),
    or a whole answer not yet complete, give the front nothing to write to its client: only the
    hang-up itself can tell it the client left.

    No step waits a fixed time: the client hangs up once Triton has the request, and the fake
    engine never ends by itself, so the stop can only come from the hang-up (the waits below
    only keep a broken front from hanging the suite, and are long enough for a loaded host)."""
    guard_s = 60.0

    async def run() -> tuple[str, list[dict[str, object]]]:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        stops: list[dict[str, object]] = []
        stopped = asyncio.Event()

        async def generate_stream(request: web.Request) -> web.StreamResponse:
            started.set_result((await request.json())["id"])
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"text_output": "hi"}\n\n')
            try:
                while not stopped.is_set():  # the engine goes on, with nothing to show
                    await resp.write(b'data: {"text_output": ""}\n\n')
                    await asyncio.sleep(0.01)
            except ConnectionResetError:
                # The front hung up on Triton too (on a busy machine, often before its stop
                # arrives): Triton drops such a stream quietly. Only the front's log is checked.
                pass
            return resp

        async def generate(request: web.Request) -> web.Response:
            started.set_result((await request.json())["id"])
            await stopped.wait()  # the answer is not complete until then
            return web.json_response({"text_output": "hi"})

        async def engine(request: web.Request) -> web.Response:
            stops.append(await request.json())
            stopped.set()
            return web.json_response({"text_output": ""})

        routes = {
            "/v2/models/ensemble/generate_stream": generate_stream,
            "/v2/models/ensemble/generate": generate,
            "/v2/models/tensorrt_llm/generate": engine,
        }
        async with _fake_triton(routes) as triton, _front(triton) as url:
            async with aiohttp.ClientSession() as session:
                if stream:
                    async with session.post(url, json=_chat_body(True)) as resp:
                        assert (await resp.content.readline()).startswith(b"data: ")
                else:
                    asking = asyncio.create_task(session.post(url, json=_chat_body(False)))
                    await asyncio.wait_for(asyncio.shield(started), guard_s)
                    asking.cancel()  # hang up while the answer is not complete
                    with contextlib.suppress(asyncio.CancelledError):
                        await asking
            # Leaving the session closes the client's connection: the hang-up.
            await asyncio.wait_for(stopped.wait(), guard_s)
            return await started, stops

    request_id, stops = asyncio.run(run())
    assert [s["id"] for s in stops] == [request_id]
    assert stops[0]["stop"] is True
    assert not [r for r in caplog.records if r.levelname == "ERROR"], "a traceback was logged"


def _counted(text: str, prompt: int, new: int) -> bytes:
    doc = {"text_output": text, "num_input_tokens": prompt, "num_output_tokens": new}
    return f"data: {json.dumps(doc)}\n\n".encode()


async def _ask_body(triton: str, body: dict[str, Any], path: str = "chat/completions") -> str:
    async with (
        _front(triton) as url,
        aiohttp.ClientSession() as session,
        session.post(url.replace("chat/completions", path), json=body) as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def _events(text: str) -> list[Any]:
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize(
    ("engine_tokens", "max_tokens", "finish"),
    [([2, 1, 0], 3, "length"), ([2, 0], 3, "stop"), ([1, 1, 1], 5, "stop")],
    ids=["cut-by-max-tokens", "end-id-before", "stop-word"],
)
@pytest.mark.parametrize("route", ["chat/completions", "completions"])
def test_streamed_usage_and_finish_reason_come_from_the_engines_counts(
    engine_tokens: list[int], max_tokens: int, finish: str, route: str
) -> None:
    """Each response carries the engine's tokens behind it (0 for a final flush), so the usage
    chunk adds them up, and ``length`` means the engine used every token allowed."""

    async def run() -> str:
        async def generate_stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i, n in enumerate(engine_tokens):
                await resp.write(_counted("" if n == 0 else f"t{i}", 7, n))
            return resp

        body: dict[str, Any] = {
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if route == "completions":
            body["prompt"] = "hi"
        else:
            body["messages"] = [{"role": "user", "content": "hi"}]
        async with _fake_triton({"/v2/models/ensemble/generate_stream": generate_stream}) as t:
            return await _ask_body(t, body, route)

    events = _events(asyncio.run(run()))
    *answer, last = events
    assert last["choices"] == []
    done = sum(engine_tokens)
    assert last["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": done,
        "total_tokens": 7 + done,
    }
    assert all(e["usage"] is None for e in answer), "usage only on the last chunk"
    assert [e["choices"][0]["finish_reason"] for e in answer][-1] == finish
    assert all(e["choices"][0]["finish_reason"] is None for e in answer[:-1])


@pytest.mark.parametrize(("completion", "finish"), [(4, "length"), (3, "stop")])
def test_an_answer_not_streamed_has_usage_and_finish_reason(completion: int, finish: str) -> None:
    async def run() -> str:
        async def generate(request: web.Request) -> web.Response:
            doc = {"text_output": "hi", "num_input_tokens": [11], "num_output_tokens": [completion]}
            return web.json_response(doc)

        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        async with _fake_triton({"/v2/models/ensemble/generate": generate}) as triton:
            return await _ask_body(triton, body)

    doc = json.loads(asyncio.run(run()))
    assert doc["choices"][0]["finish_reason"] == finish
    assert doc["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": completion,
        "total_tokens": 11 + completion,
    }


def test_a_stream_without_include_usage_has_no_usage_field() -> None:
    async def run() -> str:
        async def generate_stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(_counted("hi", 3, 1))
            return resp

        async with _fake_triton({"/v2/models/ensemble/generate_stream": generate_stream}) as t:
            return await _ask_body(t, _chat_body(True))

    events = _events(asyncio.run(run()))
    assert all("usage" not in e and e["choices"] for e in events)


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        {"stream": True, "stream_options": [True]},
        {"stream": False, "stream_options": {"include_usage": True}},
        {"stream": "true"},
    ],
)
def test_bad_stream_options_name_the_field(extra: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(RequestError, match="stream"):
        triton_request(body, default_max_tokens=16)
