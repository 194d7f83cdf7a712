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

import chatmodel_tokenizer
import numpy as np
import triton_python_backend_utils as pb_utils

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
        self.tokenizer = chatmodel_tokenizer.load(
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

    def _key(self, request: Any) -> tuple[str, int] | None:
        tensor = pb_utils.get_input_tensor_by_name(request, "STREAM_KEY")
        arrival = 0
        if tensor is not None:
            values = tensor.as_numpy().reshape(-1)
            arrival = int(values[0]) if values.size else 0
        request_id = request.request_id()
        if not arrival and not request_id:
            return None
        return (request_id, arrival)

    def _one(self, request: Any, now: float) -> Any:
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
        if self.batched:
            tokens, lengths = tokens[0], lengths[0]
        # tokens: [beams, length]; lengths: [beams]
        key = self._key(request)
        texts = []
        for beam in range(tokens.shape[0]):
            ids = tokens[beam, : int(lengths[beam])].tolist()
            if key is not None and beam == 0:
                texts.append(self._stream(key, now).decoder.push(ids))
            else:  # no key (beam search, or an engine without arrival times): decode whole
                texts.append(self.tokenizer.decode(ids))
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
