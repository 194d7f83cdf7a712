"""The llmapi engine model's logic, run against stand-ins for Triton's Python backend and
TensorRT-LLM's LLM API (neither runs here): streaming and not, sampling mapping, stop words,
the prompt in or out of the output, cancellation and errors."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from chatmodel_operator.triton import textproc

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "model_repository/llmapi_engine/1/model.py"
FINAL = 1


class Tensor:
    def __init__(self, name: str, value: Any) -> None:
        self._name, self._value = name, np.asarray(value)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


class Response:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class Error(Exception):
    INTERNAL, INVALID_ARG = 13, 3

    def __init__(self, message: str, code: int = 13) -> None:
        super().__init__(message)


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[Response | None, int]] = []
        self.cancelled = False
        self.done = threading.Event()
        self.delay = 0.0

    def send(self, response: Response | None = None, flags: int = 0) -> None:
        time.sleep(self.delay)  # Triton taking the response
        self.sent.append((response, flags))
        if flags & FINAL:
            self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


class Request:
    def __init__(self, request_id: str = "", **inputs: Any) -> None:
        self._inputs = [Tensor(k, np.array([v])) for k, v in inputs.items()]  # batch dim
        self._id = request_id
        self.sender = Sender()

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._id

    def requested_output_names(self) -> list[str]:
        return []  # none named: every output

    def get_response_sender(self) -> Sender:
        return self.sender


def _get(request: Request, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


class Output:
    def __init__(self, tokens: list[int], finished: bool) -> None:
        self.outputs = [types.SimpleNamespace(token_ids=tokens)]
        self.finished = finished


class Generation:
    """What LLM.generate_async returns: async-iterable outputs, cumulative token ids."""

    def __init__(self, llm: FakeLLM, prompt: list[int], params: Any, streaming: bool) -> None:
        self.llm, self.prompt, self.params, self.streaming = llm, prompt, params, streaming
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    async def _run(self) -> Any:
        tokens: list[int] = []
        kw = self.params.kwargs
        for i in range(kw["max_tokens"]):
            if self.aborted:
                return
            token = self.llm.script[i % len(self.llm.script)]
            if token == kw["end_id"] or token in (kw.get("stop_token_ids") or []):
                break
            tokens.append(token)
            if self.streaming:
                yield Output(list(tokens), False)
            await asyncio.sleep(self.llm.delay)
        yield Output(list(tokens), True)

    def __aiter__(self) -> Any:
        return self._run()


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.script = [11, 12, 13, 14, 15, 2]
        self.delay = 0.0
        self.calls: list[Generation] = []
        FakeLLM.instances.append(self)

    def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool) -> Any:
        gen = Generation(self, prompt, sampling_params, streaming)
        self.calls.append(gen)
        return gen

    def shutdown(self) -> None:
        pass


class Gauge:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels, self.value = labels, 0.0

    def set(self, value: float) -> None:
        self.value = value


class MetricFamily:
    """Triton's pb_utils.MetricFamily, keeping every gauge made, by family name."""

    GAUGE, COUNTER = "gauge", "counter"
    made: ClassVar[dict[str, list[Gauge]]] = {}

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name
        MetricFamily.made[name] = []

    def Metric(self, labels: dict[str, str]) -> Gauge:  # noqa: N802 (Triton's name)
        gauge = Gauge(labels)
        MetricFamily.made[self.name].append(gauge)
        return gauge


def gauge(family: str, **labels: str) -> float:
    found = [g for g in MetricFamily.made[family] if labels.items() <= g.labels.items()]
    assert len(found) == 1, (family, labels)
    return found[0].value


def settled(engine: Any) -> None:
    """Wait until what the engine handed its outbox (responses, metric updates) is done."""
    done = threading.Event()
    engine.outbox.call(done.set)
    assert done.wait(5), "the outbox is stuck"


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = Tensor  # type: ignore[attr-defined]
    pb.InferenceResponse = Response  # type: ignore[attr-defined]
    pb.TritonError = Error  # type: ignore[attr-defined]
    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL  # type: ignore[attr-defined]
    pb.get_input_tensor_by_name = _get  # type: ignore[attr-defined]
    pb.MetricFamily = MetricFamily  # type: ignore[attr-defined]
    pb.serialize_byte_tensor = lambda tensor: tensor.tobytes()  # type: ignore[attr-defined]
    trt = types.ModuleType("tensorrt_llm")
    trt.LLM = FakeLLM  # type: ignore[attr-defined]
    trt.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", trt)
    # The helper modules Triton finds beside the model (see triton.repository._helpers).
    monkeypatch.setitem(sys.modules, "chatmodel_textproc", textproc)
    monkeypatch.syspath_prepend(str(ROOT / "model_repository/common"))
    monkeypatch.delitem(sys.modules, "chatmodel_helpers", raising=False)
    spec = importlib.util.spec_from_file_location("llmapi_engine_model", MODEL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    version = tmp_path / "1"
    version.mkdir()
    model_yaml = {"model": "/ckpt", "backend": "pytorch", "triton_config": {"decoupled": True}}
    (version / "model.yaml").write_text(yaml.safe_dump(model_yaml))
    config = {
        "max_batch_size": 8,
        "parameters": {"model_yaml": {"string_value": "model.yaml"}},
    }
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(tmp_path),
            "model_version": "1",
        }
    )
    yield model
    model.finalize()


def _run(model: Any, request: Request) -> list[tuple[Response | None, int]]:
    model.execute([request])
    assert request.sender.done.wait(5), "no final response"
    return request.sender.sent


def _tokens(sent: list[tuple[Response | None, int]]) -> list[list[int]]:
    return [r.outputs["output_ids"].reshape(-1).tolist() for r, _ in sent if r is not None]


def _flat(chunks: list[list[int]]) -> list[int]:
    return [token for chunk in chunks for token in chunk]


def _request(request_id: str = "", **extra: Any) -> Request:
    base: dict[str, Any] = {
        "input_ids": [[1, 2, 3]],
        "input_lengths": [3],
        "request_output_len": [10],
        "end_id": [2],
        "runtime_top_k": [1],
    }
    return Request(request_id, **{**base, **extra})


def test_llm_gets_the_model_yaml_arguments_without_tritons_section(engine: Any) -> None:
    assert FakeLLM.instances[-1].kwargs == {"model": "/ckpt", "backend": "pytorch"}


def test_not_streamed_one_final_response_with_every_token(engine: Any) -> None:
    sent = _run(engine, _request())
    assert len(sent) == 1 and sent[0][1] == FINAL
    assert _tokens(sent) == [[11, 12, 13, 14, 15]]
    response = sent[0][0]
    assert response is not None
    assert response.outputs["sequence_length"].reshape(-1).tolist() == [5]
    assert response.outputs["arrival_time_ns"].shape == (1, 1)


def test_streamed_one_response_per_token_then_final(engine: Any) -> None:
    FakeLLM.instances[-1].delay = 0.02  # each token long after the last response went out
    sent = _run(engine, _request(streaming=[True]))
    assert _tokens(sent) == [[11], [12], [13], [14], [15]]
    assert sent[-1][1] == FINAL and all(flags == 0 for _, flags in sent[:-1])


def test_tokens_made_while_the_last_response_waits_go_out_together(engine: Any) -> None:
    """Triton taking responses slower than the engine makes tokens: a stream has one response
    waiting at most, the tokens made meanwhile go in its next one, in order, none twice."""
    request = _request(streaming=[True])
    request.sender.delay = 0.05
    sent = _run(engine, request)
    tokens = _tokens(sent)
    assert [t for ts in tokens for t in ts] == [11, 12, 13, 14, 15]
    assert tokens[0] == [11] and len(tokens) < 5
    assert sent[-1][1] == FINAL


def test_prompt_comes_first_when_not_excluded(engine: Any) -> None:
    sent = _run(engine, _request(exclude_input_in_output=[False]))
    assert _tokens(sent) == [[1, 2, 3, 11, 12, 13, 14, 15]]


def test_sampling_values_map_onto_sampling_params(engine: Any) -> None:
    _run(
        engine,
        _request(
            temperature=[0.5],
            runtime_top_k=[0],
            runtime_top_p=[0.9],
            seed=[np.uint64(4)],
            stop_words_list=[[[13, 0], [1, -1]]],
        ),
    )
    kw = FakeLLM.instances[-1].calls[-1].params.kwargs
    assert kw["temperature"] == 0.5 and kw["top_k"] is None and kw["top_p"] == pytest.approx(0.9)
    assert kw["seed"] == 4 and kw["stop_token_ids"] == [13] and kw["detokenize"] is False


def test_multi_token_stop_word_ends_the_generation(engine: Any) -> None:
    sent = _run(engine, _request(streaming=[True], stop_words_list=[[[12, 13], [2, -1]]]))
    assert _flat(_tokens(sent)) == [11, 12, 13]


def test_client_gone_aborts_the_generation(engine: Any) -> None:
    FakeLLM.instances[-1].delay = 0.05
    request = _request(streaming=[True], request_output_len=[1000], end_id=[-1])
    engine.execute([request])
    time.sleep(0.2)
    request.sender.cancelled = True
    assert request.sender.done.wait(5)
    assert FakeLLM.instances[-1].calls[-1].aborted
    assert len(_flat(_tokens(request.sender.sent))) < 50


def test_stop_request_with_the_same_id_aborts(engine: Any) -> None:
    FakeLLM.instances[-1].delay = 0.05
    request = _request("r1", streaming=[True], request_output_len=[1000], end_id=[-1])
    engine.execute([request])
    time.sleep(0.2)
    stop = Request("r1", input_ids=[[0]], input_lengths=[1], request_output_len=[1], stop=[True])
    engine.execute([stop])
    assert stop.sender.done.wait(5)
    assert stop.sender.sent == [(None, FINAL)]
    assert request.sender.done.wait(5)
    assert FakeLLM.instances[-1].calls[-1].aborted


def test_a_failure_is_an_error_response(engine: Any) -> None:
    sent = _run(engine, Request(input_lengths=[1], request_output_len=[4]))  # no input_ids
    response, flags = sent[-1]
    assert flags == FINAL and response is not None and response.error is not None


def test_router_gauges_follow_requests_and_go_back_to_zero(engine: Any) -> None:
    """The gauges the llm-d router reads (engine type triton-tensorrt-llm): requests beyond
    max_batch_size wait, the others are scheduled, and all go back to 0 when done."""
    engine.max_batch = 1
    FakeLLM.instances[-1].delay = 0.05
    requests = [_request(f"g{i}", request_output_len=[8], end_id=[-1]) for i in range(3)]
    engine.execute(requests)
    time.sleep(0.1)
    settled(engine)
    waiting = gauge("nv_trt_llm_request_metrics", request_type="waiting")
    scheduled = gauge("nv_trt_llm_request_metrics", request_type="scheduled")
    assert (waiting, scheduled) == (2, 1)
    for r in requests:
        assert r.sender.done.wait(5)
    deadline = time.monotonic() + 2
    while gauge("nv_trt_llm_request_metrics", request_type="scheduled") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert gauge("nv_trt_llm_request_metrics", request_type="waiting") == 0
    assert gauge("nv_trt_llm_request_metrics", request_type="scheduled") == 0
    # KV blocks come from the LLM's iteration stats, in TensorRT-LLM's own field names.
    stats = {"kvCacheStats": {"maxNumBlocks": 200, "usedNumBlocks": 50, "tokensPerBlock": 32}}
    engine._set_blocks(stats)
    settled(engine)
    assert gauge("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="fraction") == 0.25
    assert gauge("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="tokens_per") == 32
    assert gauge("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="max") == 200
    assert gauge("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="free") == 150
