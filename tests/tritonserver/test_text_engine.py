"""The vLLM layout on a real Triton, with a stand-in for the vLLM backend that speaks its tensor
contract (text_input, sampling_parameters, stream, exclude_input_in_output -> text_output):
preprocessing renders the family's prompt and vLLM's sampling JSON; ensemble and BLS stream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from tests.tritonserver.helpers import generate, stream_text

from chatmodel_operator.adapters.checkpoint import read_model_files
from chatmodel_operator.api.spec import ModelSource
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.runtime.server import Ports, TritonServer, write_repository
from chatmodel_operator.triton import Settings, chat_format
from chatmodel_operator.triton.repository import default_sources, vllm_layout
from chatmodel_operator.triton.textproc import envelope

pytestmark = pytest.mark.triton
GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "golden" / "chat_formats.json").read_text()
)

# Echoes what it was given, as JSON, streamed in small deltas like vLLM's backend.
STAND_IN = """
import json, threading
import numpy as np
import triton_python_backend_utils as pb_utils


def _get(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.serve, args=(request,)).start()
        return None

    def serve(self, request):
        sender = request.get_response_sender()
        doc = {
            "prompt": _get(request, "text_input").decode(),
            "sampling": json.loads(_get(request, "sampling_parameters").decode()),
            "exclude_input": bool(_get(request, "exclude_input_in_output")),
        }
        text = json.dumps(doc, ensure_ascii=False)
        stream = bool(_get(request, "stream"))
        pieces = [text[i : i + 3] for i in range(0, len(text), 3)] if stream else [text]
        for i, piece in enumerate(pieces):
            out = pb_utils.Tensor("text_output", np.array([piece.encode()], dtype=np.object_))
            flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == len(pieces) - 1 else 0
            sender.send(pb_utils.InferenceResponse([out]), flags=flags)
"""


@pytest.fixture(scope="module")
def server(
    tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    ckpt = tiny("yi-chat")
    source = ModelSource(source=f"file://{ckpt}", family="yi-chat")
    config, tokenizer_config = read_model_files(source.source)
    model = resolve_model(source, config=config, tokenizer_config=tokenizer_config)
    settings = Settings(
        max_batch_size=8,
        max_input_length=512,
        max_output_length=128,
        max_sequence_length=640,
        max_num_tokens=1024,
    )
    repo = vllm_layout(
        settings,
        chat_format(model),
        tokenizer_dir=str(ckpt),
        engine_dir=str(ckpt),
        sources=default_sources(),
    )
    config = PurePosixPath("vllm_model/config.pbtxt")
    assert 'backend: "vllm"' in repo[config]
    repo[config] = (
        repo[config]
        .replace('backend: "vllm"', 'backend: "python"')
        .replace("KIND_MODEL", "KIND_CPU")
    )
    repo[PurePosixPath("vllm_model/1/model.py")] = STAND_IN
    work = tmp_path_factory.mktemp("vllm-layout")
    with TritonServer(write_repository(repo, work / "repo"), Ports.free()) as srv:
        yield srv


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_engine_gets_the_familys_prompt_and_sampling_json(
    server: TritonServer, model: str, stream: bool
) -> None:
    body = {
        "text_input": envelope(GOLDEN["messages_with_system"]),
        "max_tokens": 77,
        "stop_words": ["Human:"],
        "temperature": 0.5,
        "seed": 7,
    }
    if stream:
        chunks = stream_text(server.http_url, model, body)
        assert len(chunks) > 10
        text = "".join(chunks)
    else:
        status, doc = generate(server.http_url, model, body)
        assert status == 200, doc
        text = doc["text_output"]
    got = json.loads(text)
    assert got["prompt"] == GOLDEN["prompts"]["yi-chat"]["with_system"]
    assert got["exclude_input"] is True
    sampling = got["sampling"]
    assert sampling["max_tokens"] == 77 and sampling["temperature"] == 0.5
    assert sampling["seed"] == 7
    # The request's stop word, then Yi's second stop string (the first is the end id).
    assert sampling["stop"] == ["Human:", "<|endoftext|>"]


def test_a_bad_request_is_refused_before_the_engine(server: TritonServer) -> None:
    status, doc = generate(server.http_url, "ensemble", {"text_input": "hi", "max_tokens": 500})
    assert status == 400 and "maxOutputLength" in doc["error"]
