"""A real Triton on CPU serving our Python engine exports the gauges the llm-d router reads from
pods labelled ``llm-d.ai/engine-type: triton-tensorrt-llm``: nv_trt_llm_request_metrics
{request_type="waiting"|"scheduled"} and nv_trt_llm_kv_cache_block_metrics
{kv_cache_block_type="fraction"|"tokens_per"|"max"}, moving under load and back to zero."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.tritonserver.helpers import conversation_body, generate, local_server

from chatmodel_operator.runtime.serve import LocalServer
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS

pytestmark = pytest.mark.triton
FAMILY = "sus-chat"
SLOTS = 2
CLIENTS = 5  # three wait for a slot
TOKENS = 400  # per request; the stop token is masked until then (min_tokens)
MAX_SEQ = 1536
REQUESTS = "nv_trt_llm_request_metrics"
BLOCKS = "nv_trt_llm_kv_cache_block_metrics"


@pytest.fixture(scope="module")
def server(
    tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    with local_server(
        tiny(FAMILY),
        FAMILY,
        tmp_path_factory.mktemp("gauges"),
        max_batch_size=SLOTS,
        max_sequence_length=MAX_SEQ,
    ) as srv:
        yield srv


def gauges(url: str) -> dict[tuple[str, str], float]:
    """(family, request_type or kv_cache_block_type) -> value, from one scrape."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    pattern = rf"^({REQUESTS}|{BLOCKS}){{([^}}]*)}} (\S+)$"
    for family, labels, value in re.findall(pattern, text, re.MULTILINE):
        kind = re.search(r'(?:request_type|kv_cache_block_type)="([^"]*)"', labels)
        assert kind is not None, labels
        assert 'model="tensorrt_llm"' in labels
        out[(family, kind.group(1))] = float(value)
    return out


def _body(i: int) -> dict[str, Any]:
    conv = CONVERSATIONS[i % len(CONVERSATIONS)]
    return conversation_body(conv, max_tokens=TOKENS, min_tokens=TOKENS)


def test_gauges_move_under_load_and_go_back_to_zero(server: LocalServer) -> None:
    url = server.triton.metrics_url
    idle = gauges(url)
    blocks = -(-MAX_SEQ // 64)
    assert idle[(REQUESTS, "waiting")] == 0 and idle[(REQUESTS, "scheduled")] == 0
    assert idle[(BLOCKS, "fraction")] == 0
    assert idle[(BLOCKS, "tokens_per")] == 64
    assert idle[(BLOCKS, "max")] == SLOTS * blocks

    statuses: list[int] = []

    def one(i: int) -> None:
        status, _ = generate(server.triton.http_url, "ensemble", _body(i))
        statuses.append(status)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    seen: list[dict[tuple[str, str], float]] = []
    while any(t.is_alive() for t in threads):
        seen.append(gauges(url))
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=120)
    assert statuses == [200] * CLIENTS

    # Under load: the slots are full and the rest wait, as the router reads them.
    assert max(s[(REQUESTS, "scheduled")] for s in seen) == SLOTS
    assert max(s[(REQUESTS, "waiting")] for s in seen) >= 1
    assert all(s[(REQUESTS, "scheduled")] <= SLOTS for s in seen)
    assert all(s[(REQUESTS, "waiting")] <= CLIENTS - 1 for s in seen)
    fractions = [s[(BLOCKS, "fraction")] for s in seen]
    assert max(fractions) > 0 and all(0 <= f <= 1 for f in fractions)
    # A full slot holds its prompt and TOKENS generated tokens: the used blocks say so.
    assert max(s[(BLOCKS, "used")] for s in seen) >= TOKENS // 64
    # used and free are two gauges set one after the other: a scrape between the two sets may
    # see one new and one old, so under load each stays in range; their sum is checked at rest.
    for s in seen:
        assert 0 <= s[(BLOCKS, "used")] <= SLOTS * blocks
        assert 0 <= s[(BLOCKS, "free")] <= SLOTS * blocks

    # And back to zero once every request has finished.
    deadline = time.monotonic() + 10
    after = gauges(url)
    while (
        after[(REQUESTS, "scheduled")] or after[(BLOCKS, "used")]
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
        after = gauges(url)
    assert after[(REQUESTS, "waiting")] == 0
    assert after[(REQUESTS, "scheduled")] == 0
    assert after[(BLOCKS, "fraction")] == 0
    assert after[(BLOCKS, "used")] == 0 and after[(BLOCKS, "free")] == SLOTS * blocks
