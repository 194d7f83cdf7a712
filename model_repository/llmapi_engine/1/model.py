"""tensorrt_llm (llmapi mode): TensorRT-LLM's LLM API (PyTorch backend) behind the tensor
contract of the C++ backend, so that our BLS serves it; asked for ``text_output`` instead of
ids (the ensemble does), it decodes as postprocessing would, so its ensemble needs no
postprocessing step.

``model.yaml`` holds the ``LLM()`` arguments, as in NVIDIA's llmapi model; its
``triton_config`` section is ours to read. The LLM runs its own in-flight batching; this model
keeps an asyncio loop in a thread and turns each request into ``generate_async`` on token ids,
answering with ``output_ids`` / ``sequence_length`` (one response per step when streaming).
Cancellation: the client going away (``is_cancelled``) or a request with the same id and
``stop`` aborts the generation.

Not exercised by this repository's tests (they need a GPU and TensorRT-LLM); the tensor contract
is the one our Python engine implements and those tests cover.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

chatmodel_helpers.speed_up_string_tensors(pb_utils, np)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_NS = 20_000_000


def _scalar(request: Any, name: str, default: Any) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    return values[0].item() if values.size else default


def _word_list(request: Any, name: str) -> list[list[int]]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    array = tensor.as_numpy()
    rows = array.reshape(-1, 2, array.shape[-1])[0]
    out, start = [], 0
    for end in rows[1].tolist():
        if end < 0:
            break
        if end > start:
            out.append(rows[0].tolist()[start:end])
        start = end
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from tensorrt_llm import LLM

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(
            os.path.join(here, params.get("model_yaml", "model.yaml")), encoding="utf-8"
        ) as f:
            kwargs = yaml.safe_load(f)
        kwargs.pop("triton_config", None)
        self.exclude_default = params.get("exclude_input_in_output", "true") == "true"
        self.llm = LLM(**kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llmapi", daemon=True)
        self.thread.start()
        # Responses and metric updates go to Triton from a thread of their own: send() waits
        # for Triton's process to take the response, which on the loop's thread would hold up
        # every other stream (the remedy of Triton's vLLM backend, vllm_backend PR #46).
        self.outbox = chatmodel_helpers.Outbox()
        self.running: dict[str, Any] = {}
        self.last_arrival = 0
        self.in_flight = 0
        # Requests are counted here for the llm-d router's gauges: the LLM runs at most
        # max_batch_size at once and queues the rest.
        self.max_batch = int(kwargs.get("max_batch_size") or 2048)
        self.router = chatmodel_helpers.RouterGauges(pb_utils, max_requests=self.max_batch)
        self.text = chatmodel_helpers.EngineText.from_parameters(pb_utils, params, self.outbox)
        self.interval = chatmodel_helpers.StreamInterval.from_parameters(params)
        asyncio.run_coroutine_threadsafe(self._poll_stats(), self.loop)

    async def _poll_stats(self) -> None:
        """KV-cache blocks from the LLM's iteration stats, while it produces any."""
        get_stats = getattr(self.llm, "get_stats_async", None)
        while get_stats is not None:
            try:
                async for stats in get_stats(timeout=2):
                    self._set_blocks(stats if isinstance(stats, dict) else {})
            except Exception:  # stats off or not in this release: the request gauges remain
                return
            await asyncio.sleep(0.5)

    def _set_blocks(self, stats: dict[str, Any]) -> None:
        """The KV blocks from the LLM's iteration stats (kvCacheStats), where it has them."""
        kv = stats.get("kvCacheStats") or {}
        total, used = int(kv.get("maxNumBlocks") or 0), int(kv.get("usedNumBlocks") or 0)
        if total > 0:
            free = int(kv.get("freeNumBlocks") or total - used)
            tokens_per = int(kv.get("tokensPerBlock") or 0)
            self.outbox.call(
                self.router.set_blocks, used=used, total=total, tokens_per=tokens_per, free=free
            )

    def _set_requests(self) -> None:
        scheduled = min(self.in_flight, self.max_batch)
        waiting = self.in_flight - scheduled
        self.outbox.call(self.router.set_requests, waiting=waiting, scheduled=scheduled)

    def _send(self, sender: Any, response: Any = None, flags: int = 0) -> None:
        self.outbox.send(sender, response, flags)

    def finalize(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.outbox.close()
        self.llm.shutdown()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            if _scalar(request, "stop", False):
                gen = self.running.get(request.request_id())
                if gen is not None:
                    self.loop.call_soon_threadsafe(gen.abort)
                self._send(sender, None, FINAL)  # every send from the one sending thread
                continue
            asyncio.run_coroutine_threadsafe(self._serve(request, sender), self.loop)
        return None

    async def _serve(self, request: Any, sender: Any) -> None:
        from tensorrt_llm import SamplingParams

        # Unique per request: postprocessing keys its per-stream decoder state by it.
        self.last_arrival = arrival = max(time.time_ns(), self.last_arrival + 1)
        self.in_flight += 1  # only the loop's thread changes it
        self._set_requests()
        try:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
            prompt = [int(i) for i in ids[: int(_scalar(request, "input_lengths", len(ids)))]]
            streaming = bool(_scalar(request, "streaming", False))
            exclude = bool(_scalar(request, "exclude_input_in_output", self.exclude_default))
            stops = _word_list(request, "stop_words_list")
            top_k = int(_scalar(request, "runtime_top_k", 1))
            top_p = float(_scalar(request, "runtime_top_p", 0.0))
            sampling = SamplingParams(
                max_tokens=int(_scalar(request, "request_output_len", 16)),
                end_id=int(_scalar(request, "end_id", -1)),
                pad_id=int(_scalar(request, "pad_id", 0)),
                temperature=float(_scalar(request, "temperature", 1.0)),
                top_k=top_k if top_k > 0 else None,
                top_p=top_p if 0.0 < top_p <= 1.0 else None,
                repetition_penalty=float(_scalar(request, "repetition_penalty", 1.0)),
                presence_penalty=float(_scalar(request, "presence_penalty", 0.0)),
                frequency_penalty=float(_scalar(request, "frequency_penalty", 0.0)),
                min_tokens=int(_scalar(request, "min_tokens", 0)) or None,
                seed=_scalar(request, "seed", None),
                stop_token_ids=[w[0] for w in stops if len(w) == 1] or None,
                bad_token_ids=[w[0] for w in _word_list(request, "bad_words_list") if len(w) == 1]
                or None,
                detokenize=False,
            )
            long_stops = [w for w in stops if len(w) > 1]
            wanted = chatmodel_helpers.engine_outputs(request.requested_output_names(), self.text)
            text = self.text.stream(arrival) if self.text and "text_output" in wanted else None

            def response(new: list[int], final: bool = False) -> Any:
                # The prompt as the LLM API was given it: what usage.prompt_tokens reports.
                return chatmodel_helpers.engine_response(
                    pb_utils,
                    np,
                    new,
                    wanted=wanted,
                    arrival_ns=arrival,
                    prompt_tokens=len(prompt),
                    batched=self.batched,
                    text=text,
                    final=final,
                )

            gen = self.llm.generate_async(prompt, sampling_params=sampling, streaming=streaming)
            rid = request.request_id()
            if rid:
                self.running[rid] = gen
            sent = 0
            tokens: list[int] = []
            held_since = last = gap = checked = 0
            async for out in gen:
                tokens = list(out.outputs[0].token_ids)
                now = time.monotonic_ns()
                gap, last = (now - last if last else 0), now
                if len(tokens) > sent and not held_since:
                    held_since = now
                hit = any(tokens[-len(w) :] == w for w in long_stops)
                # is_cancelled() is a round trip to Triton's process: not every step.
                gone = False
                if now - checked >= CANCEL_CHECK_NS:
                    checked, gone = now, sender.is_cancelled()
                if gone or hit:
                    gen.abort()
                # Not while its last response is still waiting to go out: they go together.
                due = not self.outbox.waiting(sender) and self.interval.due(
                    len(tokens) - sent, held_since, self.in_flight, now, gap
                )
                if streaming and due and not out.finished and not hit:
                    new = tokens[sent:] if exclude or sent else prompt + tokens
                    one = response(new)
                    if one is not None:
                        self._send(sender, one)
                    sent, held_since = len(tokens), 0
                if hit:
                    break
            if streaming:
                rest = tokens[sent:] if exclude or sent else prompt + tokens
                # Text still held back (an incomplete character at the end) goes out too.
                last_one = rest or text is not None
                self._send(sender, response(rest, final=True) if last_one else None, FINAL)
            else:
                self._send(sender, response(tokens if exclude else prompt + tokens, True), FINAL)
        except Exception as exc:
            error = pb_utils.TritonError(f"tensorrt_llm (llmapi): {type(exc).__name__}: {exc}")
            self._send(sender, pb_utils.InferenceResponse(error=error), FINAL)
        finally:
            self.running.pop(request.request_id(), None)
            self.in_flight -= 1
            self._set_requests()
            if not self.in_flight and self.text is not None:
                # The last observations go out once idle a moment.
                self.loop.call_later(chatmodel_helpers.IDLE_FLUSH_S, self._flush_if_idle)

    def _flush_if_idle(self) -> None:
        if not self.in_flight and self.text is not None:
            self.outbox.call(self.text.latency.flush)
