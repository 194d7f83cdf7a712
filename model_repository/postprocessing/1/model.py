"""postprocessing: generated token ids in, text out, UTF-8 safe when streaming.

Streaming through the ensemble sends this model one request per engine response, each with
only the new tokens. Decoding those on their own is what turns Chinese into U+FFFD in NVIDIA's
version. Here every stream keeps an incremental decoder that holds back the bytes of a
character until it is complete: constant work per token, and the chunks joined equal the text
of the same request not streamed (which goes through the same decoder in one call).

Streams are told apart by ``STREAM_KEY``, the engine's ``arrival_time_ns`` (preprocessing asks
every engine for it), together with the request id Triton passes down the ensemble. Triton
allows a step after a decoupled model only that model's outputs, so the key has to come from
the engine. This model cannot see a stream's last response, so state is dropped after
``STATE_TTL_S`` without a token (and the idlest half when there are more than ``MAX_STREAMS``):
a state is a few hundred bytes. The state is also why the repository runs one instance of this
model (which also keeps each stream's responses in order).
"""

from __future__ import annotations

import json
import time
from typing import Any

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils

chatmodel_helpers.speed_up_string_tensors(pb_utils, np)

STATE_TTL_S = 120.0
MAX_STREAMS = 65536
SWEEP_EVERY_S = 10.0


class _Stream:
    __slots__ = ("decoder", "last_ns", "touched")

    def __init__(self, decoder: Any, now: float) -> None:
        self.decoder = decoder
        self.touched = now
        self.last_ns = 0  # when the stream's last tokens came (0: none yet)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.tokenizer = chatmodel_helpers.decoding_tokenizer(params)
        self.streams: dict[tuple[str, int], _Stream] = {}
        self.last_sweep = time.monotonic()
        # Timed here for the ensemble, whatever engine runs: the engine's arrival time (the
        # stream key) starts the clock, each response's tokens stop it.
        self.latency = chatmodel_helpers.TokenLatency(pb_utils, "ensemble")

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request, now))
            except Exception as exc:  # one bad request must not fail the batch
                error = pb_utils.TritonError(f"postprocessing: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        if now - self.last_sweep > SWEEP_EVERY_S:
            self._sweep(now)
        return responses

    def _one(self, request: Any, now: float) -> Any:
        # One pass over the inputs (get_input_tensor_by_name would scan them once per name):
        # this runs once per streamed token.
        tokens = lengths = key = prompt_tokens = None
        for tensor in request.inputs():
            name = tensor.name()
            if name == "TOKENS_BATCH":
                tokens = tensor.as_numpy()
            elif name == "SEQUENCE_LENGTH":
                lengths = tensor.as_numpy()
            elif name == "STREAM_KEY":
                key = tensor.as_numpy()
            elif name == "ENGINE_NUM_INPUT_TOKENS":
                prompt_tokens = tensor.as_numpy()
        if tokens is None:
            raise ValueError("TOKENS_BATCH is required")
        if self.batched:
            tokens = tokens[0]
            lengths = lengths[0] if lengths is not None else None
        # tokens: [beams, length]; lengths: [beams], or every token when not given
        arrival = int(key.flat[0]) if key is not None and key.size else 0
        request_id = request.request_id()
        if tokens.shape[0] == 1 and (arrival or request_id):
            stream_key = (request_id, arrival)
            state = self.streams.get(stream_key)
            if state is None:
                state = self.streams[stream_key] = _Stream(self.tokenizer.decoder(), now)
                if len(self.streams) > MAX_STREAMS:
                    self._sweep(now, force=True)
            else:
                state.touched = now
            row = tokens[0] if lengths is None else tokens[0, : int(lengths[0])]
            self._time(state, arrival, len(row))
            text = state.decoder.push(row.tolist())
            out = np.array(
                [[text.encode("utf-8")]] if self.batched else [text.encode("utf-8")],
                dtype=np.object_,
            )
        else:  # no key (an engine without arrival times) or beam search: decode whole
            texts = [
                self.tokenizer.decode(
                    (tokens[b] if lengths is None else tokens[b, : int(lengths[b])]).tolist()
                ).encode("utf-8")
                for b in range(tokens.shape[0])
            ]
            out = np.array([texts] if self.batched else texts, dtype=np.object_)
        # The engine's own counts, for usage: its tokens in this response (the first beam's),
        # and the prompt as it counted it, passed on.
        generated = tokens.shape[1] if lengths is None else int(lengths[0])
        counts = [
            pb_utils.Tensor("NUM_OUTPUT_TOKENS", self._count(generated)),
        ]
        if prompt_tokens is not None:
            counts.append(pb_utils.Tensor("NUM_INPUT_TOKENS", self._count(prompt_tokens.flat[0])))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", out), *counts])

    def _time(self, state: _Stream, arrival: int, tokens: int) -> None:
        if not tokens or not arrival:
            return
        now = time.time_ns()  # the engines' arrival times are nanoseconds since the epoch
        if state.last_ns:
            self.latency.gap((now - state.last_ns) / 1e6, tokens)
        else:
            self.latency.first((now - arrival) / 1e6)
        state.last_ns = now

    def _count(self, value: Any) -> Any:
        return np.array([[int(value)]] if self.batched else [int(value)], dtype=np.int32)

    def _sweep(self, now: float, force: bool = False) -> None:
        """Drop streams idle for STATE_TTL_S; over MAX_STREAMS, the idlest half."""
        self.last_sweep = now
        idle = [k for k, st in self.streams.items() if now - st.touched > STATE_TTL_S]
        for k in idle:
            del self.streams[k]
        if force and len(self.streams) > MAX_STREAMS:
            by_age = sorted(self.streams, key=lambda k: self.streams[k].touched)
            for k in by_age[: len(by_age) // 2]:
                del self.streams[k]
