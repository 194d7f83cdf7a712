"""tensorrt_llm (llmapi mode): TensorRT-LLM's LLM API (PyTorch backend) behind the tensor
contract of the C++ backend, so that our ensemble, BLS and UTF-8-safe postprocessing serve it.

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

import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


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


class _RouterGauges:
    """nv_trt_llm_request_metrics{request_type} and nv_trt_llm_kv_cache_block_metrics
    {kv_cache_block_type}, as the TensorRT-LLM C++ backend exports them, for the llm-d router
    (pods labelled llm-d.ai/engine-type=triton-tensorrt-llm). Requests are counted here: the
    LLM runs at most max_batch_size at once and queues the rest. The KV blocks come from the
    LLM's iteration stats (kvCacheStats) where it produces them."""

    def __init__(self, max_batch: int) -> None:
        gauge = pb_utils.MetricFamily.GAUGE
        self.families = (
            pb_utils.MetricFamily(
                name="nv_trt_llm_request_metrics", description="TRT LLM request metrics", kind=gauge
            ),
            pb_utils.MetricFamily(
                name="nv_trt_llm_kv_cache_block_metrics",
                description="TRT LLM KV cache block metrics",
                kind=gauge,
            ),
        )
        base = {"model": "tensorrt_llm", "version": "1"}
        self.requests = {
            t: self.families[0].Metric(labels={**base, "request_type": t})
            for t in ("waiting", "scheduled", "active", "max")
        }
        self.blocks = {
            t: self.families[1].Metric(labels={**base, "kv_cache_block_type": t})
            for t in ("fraction", "tokens_per", "max", "used", "free")
        }
        self.max_batch = max_batch
        self.requests["max"].set(max_batch)
        self.set_requests(0)

    def set_requests(self, in_flight: int) -> None:
        scheduled = min(in_flight, self.max_batch)
        self.requests["waiting"].set(in_flight - scheduled)
        self.requests["scheduled"].set(scheduled)
        self.requests["active"].set(scheduled)

    def set_blocks(self, stats: dict[str, Any]) -> None:
        kv = stats.get("kvCacheStats") or {}
        total, used = int(kv.get("maxNumBlocks") or 0), int(kv.get("usedNumBlocks") or 0)
        if total <= 0:
            return
        self.blocks["max"].set(total)
        self.blocks["used"].set(used)
        self.blocks["free"].set(int(kv.get("freeNumBlocks") or total - used))
        self.blocks["tokens_per"].set(int(kv.get("tokensPerBlock") or 0))
        self.blocks["fraction"].set(used / total)


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
        self.running: dict[str, Any] = {}
        self.last_arrival = 0
        self.in_flight = 0
        self.router = _RouterGauges(int(kwargs.get("max_batch_size") or 2048))
        asyncio.run_coroutine_threadsafe(self._poll_stats(), self.loop)

    async def _poll_stats(self) -> None:
        """KV-cache blocks from the LLM's iteration stats, while it produces any."""
        get_stats = getattr(self.llm, "get_stats_async", None)
        while get_stats is not None:
            try:
                async for stats in get_stats(timeout=2):
                    self.router.set_blocks(stats if isinstance(stats, dict) else {})
            except Exception:  # stats off or not in this release: the request gauges remain
                return
            await asyncio.sleep(0.5)

    def finalize(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.llm.shutdown()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            if _scalar(request, "stop", False):
                gen = self.running.get(request.request_id())
                if gen is not None:
                    self.loop.call_soon_threadsafe(gen.abort)
                sender.send(flags=FINAL)
                continue
            asyncio.run_coroutine_threadsafe(self._serve(request, sender), self.loop)
        return None

    def _response(self, tokens: list[int], arrival: int, prompt_tokens: int) -> Any:
        ids = np.array([tokens], dtype=np.int32)
        lengths = np.array([len(tokens)], dtype=np.int32)
        stamp = np.array([arrival], dtype=np.int64)
        # The prompt as the LLM API was given it: what usage.prompt_tokens reports.
        counted = np.array([prompt_tokens], dtype=np.int32)
        if self.batched:
            ids, lengths, stamp = ids[np.newaxis], lengths[np.newaxis], stamp[np.newaxis]
            counted = counted[np.newaxis]
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("output_ids", ids),
                pb_utils.Tensor("sequence_length", lengths),
                pb_utils.Tensor("arrival_time_ns", stamp),
                pb_utils.Tensor("num_input_tokens", counted),
            ]
        )

    async def _serve(self, request: Any, sender: Any) -> None:
        from tensorrt_llm import SamplingParams

        # Unique per request: postprocessing keys its per-stream decoder state by it.
        self.last_arrival = arrival = max(time.time_ns(), self.last_arrival + 1)
        self.in_flight += 1  # only the loop's thread changes it
        self.router.set_requests(self.in_flight)
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
            gen = self.llm.generate_async(prompt, sampling_params=sampling, streaming=streaming)
            rid = request.request_id()
            if rid:
                self.running[rid] = gen
            sent = 0
            tokens: list[int] = []
            async for out in gen:
                tokens = list(out.outputs[0].token_ids)
                hit = any(tokens[-len(w) :] == w for w in long_stops)
                if sender.is_cancelled() or hit:
                    gen.abort()
                if streaming and len(tokens) > sent and not out.finished and not hit:
                    new = tokens[sent:] if exclude or sent else prompt + tokens
                    sender.send(self._response(new, arrival, len(prompt)))
                    sent = len(tokens)
                if hit:
                    break
            if streaming:
                rest = tokens[sent:] if exclude or sent else prompt + tokens
                sender.send(
                    self._response(rest, arrival, len(prompt)) if rest else None, flags=FINAL
                )
            else:
                sender.send(
                    self._response(tokens if exclude else prompt + tokens, arrival, len(prompt)),
                    flags=FINAL,
                )
        except Exception as exc:
            error = pb_utils.TritonError(f"tensorrt_llm (llmapi): {type(exc).__name__}: {exc}")
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        finally:
            self.running.pop(request.request_id(), None)
            self.in_flight -= 1
            self.router.set_requests(self.in_flight)
