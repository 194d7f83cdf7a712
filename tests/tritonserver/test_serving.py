"""One real Triton serving a tiny SUS-Chat: 16 concurrent streams, clients that disconnect free
their slot, malformed requests get a 400 and the server stays up, the repository loads
cleanly, the OpenAI-compatible API (official client) and ``chatmodel chat``."""

from __future__ import annotations

import http.client
import io
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.tritonserver.helpers import (
    conversation_body,
    generate,
    generate_stream,
    local_server,
    metric,
    stream_text,
)

from chatmodel_operator.cli import main as cli_main
from chatmodel_operator.runtime.serve import LocalServer
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS
from chatmodel_operator.triton.textproc import envelope

pytestmark = pytest.mark.triton
FAMILY = "sus-chat"
LONG = 3000  # tokens a disconnected client would otherwise keep the engine busy with
ACTIVE = "chatmodel_engine_active_sequences"
CANCELLED = "chatmodel_engine_cancelled_requests_total"
TOKENS = "chatmodel_engine_generated_tokens_total"


@pytest.fixture(scope="module")
def server(
    tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    with local_server(
        tiny(FAMILY),
        FAMILY,
        tmp_path_factory.mktemp("serving"),
        openai=True,
        max_batch_size=16,
        max_output_length=4096,
        max_sequence_length=5120,
    ) as srv:
        yield srv


def _body(i: int) -> dict[str, Any]:
    return conversation_body(CONVERSATIONS[i % len(CONVERSATIONS)])


def test_sixteen_concurrent_streams(server: LocalServer) -> None:
    models = ["ensemble", "tensorrt_llm_bls"]

    def one(i: int) -> tuple[str, str]:
        chunks = stream_text(server.triton.http_url, models[i % 2], _body(i))
        return "".join(chunks), CONVERSATIONS[i % len(CONVERSATIONS)].reply

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert [got for got, _ in results] == [want for _, want in results]
    assert all("\ufffd" not in got for got, _ in results)


def _open_stream(url: str, path: str, body: dict[str, Any]) -> http.client.HTTPConnection:
    """Start a streaming request and read its first events, leaving it running."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    seen = 0
    while seen < 3:
        line = resp.readline()
        assert line, "the stream ended early"
        seen += line.startswith(b"data:")
    return conn


def _wait_idle(server: LocalServer, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while metric(server.triton.metrics_url, ACTIVE) > 0:
        assert time.monotonic() < deadline, "the engine still holds the slot"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("route", "path"),
    [
        ("bls", "/v2/models/tensorrt_llm_bls/generate_stream"),
        ("openai", "/v1/chat/completions"),
        ("openai-bls", "/v1/chat/completions"),
        ("engine", "/v2/models/tensorrt_llm/generate_stream"),
    ],
)
def test_client_that_disconnects_frees_its_slot(
    server: LocalServer, route: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream asked for thousands of tokens (end_id that never comes); its client reads three
    chunks and hangs up. The engine stops within a moment, long before the tokens asked for,
    and the local front (in this process) logs no error for it."""
    _wait_idle(server)
    if route.startswith("openai"):
        assert server.openai_url is not None
        url = server.openai_url.removesuffix("/v1")
        body: dict[str, Any] = {
            "model": "tensorrt_llm_bls" if route == "openai-bls" else server.local.name,
            "messages": CONVERSATIONS[1].as_messages(),
            "max_tokens": LONG,
            "min_tokens": LONG,  # the stop token is masked until then
            "stream": True,
        }
    elif route == "engine":
        url = server.triton.http_url
        body = {
            "input_ids": [5, 6, 7],
            "input_lengths": 3,
            "request_output_len": LONG,
            "end_id": 99999,
            "streaming": True,
        }
    else:
        url = server.triton.http_url
        body = {**_body(1), "max_tokens": LONG, "end_id": 99999, "stream": True}
    cancelled, tokens = (metric(server.triton.metrics_url, m) for m in (CANCELLED, TOKENS))
    conn = _open_stream(url, path, body)
    assert metric(server.triton.metrics_url, ACTIVE) == 1
    conn.close()
    _wait_idle(server)
    assert metric(server.triton.metrics_url, CANCELLED) == cancelled + 1
    assert metric(server.triton.metrics_url, TOKENS) - tokens < LONG / 2
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("ensemble", {"text_input": "hi"}, "max_tokens"),
        ("ensemble", {"text_input": "hi", "max_tokens": 0}, "at least 1"),
        ("ensemble", {"text_input": "hi", "max_tokens": 10**6}, "maxOutputLength"),
        ("ensemble", {"text_input": "hi", "max_tokens": 5, "top_p": 3.0}, "top_p"),
        ("ensemble", {"text_input": "word " * 3000, "max_tokens": 5}, "maxInputLength"),
        ("tensorrt_llm_bls", {"text_input": '{"messages": []}', "max_tokens": 5}, "messages"),
        (
            "tensorrt_llm_bls",
            {"text_input": envelope([{"role": "robot", "content": "x"}]), "max_tokens": 5},
            "role",
        ),
        ("tensorrt_llm", {"input_ids": [1], "input_lengths": 1, "request_output_len": 0}, ">= 1"),
    ],
    ids=[
        "no-max-tokens",
        "zero-tokens",
        "too-many-tokens",
        "top-p",
        "prompt-too-long",
        "empty-messages",
        "bad-role",
        "engine-zero-tokens",
    ],
)
def test_malformed_requests_get_400_and_the_server_stays_up(
    server: LocalServer, model: str, body: dict[str, Any], message: str
) -> None:
    status, doc = generate(server.triton.http_url, model, body)
    assert status == 400, doc
    assert message in doc["error"]
    assert server.triton.ready()
    status, doc = generate(server.triton.http_url, "ensemble", _body(0))
    assert status == 200 and doc["text_output"] == CONVERSATIONS[0].reply


def test_repository_loads_without_warnings_or_unfilled_parameters(server: LocalServer) -> None:
    log = server.triton.log()
    assert "${" not in log and "not specified" not in log
    # No postprocessing: our Python engine decodes for its ensemble.
    for model in ("ensemble", "preprocessing", "tensorrt_llm", "tensorrt_llm_bls"):
        assert re.search(rf"successfully loaded '{model}'", log), model
    # Warnings and errors other than those of a machine without a GPU.
    gpu_less = ("CUDA", "cuda", "NVML", "DCGM", "pinned memory", "CudaDriverHelper")
    noise = [
        line
        for line in log.splitlines()
        if line[:1] in ("W", "E") and line[1:2].isdigit() and not any(g in line for g in gpu_less)
    ]
    assert not noise, noise


def test_openai_client_chat_completions(server: LocalServer) -> None:
    client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0)
    names = [server.local.name, "ensemble", "tensorrt_llm_bls"]
    assert [m.id for m in client.models.list().data] == names
    conv = CONVERSATIONS[3]  # Chinese, multi-turn
    # The ChatModel's name, or Triton's model names as clients of Triton's frontend send them.
    for name in names:
        done = client.chat.completions.create(
            model=name, messages=conv.as_messages(), max_tokens=200
        )
        assert done.choices[0].message.content == conv.reply, name
        assert done.choices[0].finish_reason == "stop"
        assert done.model == name
        stream = client.chat.completions.create(
            model=name, messages=conv.as_messages(), max_tokens=200, stream=True
        )
        chunks = [c for c in stream if c.choices]
        deltas = [c.choices[0].delta.content or "" for c in chunks]
        assert "".join(deltas) == conv.reply, name
        assert len([d for d in deltas if d]) > 5 and all("\ufffd" not in d for d in deltas)
        assert {c.model for c in chunks} == {name}
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(
            model=server.local.name,
            messages=[{"role": "robot", "content": "x"}],  # type: ignore[list-item]
        )
    with pytest.raises(openai.NotFoundError, match="tensorrt_llm_bls"):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


def test_openai_client_completions(server: LocalServer) -> None:
    """The legacy route: the prompt is one user turn in the model's chat format."""
    client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0)
    conv = CONVERSATIONS[0]  # one Chinese user turn
    ((_, prompt),) = conv.messages
    done = client.completions.create(model=server.local.name, prompt=prompt, max_tokens=200)
    assert done.object == "text_completion"
    assert done.choices[0].text == conv.reply
    assert done.choices[0].finish_reason == "stop"
    stream = client.completions.create(
        model=server.local.name, prompt=prompt, max_tokens=200, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == conv.reply
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all("\ufffd" not in c.choices[0].text for c in chunks)
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=server.local.name, prompt=prompt, echo=True)


def test_chat_command_streams_a_reply(server: LocalServer) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(["chat", server.triton.grpc_url, "--stream", "你好"])
    assert code == 0
    assert out.getvalue().strip() == CONVERSATIONS[0].reply
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(
            [
                "chat",
                server.triton.grpc_url,
                "--model",
                "tensorrt_llm_bls",
                "--system",
                "You are a helpful assistant.",
                "What is Triton?",
            ]
        )
    assert code == 0 and out.getvalue().strip() == CONVERSATIONS[2].reply


# --- usage and finish_reason, from the engine's own counts ---------------------------------


def _engine_tokens(server: LocalServer) -> float:
    return metric(server.triton.metrics_url, TOKENS)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_every_response_carries_the_engines_counts_as_the_openai_frontend_reads_them(
    server: LocalServer, model: str
) -> None:
    """What Triton's OpenAI frontend does with a TensorRT-LLM model (server 2.64+): it sends
    both return_num_* flags and reads num_input_tokens and num_output_tokens from a response;
    streamed, it takes the prompt's count once and adds up the completion's counts. The engine
    counts every token it samples, the end id too: that is the check on the completion."""
    conv = CONVERSATIONS[3]
    flags = {"return_num_input_tokens": True, "return_num_output_tokens": True}
    before = _engine_tokens(server)
    status, doc = generate(server.triton.http_url, model, conversation_body(conv, **flags))
    assert status == 200, doc
    assert doc["text_output"] == conv.reply
    prompt, completion = doc["num_input_tokens"], doc["num_output_tokens"]
    assert prompt > 10
    assert _engine_tokens(server) - before == completion + 1  # + the end id, not an answer's
    before = _engine_tokens(server)
    events = generate_stream(
        server.triton.http_url, model, {**conversation_body(conv, **flags), "stream": True}
    )
    counted = [e for e in events if "num_output_tokens" in e]
    assert counted, events
    assert {e["num_input_tokens"] for e in counted} == {prompt}
    assert sum(e["num_output_tokens"] for e in counted) == completion
    assert _engine_tokens(server) - before == completion + 1
    assert "".join(e.get("text_output", "") for e in events) == conv.reply


def test_openai_client_usage_and_finish_reason(server: LocalServer) -> None:
    client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0)
    conv = CONVERSATIONS[3]
    _, doc = generate(server.triton.http_url, "ensemble", conversation_body(conv))
    full = doc["num_output_tokens"]
    for name in ["ensemble", "tensorrt_llm_bls"]:
        for max_tokens, finish, completion in ((200, "stop", full), (5, "length", 5)):
            done = client.chat.completions.create(
                model=name, messages=conv.as_messages(), max_tokens=max_tokens
            )
            assert done.choices[0].finish_reason == finish, (name, max_tokens)
            assert done.usage is not None
            assert done.usage.completion_tokens == completion
            assert done.usage.prompt_tokens == doc["num_input_tokens"]
            assert done.usage.total_tokens == completion + doc["num_input_tokens"]
            chunks = list(
                client.chat.completions.create(
                    model=name,
                    messages=conv.as_messages(),
                    max_tokens=max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].choices == [] and chunks[-1].usage == done.usage
            assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == finish
        text = client.completions.create(model=name, prompt="你好", max_tokens=3)
        assert text.choices[0].finish_reason == "length"
        assert text.usage is not None and text.usage.completion_tokens == 3


def _labelled(server: LocalServer, name: str, model: str) -> float:
    with urllib.request.urlopen(server.triton.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_a_streamed_answer_is_timed_once_to_its_first_token_and_between_each_other(
    server: LocalServer, model: str
) -> None:
    """One time to first token, and one inter-token observation per later response with
    tokens (per response, not per token), under the client-facing model's label."""
    ttft, itl = "chatmodel_time_to_first_token_ms", "chatmodel_inter_token_latency_ms"
    conv = CONVERSATIONS[3]
    flags = {"return_num_output_tokens": True, "stream": True}

    # Our models send what they counted once idle a moment (the engines after 0.1 s): start
    # from counts that hold still for a second, so earlier tests' last observations are in.
    def counts() -> dict[str, float]:
        return {n: _labelled(server, f"{n}_count", model) for n in (ttft, itl)}

    before, deadline = counts(), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if (now := counts()) == before:
            break
        before = now
    first_sum = _labelled(server, f"{ttft}_sum", model)
    events = generate_stream(server.triton.http_url, model, conversation_body(conv, **flags))
    responses = [e["num_output_tokens"] for e in events if e.get("num_output_tokens", 0) > 0]
    assert sum(responses) > 5
    want = {ttft: 1, itl: len(responses) - 1}

    def added() -> dict[str, float]:
        return {n: got - before[n] for n, got in counts().items()}

    # The stream's last response may reach us before its model's last observation reaches the
    # metrics endpoint: wait for the counts (the guard only keeps a broken model from hanging
    # the suite), then they must be exact.
    deadline = time.monotonic() + 60
    while any(got < want[n] for n, got in added().items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert added() == want
    assert _labelled(server, f"{ttft}_sum", model) > first_sum
