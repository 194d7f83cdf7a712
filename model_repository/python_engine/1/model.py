"""tensorrt_llm (Python): a transformers engine behind TensorRT-LLM's tensor contract.

It takes what the C++ ``tensorrtllm`` backend takes (``input_ids``, ``input_lengths``,
``request_output_len``, ``end_id``, ``pad_id``, ``stop_words_list``, ``bad_words_list``,
``temperature``, ``runtime_top_k``, ``runtime_top_p``, penalties, ``seed``, ``streaming``,
``stop``) and returns what it returns (``output_ids`` ``[beam, tokens]``, ``sequence_length``),
decoupled: one response per generated token when streaming (under load, up to the stream
interval's tokens per response), one response otherwise. So the BLS runs unchanged over it, on
CPU or GPU. Asked for ``text_output`` instead of ``output_ids`` (the ensemble does), it decodes
as postprocessing would, so its ensemble has no postprocessing step: one Python round trip per
response fewer, and no response at all for tokens that complete no character yet.

Scheduling: requests wait in a queue for one of ``max_slots`` slots; a scheduler thread
prefills new sequences and then advances every active sequence by one token per round (each
with its own KV cache), so concurrent streams progress together. A slot is freed when its
sequence ends, when the client goes away (``is_cancelled``), or when a request with the same id
and ``stop`` arrives (TensorRT-LLM's cancellation, which the BLS uses). Responses and metric
updates go to Triton from one thread of their own (``chatmodel_helpers.Outbox``), so the
scheduler never waits on a send.

Checkpoints: whatever ``AutoModelForCausalLM`` loads; architectures with Llama's structure
under another name (XVERSE; TeleChat-shaped configs with Llama weight names, as our tiny
checkpoints have) are loaded as ``LlamaForCausalLM`` from a translated config, as vLLM does.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils

chatmodel_helpers.speed_up_string_tensors(pb_utils, np)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_S = 0.02  # is_cancelled() is a round trip to the server; not every token


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _weight_names(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            return list(json.load(f).get("weight_map", {}))
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
        return []
    with open(single, "rb") as f:  # the safetensors header: 8-byte length, then JSON
        size = int.from_bytes(f.read(8), "little")
        return [k for k in json.loads(f.read(size)) if k != "__metadata__"]


def _llama_config(cfg: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    heads = int(_first(cfg, "num_attention_heads", "n_head"))
    # rope_theta as a plain keyword: transformers 5 files it under rope_parameters itself.
    kwargs: dict[str, Any] = {
        "vocab_size": int(cfg["vocab_size"]),
        "hidden_size": int(_first(cfg, "hidden_size", "n_embd")),
        "intermediate_size": int(_first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size")),
        "num_hidden_layers": int(_first(cfg, "num_hidden_layers", "n_layer")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_first(cfg, "num_key_value_heads", default=heads)),
        "max_position_embeddings": int(
            _first(cfg, "max_position_embeddings", "seq_length", "n_positions", default=4096)
        ),
        "rms_norm_eps": float(_first(cfg, "rms_norm_eps", "layer_norm_epsilon", default=1e-6)),
        "rope_theta": float(_first(cfg, "rope_theta", default=10000.0)),
        "bos_token_id": cfg.get("bos_token_id"),
        "eos_token_id": cfg.get("eos_token_id"),
        "pad_token_id": cfg.get("pad_token_id"),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }
    return LlamaConfig(**kwargs)


def load_causal_lm(path: str, *, dtype: Any, trust_remote_code: bool) -> Any:
    import transformers
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    arch = (cfg.get("architectures") or [""])[0]
    model_type = cfg.get("model_type", "")
    llama_named = any(".self_attn.q_proj." in n for n in _weight_names(path))
    # transformers renamed torch_dtype to dtype in 4.56.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    if llama_named and (arch == "XverseForCausalLM" or model_type in ("xverse", "telechat")):
        return LlamaForCausalLM.from_pretrained(path, config=_llama_config(cfg), **kw)
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)


@dataclass(slots=True, eq=False)
class _Job:
    """One sequence being generated."""

    request: Any
    sender: Any
    request_id: str
    prompt: list[int]
    max_new: int
    end_id: int
    stops: list[list[int]]
    bad: list[list[int]]
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    min_tokens: int
    streaming: bool
    exclude_input: bool
    generator: Any
    arrival: int
    wanted: set[str]
    out: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # generated, not yet sent
    counts: dict[int, int] = field(default_factory=dict)
    cache: Any = None
    last: int = 0
    cancelled: bool = False
    checked: float = field(default_factory=time.monotonic)
    sent: bool = False
    text: Any = None  # a TextStream where text_output is asked for
    held_since: int = 0  # time.monotonic_ns() of the oldest token in pending
    token_ns: int = 0  # time.monotonic_ns() of the last token
    gap_ns: int = 0  # between the last two tokens


# The llm-d router reads TensorRT-LLM's KV cache gauges; this engine counts its cache in blocks of
# this many tokens: max_slots sequences of at most max_sequence_length tokens.
TOKENS_PER_BLOCK = 64


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
    rows = tensor.as_numpy().reshape(-1, 2, tensor.as_numpy().shape[-1])[0]
    flat, offsets = rows[0].tolist(), rows[1].tolist()
    out, start = [], 0
    for end in offsets:
        if end < 0:
            break
        if end > start:
            out.append(flat[start:end])
        start = end
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.max_slots = int(params.get("max_slots", "8"))
        self.max_seq = int(params.get("max_sequence_length", "4096"))
        self.exclude_default = params.get("exclude_input_in_output", "true") == "true"
        threads = int(params.get("cpu_threads", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        device = params.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        wanted = params.get("dtype", "auto")
        # Half precision on CPU is slow or unsupported for some kernels: CPU computes in fp32.
        if self.device.type == "cpu" or wanted not in ("bfloat16", "float16"):
            dtype = torch.float32 if self.device.type == "cpu" else "auto"
        else:
            dtype = getattr(torch, wanted)
        self.model = load_causal_lm(
            params["checkpoint_dir"],
            dtype=dtype,
            trust_remote_code=params.get("trust_remote_code") == "true",
        )
        self.model.to(self.device).eval()
        self.torch = torch
        self.lock = threading.Condition()
        self.waiting: collections.deque[_Job] = collections.deque()
        self.active: list[_Job] = []
        self.by_id: dict[str, _Job] = {}
        self.last_arrival = 0
        self.running = True
        self.generated = 0  # tokens generated and not yet counted (_count_tokens)
        # Responses and metric updates go to Triton from a thread of their own, so that the
        # scheduler never waits on a send (chatmodel_helpers.Outbox).
        self.outbox = chatmodel_helpers.Outbox()
        self.text = chatmodel_helpers.EngineText.from_parameters(pb_utils, params, self.outbox)
        self.interval = chatmodel_helpers.StreamInterval.from_parameters(params)
        self._metrics()
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self.thread.start()

    def _metrics(self) -> None:
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        # The families must outlive their metrics, so they are kept on the model.
        self.families = {
            name: pb_utils.MetricFamily(name=name, description=text, kind=kind)
            for name, text, kind in (
                (
                    "chatmodel_engine_active_sequences",
                    "Sequences holding a slot of the Python engine",
                    gauge,
                ),
                (
                    "chatmodel_engine_waiting_requests",
                    "Requests waiting for a slot of the Python engine",
                    gauge,
                ),
                (
                    "chatmodel_engine_generated_tokens_total",
                    "Tokens generated by the Python engine",
                    counter,
                ),
                (
                    "chatmodel_engine_cancelled_requests_total",
                    "Requests the Python engine stopped because the client went away",
                    counter,
                ),
            )
        }
        labels = {"model": "tensorrt_llm"}
        self.m_active = chatmodel_helpers.Gauge(
            self.families["chatmodel_engine_active_sequences"].Metric(labels=labels)
        )
        self.m_waiting = chatmodel_helpers.Gauge(
            self.families["chatmodel_engine_waiting_requests"].Metric(labels=labels)
        )
        self.m_tokens = self.families["chatmodel_engine_generated_tokens_total"].Metric(
            labels=labels
        )
        self.m_cancelled = self.families["chatmodel_engine_cancelled_requests_total"].Metric(
            labels=labels
        )
        self.router = chatmodel_helpers.RouterGauges(pb_utils, max_requests=self.max_slots)
        self.max_blocks = self.max_slots * -(-self.max_seq // TOKENS_PER_BLOCK)
        self._publish()

    def _publish(self) -> None:
        """The gauges as of now, handed to the outbox (under self.lock)."""
        active = list(self.active)
        used = sum(-(-(len(j.prompt) + len(j.out)) // TOKENS_PER_BLOCK) for j in active)
        self.outbox.call(self._set_gauges, len(self.waiting), len(active), used)

    def _set_gauges(self, waiting: int, active: int, used: int) -> None:
        """On the outbox's thread (each set that changes a value is a round trip to Triton)."""
        self.m_waiting.set(waiting)
        self.m_active.set(active)
        self.router.set_requests(waiting=waiting, scheduled=active)
        self.router.set_blocks(used=used, total=self.max_blocks, tokens_per=TOKENS_PER_BLOCK)

    def finalize(self) -> None:
        with self.lock:
            self.running = False
            self.lock.notify_all()
        self.thread.join(timeout=10)
        self.outbox.close()

    # --- requests ------------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                if _scalar(request, "stop", False):
                    self._stop(request.request_id())
                    self.outbox.send(sender, None, FINAL)
                    continue
                job = self._job(request, sender)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                self.outbox.send(sender, pb_utils.InferenceResponse(error=error), FINAL)
                continue
            with self.lock:
                self.waiting.append(job)
                if job.request_id:
                    self.by_id[job.request_id] = job
                self._publish()
                self.lock.notify()
        return None

    def _stop(self, request_id: str) -> None:
        with self.lock:
            job = self.by_id.get(request_id)
            if job is not None:
                job.cancelled = True

    def _job(self, request: Any, sender: Any) -> _Job:
        ids_tensor = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if ids_tensor is None:
            raise ValueError("input_ids is required")
        ids = ids_tensor.as_numpy().reshape(-1).tolist()
        length = int(_scalar(request, "input_lengths", len(ids)))
        prompt = [int(i) for i in ids[:length]]
        max_new = int(_scalar(request, "request_output_len", 0))
        if not prompt or max_new < 1:
            raise ValueError("input_ids must not be empty and request_output_len must be >= 1")
        if len(prompt) + max_new > self.max_seq:
            raise ValueError(
                f"{len(prompt)} input + {max_new} output tokens exceed the maximum sequence "
                f"length {self.max_seq}"
            )
        if int(_scalar(request, "beam_width", 1)) != 1:
            raise ValueError("beam_width other than 1 is not supported by the Python engine")
        wanted = chatmodel_helpers.engine_outputs(request.requested_output_names(), self.text)
        seed = _scalar(request, "seed", None)
        generator = None
        if seed is not None:
            generator = self.torch.Generator(device=self.device).manual_seed(int(seed))
        arrival = self._arrival()
        return _Job(
            request=request,
            sender=sender,
            request_id=request.request_id(),
            prompt=prompt,
            max_new=max_new,
            end_id=int(_scalar(request, "end_id", -1)),
            stops=_word_list(request, "stop_words_list"),
            bad=_word_list(request, "bad_words_list"),
            temperature=float(_scalar(request, "temperature", 1.0)),
            top_k=int(_scalar(request, "runtime_top_k", 1)),
            top_p=float(_scalar(request, "runtime_top_p", 0.0)),
            repetition_penalty=float(_scalar(request, "repetition_penalty", 1.0)),
            presence_penalty=float(_scalar(request, "presence_penalty", 0.0)),
            frequency_penalty=float(_scalar(request, "frequency_penalty", 0.0)),
            min_tokens=int(_scalar(request, "min_tokens", 0)),
            streaming=bool(_scalar(request, "streaming", False)),
            exclude_input=bool(_scalar(request, "exclude_input_in_output", self.exclude_default)),
            generator=generator,
            arrival=arrival,
            wanted=wanted,
            text=self.text.stream(arrival) if self.text and "text_output" in wanted else None,
        )

    def _arrival(self) -> int:
        """Nanoseconds since the epoch, unique per request: postprocessing keys streams by it."""
        with self.lock:
            self.last_arrival = max(time.time_ns(), self.last_arrival + 1)
            return self.last_arrival

    # --- the scheduler ----------------------------------------------------------------------

    def _loop(self) -> None:
        torch = self.torch
        with torch.inference_mode():
            while True:
                with self.lock:
                    while self.running and not self.waiting and not self.active:
                        idle = not self.lock.wait(timeout=chatmodel_helpers.IDLE_FLUSH_S)
                        if idle and self.text is not None:  # the last observations go out
                            self.outbox.call(self.text.latency.flush)
                    if not self.running:
                        return
                    admitted: list[_Job] = []
                    while self.waiting and len(self.active) + len(admitted) < self.max_slots:
                        admitted.append(self.waiting.popleft())
                for job in admitted:
                    self.active.append(job)
                    self._advance(job, prefill=True)
                for job in list(self.active):
                    if job in self.active and job not in admitted:
                        self._advance(job, prefill=False)
                self._count_tokens()
                with self.lock:
                    self._publish()

    def _advance(self, job: _Job, *, prefill: bool) -> None:
        try:
            if self._gone(job):
                job.cancelled = True
                self.outbox.call(self.m_cancelled.increment, 1)
                self._finish(job)
                return
            torch = self.torch
            if prefill:
                tokens = torch.tensor([job.prompt], dtype=torch.long, device=self.device)
            else:
                tokens = torch.tensor([[job.last]], dtype=torch.long, device=self.device)
            out = self.model(input_ids=tokens, past_key_values=job.cache, use_cache=True)
            job.cache = out.past_key_values
            self._take(job, self._sample(job, out.logits[0, -1].float()))
        except Exception as exc:  # fail this request, keep the engine serving the others
            error = pb_utils.TritonError(f"tensorrt_llm (python): {type(exc).__name__}: {exc}")
            self.outbox.send(job.sender, pb_utils.InferenceResponse(error=error), FINAL)
            self._release(job)

    def _gone(self, job: _Job) -> bool:
        if job.cancelled:
            return True
        now = time.monotonic()
        if now - job.checked < CANCEL_CHECK_S:
            return False
        job.checked = now
        return bool(job.sender.is_cancelled())

    def _sample(self, job: _Job, logits: Any) -> int:
        torch = self.torch
        seen = job.prompt + job.out
        if job.repetition_penalty != 1.0 and seen:
            idx = torch.tensor(sorted(set(seen)), device=logits.device)
            picked = logits[idx]
            logits[idx] = torch.where(
                picked > 0, picked / job.repetition_penalty, picked * job.repetition_penalty
            )
        if (job.presence_penalty or job.frequency_penalty) and job.counts:
            idx = torch.tensor(list(job.counts), device=logits.device)
            counts = torch.tensor(list(job.counts.values()), device=logits.device).float()
            logits[idx] -= job.presence_penalty + job.frequency_penalty * counts
        for word in job.bad:
            if len(word) == 1 or job.out[-(len(word) - 1) :] == word[:-1]:
                logits[word[-1]] = float("-inf")
        if len(job.out) < job.min_tokens and 0 <= job.end_id < logits.shape[0]:
            logits[job.end_id] = float("-inf")
        if job.top_k == 1 or job.temperature <= 0.0:
            return int(torch.argmax(logits).item())
        logits = logits / job.temperature
        if job.top_k > 0:
            kth = torch.topk(logits, min(job.top_k, logits.shape[0])).values[-1]
            logits[logits < kth] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        if 0.0 < job.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            cut = torch.cumsum(sorted_p, dim=-1) - sorted_p > job.top_p
            sorted_p[cut] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=job.generator).item())

    def _take(self, job: _Job, token: int) -> None:
        self.generated += 1
        if token == job.end_id:
            self._finish(job)
            return
        job.out.append(token)
        now = time.monotonic_ns()
        job.gap_ns, job.token_ns = (now - job.token_ns if job.token_ns else 0), now
        if not job.pending:
            job.held_since = now
        job.pending.append(token)
        job.counts[token] = job.counts.get(token, 0) + 1
        job.last = token
        done = len(job.out) >= job.max_new or len(job.prompt) + len(job.out) >= self.max_seq
        done = done or any(job.out[-len(w) :] == w for w in job.stops if w)
        if done:
            self._finish(job)
        elif (
            job.streaming
            and not self.outbox.waiting(job.sender)  # its last response is not out yet
            and self.interval.due(
                len(job.pending), job.held_since, len(self.active), now, job.gap_ns
            )
        ):
            response = self._response(job, self._drain(job))
            if response is not None:
                self.outbox.send(job.sender, response)

    def _drain(self, job: _Job) -> list[int]:
        """Tokens not yet sent; the prompt goes first unless excluded (TensorRT-LLM's rule)."""
        tokens = job.pending if job.exclude_input or job.sent else job.prompt + job.pending
        job.pending, job.sent = [], True
        return tokens

    def _response(self, job: _Job, tokens: list[int], *, final: bool = False) -> Any | None:
        return chatmodel_helpers.engine_response(
            pb_utils,
            np,
            tokens,
            wanted=job.wanted,
            arrival_ns=job.arrival,
            prompt_tokens=len(job.prompt),
            batched=self.batched,
            text=job.text,
            final=final,
        )

    def _count_tokens(self) -> None:
        """The tokens generated since the last count, once per round rather than per token (each
        update is a round trip to Triton), and before a final response (which a client may
        follow with a look at the metrics)."""
        if self.generated:
            self.outbox.call(self.m_tokens.increment, self.generated)
            self.generated = 0

    def _finish(self, job: _Job) -> None:
        self._count_tokens()
        try:
            if job.cancelled:
                self.outbox.send(job.sender, None, FINAL)
            elif job.streaming:
                tokens = self._drain(job)
                # Text still held back (an incomplete character at the end) goes out too.
                last = tokens or job.text is not None
                response = self._response(job, tokens, final=True) if last else None
                self.outbox.send(job.sender, response, FINAL)
            else:
                # One response with every token, even none (the client asked for one answer).
                response = self._response(job, self._drain(job), final=True)
                self.outbox.send(job.sender, response, FINAL)
        finally:
            self._release(job)

    def _release(self, job: _Job) -> None:
        job.cache = None
        if job in self.active:
            self.active.remove(job)
        with self.lock:
            if job.request_id and self.by_id.get(job.request_id) is job:
                del self.by_id[job.request_id]
