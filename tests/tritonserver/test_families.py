"""Every seed family's tiny checkpoint on a real Triton (CPU): ensemble and BLS, generate and
generate_stream, the family's chat format and stop token, Chinese streamed without U+FFFD."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tests.conftest import REPO
from tests.tritonserver.helpers import (
    conversation_body,
    generate,
    local_server,
    metric,
    stream_text,
)
from tokenizers import Tokenizer

from chatmodel_operator.catalog.families import FAMILIES
from chatmodel_operator.runtime.serve import LocalServer
from chatmodel_operator.runtime.tiny_checkpoint import CONVERSATIONS, SEED_FAMILIES
from chatmodel_operator.triton.textproc import envelope

pytestmark = pytest.mark.triton
MODELS = ["ensemble", "tensorrt_llm_bls"]
GOLDEN = json.loads((REPO / "tests/golden/chat_formats.json").read_text())
CHINESE = [c for c in CONVERSATIONS if any("\u4e00" <= ch <= "\u9fff" for ch in c.reply)]
# Yi's and TeleChat's published defaults sample; the tests ask for greedy decoding.
GREEDY = {"top_k": 1}


@pytest.fixture(scope="module", params=SEED_FAMILIES)
def served(
    request: pytest.FixtureRequest,
    tiny: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, LocalServer]]:
    family = request.param
    checkpoint = tiny(family)
    with local_server(checkpoint, family, tmp_path_factory.mktemp(family)) as server:
        yield family, checkpoint, server


@pytest.mark.parametrize("model", MODELS)
def test_generate_answers_every_conversation(
    served: tuple[str, Path, LocalServer], model: str
) -> None:
    _, _, server = served
    for conv in CONVERSATIONS:
        body = conversation_body(conv, **GREEDY)
        status, doc = generate(server.triton.http_url, model, body)
        assert status == 200, doc
        assert doc["text_output"] == conv.reply


def test_plain_text_input_is_rendered_as_a_user_turn(served: tuple[str, Path, LocalServer]) -> None:
    _, _, server = served
    status, doc = generate(
        server.triton.http_url, "ensemble", {"text_input": "你好", "max_tokens": 100, **GREEDY}
    )
    assert status == 200 and doc["text_output"] == CONVERSATIONS[0].reply


@pytest.mark.parametrize("model", MODELS)
def test_chinese_streams_in_pieces_without_replacement_chars(
    served: tuple[str, Path, LocalServer], model: str
) -> None:
    _, _, server = served
    for conv in CHINESE:
        body = conversation_body(conv, **GREEDY)
        chunks = stream_text(server.triton.http_url, model, body)
        assert all("\ufffd" not in c for c in chunks), chunks
        assert "".join(chunks) == conv.reply
        assert len([c for c in chunks if c]) >= len(conv.reply) // 2, "not streamed"


def test_generation_stops_at_the_familys_stop_token(
    served: tuple[str, Path, LocalServer],
) -> None:
    """The engine generated exactly the reply's tokens plus the stop token, far below
    max_tokens: it stopped on the family's stop token (which is not in the text)."""
    family, checkpoint, server = served
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokens = "chatmodel_engine_generated_tokens_total"
    for conv in CONVERSATIONS[:3]:
        before = metric(server.triton.metrics_url, tokens)
        body = conversation_body(conv, 300, **GREEDY)
        status, doc = generate(server.triton.http_url, "ensemble", body)
        assert status == 200 and doc["text_output"] == conv.reply
        generated = metric(server.triton.metrics_url, tokens) - before
        expected = len(tok.encode(conv.reply, add_special_tokens=False).ids) + 1
        assert generated == expected < 300
        assert FAMILIES[family].stop_token().text not in doc["text_output"]


def test_preprocessing_renders_the_golden_prompt_and_the_familys_end_id(
    served: tuple[str, Path, LocalServer],
) -> None:
    family, checkpoint, server = served
    client = grpcclient.InferenceServerClient(server.triton.grpc_url)
    query = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
    query.set_data_from_numpy(
        np.array([[envelope(GOLDEN["messages_with_system"]).encode()]], dtype=object)
    )
    length = grpcclient.InferInput("REQUEST_OUTPUT_LEN", [1, 1], "INT32")
    length.set_data_from_numpy(np.array([[16]], dtype=np.int32))
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("INPUT_ID", "OUT_END_ID")]
    result = client.infer("preprocessing", [query, length], outputs=wanted)
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    golden = GOLDEN["prompts"][family]["with_system"]
    assert (
        result.as_numpy("INPUT_ID")[0].tolist() == tok.encode(golden, add_special_tokens=False).ids
    )
    assert int(result.as_numpy("OUT_END_ID")[0][0]) == FAMILIES[family].stop_token().id
