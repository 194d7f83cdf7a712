"""tensorrt_llm_bls: the same pipeline as the ensemble, driven from Python.

Each request runs in its own thread (one process serves them all): call ``preprocessing``,
stream from the engine, detokenize here with an incremental decoder (UTF-8 safe, constant work
per token, no accumulate-and-re-decode), and send ``text_output`` deltas as they complete.

Unlike the ensemble (in which Triton 2.51 does not cancel a running step), the BLS sees its
client go away (``is_cancelled``) and stops the engine's request with TensorRT-LLM's
convention: a request with the same id and ``stop`` set. That frees the engine's slot.

For engines that take text (vLLM) preprocessing returns the rendered prompt and sampling JSON,
and the engine's text deltas are passed through.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils

chatmodel_helpers.speed_up_string_tensors(pb_utils, np)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_S = 0.02


class _Failed(Exception):
    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code


def _error_of(response: Any, who: str) -> _Failed:
    err = response.error()
    code = err.code() if hasattr(err, "code") else None
    return _Failed(f"{who}: {err.message()}", code)


class _Clock:
    """One request's token timing: from its arrival here to each response's tokens."""

    __slots__ = ("last", "latency", "started")

    def __init__(self, latency: Any) -> None:
        self.latency = latency
        self.started = time.monotonic()
        self.last = 0.0

    def tokens(self, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        if self.last:
            self.latency.gap((now - self.last) * 1e3, n)
        else:
            self.latency.first((now - self.started) * 1e3)
        self.last = now


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.engine = params.get("engine_model", "tensorrt_llm")
        self.preprocessing = params.get("preprocessing_model", "preprocessing")
        self.takes_text = params.get("engine_takes_text") == "true"
        # Which client input goes to which preprocessing or engine input: the ensemble's
        # wiring, from the operator (triton/tensors.py), so it is spelled in one place.
        maps = json.loads(params["tensor_maps"])
        self.to_pre = dict(maps["client_to_pre"])
        if self.takes_text:
            self.to_pre.update(maps["client_to_pre_text"])
        self.pre_to_engine = maps["pre_to_engine"]
        self.to_engine = maps["client_to_engine"]
        self.tokenizer = None
        if not self.takes_text:
            self.tokenizer = chatmodel_helpers.decoding_tokenizer(params)
        self.latency = chatmodel_helpers.TokenLatency(pb_utils, "tensorrt_llm_bls")
        self.lock = threading.Lock()
        self.in_flight = 0
        workers = int(params.get("max_concurrency", "64"))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bls")

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            # The clock starts on arrival, before the request may wait for a thread.
            self.pool.submit(self._serve, request, _Clock(self.latency))
        return None

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- one request ---------------------------------------------------------------------

    def _tensor(self, request: Any, name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _serve(self, request: Any, clock: _Clock) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            self._serve_one(request, clock)
        finally:
            with self.lock:
                self.in_flight -= 1
                idle = not self.in_flight
            if idle:
                self.latency.flush()  # the last observations go out

    def _serve_one(self, request: Any, clock: _Clock) -> None:
        sender = request.get_response_sender()
        try:
            stream_in = self._tensor(request, "stream")
            stream = bool(stream_in.reshape(-1)[0]) if stream_in is not None else False
            pre = self._preprocess(request)
            if self.takes_text:
                self._run_text_engine(request, sender, pre, stream, clock)
            else:
                self._run_token_engine(request, sender, pre, stream, clock)
        except _Failed as exc:
            code = exc.code if exc.code is not None else pb_utils.TritonError.INTERNAL
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code)), flags=FINAL
            )
        except Exception as exc:  # answer the client rather than leave it hanging
            msg = f"tensorrt_llm_bls: {type(exc).__name__}: {exc}"
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(msg)), flags=FINAL)

    def _preprocess(self, request: Any) -> dict[str, np.ndarray]:
        inputs = []
        for client, pre in self.to_pre.items():
            value = self._tensor(request, client)
            if value is not None:
                inputs.append(pb_utils.Tensor(pre, value))
        wanted = (
            ["PROMPT", "SAMPLING_PARAMETERS", "EXCLUDE_INPUT"]
            if self.takes_text
            else list(self.pre_to_engine)
        )
        response = pb_utils.InferenceRequest(
            model_name=self.preprocessing, inputs=inputs, requested_output_names=wanted
        ).exec()
        if response.has_error():
            raise _error_of(response, "preprocessing")
        return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in wanted}

    def _text(self, text: str, prompt_tokens: int, new_tokens: int) -> Any:
        """One response: a text delta and the engine's counts for usage (the prompt, and the
        tokens behind this delta), as Triton's OpenAI frontend reads them."""
        out = np.array([text.encode("utf-8")], dtype=np.object_)
        counts = [
            np.array([prompt_tokens], dtype=np.int32),
            np.array([new_tokens], dtype=np.int32),
        ]
        if self.batched:
            out = out[np.newaxis, :]
            counts = [c[np.newaxis, :] for c in counts]
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", out),
                pb_utils.Tensor("num_input_tokens", counts[0]),
                pb_utils.Tensor("num_output_tokens", counts[1]),
            ]
        )

    def _stop_engine(self, request_id: str) -> None:
        """TensorRT-LLM's cancellation: a second request with the same id and ``stop``."""
        one = (1, 1) if self.batched else (1,)
        inputs = [
            pb_utils.Tensor("input_ids", np.zeros(one, dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.ones(one, dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.ones(one, dtype=np.int32)),
            pb_utils.Tensor("stop", np.ones(one, dtype=np.bool_)),
        ]
        try:
            for _ in pb_utils.InferenceRequest(
                model_name=self.engine,
                inputs=inputs,
                requested_output_names=["output_ids"],
                request_id=request_id,
            ).exec(decoupled=True):
                pass
        except Exception:  # the engine may have finished the request meanwhile
            pass

    def _run_token_engine(
        self, request: Any, sender: Any, pre: dict[str, Any], stream: bool, clock: _Clock
    ) -> None:
        inputs = [pb_utils.Tensor(eng, pre[name]) for name, eng in self.pre_to_engine.items()]
        for client, eng in self.to_engine.items():
            value = self._tensor(request, client)
            if value is not None:
                inputs.append(pb_utils.Tensor(eng, value))
        flag = np.array([[stream]] if self.batched else [stream], dtype=np.bool_)
        inputs.append(pb_utils.Tensor("streaming", flag))
        request_id = f"bls-{uuid.uuid4().hex}"
        responses = pb_utils.InferenceRequest(
            model_name=self.engine,
            inputs=inputs,
            requested_output_names=["output_ids", "sequence_length"],
            request_id=request_id,
        ).exec(decoupled=True)
        assert self.tokenizer is not None
        decoder = self.tokenizer.decoder()
        parts: list[str] = []
        prompt_tokens = int(np.asarray(pre["REQUEST_INPUT_LEN"]).reshape(-1)[0])
        counted = 0  # engine tokens not yet reported in a response
        checked = time.monotonic()
        for response in responses:
            if response.has_error():
                raise _error_of(response, self.engine)
            now = time.monotonic()
            if now - checked > CANCEL_CHECK_S:  # a round trip to the server: not every token
                checked = now
                if sender.is_cancelled():
                    self._stop_engine(request_id)
                    for _ in responses:  # drain what the engine still sends
                        pass
                    return
            ids = pb_utils.get_output_tensor_by_name(response, "output_ids")
            if ids is None:  # an empty final response
                continue
            tokens = ids.as_numpy()
            lengths = pb_utils.get_output_tensor_by_name(response, "sequence_length").as_numpy()
            if self.batched:
                tokens, lengths = tokens[0], lengths[0]
            counted += int(lengths[0])
            text = decoder.push(tokens[0, : int(lengths[0])].tolist())
            if not text:
                continue
            if stream:
                clock.tokens(counted)  # timed per response, as the client gets them
                sender.send(self._text(text, prompt_tokens, counted))
                counted = 0
            else:
                parts.append(text)
        parts.append(decoder.finish())
        tail = "".join(parts)
        clock.tokens(counted)
        if stream and not tail and not counted:
            sender.send(None, flags=FINAL)
        else:  # also the count of tokens whose text was held back or empty
            sender.send(self._text(tail, prompt_tokens, counted), flags=FINAL)

    def _run_text_engine(
        self, request: Any, sender: Any, pre: dict[str, Any], stream: bool, clock: _Clock
    ) -> None:
        inputs = [
            pb_utils.Tensor("text_input", pre["PROMPT"]),
            pb_utils.Tensor("sampling_parameters", pre["SAMPLING_PARAMETERS"]),
            pb_utils.Tensor("exclude_input_in_output", pre["EXCLUDE_INPUT"]),
            pb_utils.Tensor("stream", np.array([stream], dtype=np.bool_)),
            # vLLM counts its own tokens when asked (UINT32, per response).
            pb_utils.Tensor("return_num_input_tokens", np.array([True], dtype=np.bool_)),
            pb_utils.Tensor("return_num_output_tokens", np.array([True], dtype=np.bool_)),
        ]
        wanted = ["text_output", "num_input_tokens", "num_output_tokens"]
        responses = pb_utils.InferenceRequest(
            model_name=self.engine, inputs=inputs, requested_output_names=wanted
        ).exec(decoupled=True)
        parts: list[str] = []
        prompt_tokens = counted = 0
        for response in responses:
            if response.has_error():
                raise _error_of(response, self.engine)
            for name in ("num_input_tokens", "num_output_tokens"):
                count = pb_utils.get_output_tensor_by_name(response, name)
                if count is None:
                    continue
                value = int(count.as_numpy().reshape(-1)[0])
                if name == "num_input_tokens":
                    prompt_tokens = value
                else:
                    counted += value
            out = pb_utils.get_output_tensor_by_name(response, "text_output")
            if out is None:
                continue
            text = "".join(v.decode("utf-8") for v in out.as_numpy().reshape(-1))
            if stream and text:
                clock.tokens(counted)  # timed per response, as the client gets them
                sender.send(self._text(text, prompt_tokens, counted))
                counted = 0
            elif text:
                parts.append(text)
        clock.tokens(counted)
        if stream and not counted:
            sender.send(None, flags=FINAL)
        else:
            sender.send(self._text("".join(parts), prompt_tokens, counted), flags=FINAL)
