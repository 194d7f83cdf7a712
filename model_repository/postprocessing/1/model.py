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
``STATE_TTL_S`` without a token, and the least recently used beyond ``MAX_STREAMS``: a state is a
few hundred bytes. The state is also why the repository runs one instance of this model (which
also keeps each stream's responses in order).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils

chatmodel_helpers.speed_up_string_tensors(pb_utils, np)

STATE_TTL_S = 120.0
MAX_STREAMS = 65536
SWEEP_EVERY_S = 5.0


class _Stream:
    __slots__ = ("decoder", "touched")

    def __init__(self, decoder: Any, now: float) -> None:
        self.decoder = decoder
        self.touched = now


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        skip = params.get("skip_special_tokens", "true") == "true"
        special = [int(x) for x in params.get("special_token_ids", "").split(",") if x.strip()]
        self.tokenizer = chatmodel_helpers.load_tokenizer(
            params["tokenizer_dir"],
            trust_remote_code=params.get("trust_remote_code") == "true",
            extra_special_ids=special if skip else (),
        )
        self.streams: OrderedDict[tuple[str, int], _Stream] = OrderedDict()
        self.last_sweep = time.monotonic()

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
        tokens = lengths = key = None
        for tensor in request.inputs():
            name = tensor.name()
            if name == "TOKENS_BATCH":
                tokens = tensor.as_numpy()
            elif name == "SEQUENCE_LENGTH":
                lengths = tensor.as_numpy()
            elif name == "STREAM_KEY":
                key = tensor.as_numpy()
        if tokens is None or lengths is None:
            raise ValueError("TOKENS_BATCH and SEQUENCE_LENGTH are required")
        if self.batched:
            tokens, lengths = tokens[0], lengths[0]
        # tokens: [beams, length]; lengths: [beams]
        arrival = int(key.reshape(-1)[0]) if key is not None and key.size else 0
        request_id = request.request_id()
        if tokens.shape[0] == 1 and (arrival or request_id):
            ids = tokens[0, : int(lengths[0])].tolist()
            texts = [self._stream((request_id, arrival), now).decoder.push(ids)]
        else:  # no key (an engine without arrival times) or beam search: decode whole
            texts = [
                self.tokenizer.decode(tokens[b, : int(lengths[b])].tolist())
                for b in range(tokens.shape[0])
            ]
        out = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        if self.batched:
            out = out[np.newaxis, :]
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", out)])

    def _stream(self, key: tuple[str, int], now: float) -> _Stream:
        state = self.streams.get(key)
        if state is None:
            state = self.streams[key] = _Stream(self.tokenizer.decoder(), now)
            if len(self.streams) > MAX_STREAMS:
                self.streams.popitem(last=False)
        else:
            self.streams.move_to_end(key)
            state.touched = now
        return state

    def _sweep(self, now: float) -> None:
        self.last_sweep = now
        while self.streams:
            key, state = next(iter(self.streams.items()))
            if now - state.touched < STATE_TTL_S:
                break
            del self.streams[key]
