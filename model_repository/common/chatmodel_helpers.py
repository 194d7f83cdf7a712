"""Helpers of our Triton Python models that touch files or Triton (shipped next to each one).

``load_tokenizer`` reads ``tokenizer.json`` with the ``tokenizers`` library alone: it starts in
milliseconds and leaves ``transformers`` (seconds to import) to checkpoints that only ship a
slow tokenizer, such as TeleChat's SentencePiece model with remote code.

``speed_up_string_tensors`` replaces the Python backend's serializer of string tensors, which
walks every element with ``np.nditer``, by one that joins the length-prefixed bytes directly
(the same bytes): text outputs are made once per streamed token, so this is on the hot path.

The engines' shared parts are here too: ``RouterGauges`` (TensorRT-LLM's gauges for the llm-d
router), ``StreamInterval`` (fewer, larger responses under load) and ``EngineText`` (the text
output that lets the Python engines' ensemble skip postprocessing).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import chatmodel_textproc as tp


class Tokenizer:
    """What preprocessing, postprocessing and the BLS need from a tokenizer."""

    def __init__(
        self,
        encode: Any,
        decode: Any,
        vocab: dict[str, int],
        table: tp.TokenTable | None,
        eos_id: int | None,
        pad_id: int | None,
    ) -> None:
        self._encode = encode
        self._decode = decode
        self.vocab = vocab
        self.table = table
        self.eos_id = eos_id
        self.pad_id = pad_id

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def token_id(self, text: str) -> int | None:
        return self.vocab.get(text)

    def decoder(self) -> tp.IncrementalDecoder | tp.WindowDecoder:
        if self.table is not None:
            return self.table.decoder()
        return tp.WindowDecoder(self._decode)

    def decode(self, ids: Sequence[int]) -> str:
        dec = self.decoder()
        return dec.push(ids) + dec.finish()


def _token_id(vocab: dict[str, int], value: Any) -> int | None:
    if isinstance(value, dict):  # tokenizer_config.json stores AddedToken objects
        value = value.get("content")
    return vocab.get(value) if isinstance(value, str) else None


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def load_tokenizer(
    tokenizer_dir: str, *, trust_remote_code: bool = False, extra_special_ids: Iterable[int] = ()
) -> Tokenizer:
    extra = list(extra_special_ids)
    config = _read_json(os.path.join(tokenizer_dir, "tokenizer_config.json"))
    tok_json = os.path.join(tokenizer_dir, "tokenizer.json")
    if os.path.exists(tok_json):
        from tokenizers import Tokenizer as FastTokenizer

        fast = FastTokenizer.from_file(tok_json)
        vocab = fast.get_vocab(with_added_tokens=True)
        table = tp.token_table_from_tokenizer_json(_read_json(tok_json), extra)

        def encode(text: str) -> list[int]:
            return fast.encode(text, add_special_tokens=False).ids

        def decode(ids: Sequence[int]) -> str:
            return fast.decode(list(ids), skip_special_tokens=True)

        return Tokenizer(
            encode,
            decode,
            vocab,
            table,
            _token_id(vocab, config.get("eos_token")),
            _token_id(vocab, config.get("pad_token")),
        )

    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)
    vocab = dict(slow.get_vocab())
    backend = getattr(slow, "backend_tokenizer", None)
    table = None
    if backend is not None:
        table = tp.token_table_from_tokenizer_json(json.loads(backend.to_str()), extra)
    elif getattr(slow, "sp_model", None) is not None:
        # A SentencePiece model: pieces use "▁" for spaces and <0xHH> for fallback bytes.
        pieces = slow.convert_ids_to_tokens(list(range(len(slow))))
        table = tp.token_table(
            pieces,
            style="sentencepiece",
            special_ids=set(slow.all_special_ids) | set(extra),
            strip_leading_space=True,
        )
    return Tokenizer(
        lambda text: slow.encode(text, add_special_tokens=False),
        lambda ids: slow.decode(list(ids), skip_special_tokens=True),
        vocab,
        table,
        slow.eos_token_id,
        slow.pad_token_id,
    )


def decoding_tokenizer(params: dict[str, str]) -> Tokenizer:
    """The tokenizer a model that turns token ids into text loads, from the config parameters
    the repository gives it: ``tokenizer_dir``, ``trust_remote_code``, and the special tokens
    to leave out of the text (``skip_special_tokens``, ``special_token_ids``)."""
    skip = params.get("skip_special_tokens", "true") == "true"
    special = [int(x) for x in params.get("special_token_ids", "").split(",") if x.strip()]
    return load_tokenizer(
        params["tokenizer_dir"],
        trust_remote_code=params.get("trust_remote_code") == "true",
        extra_special_ids=special if skip else (),
    )


def speed_up_string_tensors(pb_utils: Any, np: Any) -> None:
    slow = pb_utils.serialize_byte_tensor
    pack = struct.Struct("<I").pack

    def serialize(tensor: Any) -> Any:
        if tensor.dtype == np.object_:
            items = tensor.ravel().tolist()
            if items and all(type(item) is bytes for item in items):
                return b"".join([part for s in items for part in (pack(len(s)), s)])
        return slow(tensor)

    pb_utils.serialize_byte_tensor = serialize


# What our engines can return, in the tensor contract's order; a request that names none gets
# them all (as Triton's generate endpoint makes such requests).
ENGINE_OUTPUTS = (
    "output_ids",
    "sequence_length",
    "arrival_time_ns",
    "num_input_tokens",
    "text_output",
    "num_output_tokens",
)

# Names docs/metrics.md documents and the serving dashboard reads (next to Triton's own
# nv_inference_first_response_histogram_ms, which Triton's OpenAI frontend does not enable).
TTFT_METRIC = "chatmodel_time_to_first_token_ms"
ITL_METRIC = "chatmodel_inter_token_latency_ms"
TTFT_BUCKETS_MS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
ITL_BUCKETS_MS = [1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560]
# How stale the latency series may be while a model is busy: observations are counted here and
# sent to Triton at most this often (and whenever the model says it is idle).
FLUSH_S = 1.0
# How long an engine is idle before it flushes them: a request that comes sooner (clients that
# send one after another) does not find its first response queued behind the flush.
IDLE_FLUSH_S = 0.1


class _Histogram:
    """A classic Prometheus histogram counted in this process and sent to Triton as the
    counters of its series: ``<name>_bucket{le}`` (cumulative), ``<name>_sum`` and
    ``<name>_count``. The same series, labels and PromQL as a histogram, but a flush costs one
    round trip per series that moved, where the Python backend's own histogram costs one round
    trip per observation."""

    __slots__ = ("bounds", "bucket", "count", "counts", "sent", "sent_sum", "sum", "total")

    def __init__(
        self, families: Sequence[Any], labels: dict[str, str], bounds: Sequence[float]
    ) -> None:
        self.bounds = sorted(bounds)
        les = [f"{b:g}" for b in self.bounds] + ["+Inf"]
        self.bucket = [families[0].Metric(labels={**labels, "le": le}) for le in les]
        self.sum = families[1].Metric(labels=labels)
        self.count = families[2].Metric(labels=labels)
        self.counts = [0] * len(les)  # observations per bucket, not cumulative
        self.total = 0.0
        # What Triton has: the cumulative count of each bucket, and the sum.
        self.sent = [0] * len(les)
        self.sent_sum = 0.0

    def observe(self, value: float) -> None:
        # le is inclusive: a value equal to a bound counts in that bound's bucket.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[int], float]:
        return list(self.counts), self.total

    def send(self, counts: list[int], total: float) -> None:
        """Send Triton what moved up to ``snapshot()``'s ``counts`` and ``total``."""
        cumulative = 0
        for i, n in enumerate(counts):
            cumulative += n
            if cumulative > self.sent[i]:
                self.bucket[i].increment(cumulative - self.sent[i])
                if i == len(counts) - 1:  # +Inf: every observation
                    self.count.increment(cumulative - self.sent[i])
                    self.sum.increment(total - self.sent_sum)
                    self.sent_sum = total
                self.sent[i] = cumulative


class TokenLatency:
    """Time to first token and inter-token latency as histograms, labelled with the
    client-facing model whose requests they time.

    Each call of the Python backend's custom-metric API is a blocking round trip to Triton's
    process. So observations are counted here (``_Histogram``) and sent at most every
    ``FLUSH_S`` while the model is busy, and when its owner calls ``flush`` (when it has been
    idle a moment). A flush sends a snapshot: observing never waits for one. Flushes are
    serialized: the BLS times its requests from many threads, and concurrent custom-metric
    calls from one model's threads crashed Triton 2.51's Python backend (a segfault in
    libtriton_python.so under 16 concurrent streams). An engine hands its flushes to its
    sending thread (``defer``: ``Outbox.call``), where its other calls into Triton are made."""

    def __init__(
        self,
        pb_utils: Any,
        model: str,
        *,
        flush_s: float = FLUSH_S,
        defer: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.lock = threading.Lock()  # the counts
        self.sending = threading.Lock()  # one flush at a time
        self.flush_ns = int(flush_s * 1e9)
        self.flushed_ns = time.monotonic_ns()
        self.pending = False  # observations not sent yet
        self.claimed = False  # a due flush is on its way
        self.defer = defer
        counter = pb_utils.MetricFamily.COUNTER
        # The families must outlive their metrics, so they are kept here.
        self.families = tuple(
            pb_utils.MetricFamily(name=f"{name}{suffix}", description=text, kind=counter)
            for name, text in (
                (TTFT_METRIC, "Time from a request's arrival to its first generated token (ms)"),
                (ITL_METRIC, "Time between a request's generated tokens after the first (ms)"),
            )
            for suffix in ("_bucket", "_sum", "_count")
        )
        labels = {"model": model}
        self.ttft = _Histogram(self.families[:3], labels, TTFT_BUCKETS_MS)
        self.itl = _Histogram(self.families[3:], labels, ITL_BUCKETS_MS)

    def first(self, ms: float) -> None:
        self._observe(self.ttft, max(ms, 0.0))

    def gap(self, ms: float, tokens: int) -> None:
        """A response with ``tokens`` came ``ms`` after the previous one: one observation of
        the time per token (per response, not per token: under load a response carries
        several tokens)."""
        if tokens > 0:
            self._observe(self.itl, max(ms, 0.0) / tokens)

    def _observe(self, histogram: _Histogram, value: float) -> None:
        with self.lock:
            histogram.observe(value)
            self.pending = True
            due = not self.claimed and time.monotonic_ns() - self.flushed_ns >= self.flush_ns
            if due:
                self.claimed = True
        if due:
            if self.defer is None:
                self.flush()
            else:
                self.defer(self.flush)

    def flush(self) -> None:
        """Send what was counted since the last flush."""
        with self.sending:
            with self.lock:
                self.claimed = False
                if not self.pending:
                    return
                self.pending = False
                self.flushed_ns = time.monotonic_ns()
                ttft, itl = self.ttft.snapshot(), self.itl.snapshot()
            self.ttft.send(*ttft)
            self.itl.send(*itl)


class Gauge:
    """A custom-metric gauge set only when its value changes: each set is a round trip to
    Triton's process."""

    __slots__ = ("metric", "value")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.value: float | None = None

    def set(self, value: float) -> None:
        if value != self.value:
            self.value = value
            self.metric.set(value)


class RouterGauges:
    """nv_trt_llm_request_metrics{request_type} and nv_trt_llm_kv_cache_block_metrics
    {kv_cache_block_type}, as the TensorRT-LLM C++ backend exports them: the llm-d router reads
    them from pods labelled llm-d.ai/engine-type=triton-tensorrt-llm, so our Python engines
    export them with the same meaning."""

    def __init__(self, pb_utils: Any, *, max_requests: int, model: str = "tensorrt_llm") -> None:
        gauge = pb_utils.MetricFamily.GAUGE
        # The families must outlive their metrics, so they are kept here.
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
        base = {"model": model, "version": "1"}
        self.requests = {
            t: Gauge(self.families[0].Metric(labels={**base, "request_type": t}))
            for t in ("waiting", "scheduled", "active", "max")
        }
        self.blocks = {
            t: Gauge(self.families[1].Metric(labels={**base, "kv_cache_block_type": t}))
            for t in ("fraction", "tokens_per", "max", "used", "free")
        }
        self.requests["max"].set(max_requests)
        self.set_requests(waiting=0, scheduled=0)

    def set_requests(self, *, waiting: int, scheduled: int) -> None:
        self.requests["waiting"].set(waiting)
        self.requests["scheduled"].set(scheduled)
        self.requests["active"].set(scheduled)

    def set_blocks(
        self, *, used: int, total: int, tokens_per: int, free: int | None = None
    ) -> None:
        self.blocks["tokens_per"].set(tokens_per)
        self.blocks["max"].set(total)
        self.blocks["used"].set(used)
        self.blocks["free"].set(total - used if free is None else free)
        self.blocks["fraction"].set(used / total if total > 0 else 0.0)


class Outbox:
    """The one thread that talks to Triton for an engine: its responses, in order, and its
    metric updates, handed over by the thread that generates (``send``, ``call``).

    ``InferenceResponseSender.send`` blocks until Triton's process has taken the response (for
    the ensemble's last step that includes turning it into the client's HTTP chunk): on the
    generating thread every send held up every stream. One thread, not several: in Triton 2.51
    sends from several threads at once wrote one stream's chunk into another's HTTP response,
    and custom-metric calls from a thread other than the sending one stalled the backend (see
    docs/dataplane-cost.md). Calls into Triton that must answer (``is_cancelled``) stay with
    their caller.

    A stream has at most one response waiting here (``waiting``): its engine holds the tokens
    that come meanwhile and sends them in its next response, so when Triton takes responses
    slower than the engine makes tokens the responses grow instead of the queue, and no token
    waits longer than it would have in the queue."""

    def __init__(self, name: str = "send") -> None:
        self.items: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None
        ] = queue.SimpleQueue()
        self.busy: set[int] = set()  # id() of the senders with a response waiting
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def send(self, sender: Any, response: Any = None, flags: int = 0) -> None:
        self.busy.add(id(sender))
        self.items.put((self._send, (sender, response, flags), {}))

    def waiting(self, sender: Any) -> bool:
        """Whether a response of ``sender``'s stream is still waiting to go out."""
        return id(sender) in self.busy

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.items.put((fn, args, kwargs))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop."""
        self.items.put(None)
        self.thread.join(timeout)

    def _send(self, sender: Any, response: Any, flags: int) -> None:
        try:
            sender.send(response, flags=flags)
        finally:
            self.busy.discard(id(sender))

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            fn, args, kwargs = item
            # A client gone must not stop the other streams or the metrics.
            with contextlib.suppress(Exception):
                fn(*args, **kwargs)


class StreamInterval:
    """When an engine sends a stream's generated tokens: at once while few streams are active,
    and under load (``min_streams`` or more) once ``max_tokens`` are held or the oldest held
    token has waited ``max_delay_ms``. Every response costs the pipeline after the engine the
    same whatever its size (a Python round trip, Triton's ensemble step, an HTTP chunk), so
    under load fewer, larger responses are what keeps the pipeline from capping the engine;
    the delay bounds what a reader can see of it. ``max_tokens`` 1 sends every token."""

    __slots__ = ("max_delay_ns", "max_tokens", "min_streams")

    def __init__(self, max_tokens: int, max_delay_ms: float, min_streams: int) -> None:
        self.max_tokens = max(1, max_tokens)
        self.max_delay_ns = int(max_delay_ms * 1e6)
        self.min_streams = max(1, min_streams)

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> StreamInterval:
        """From the engine's config parameters (every token when they are absent)."""
        return cls(
            int(params.get("stream_interval_tokens", "1") or 1),
            float(params.get("stream_interval_ms", "0") or 0),
            int(params.get("stream_interval_min_streams", "1") or 1),
        )

    def due(self, held: int, held_since_ns: int, active: int, now_ns: int, gap_ns: int) -> bool:
        """Whether ``held`` tokens, the oldest held since ``held_since_ns``, go out now, when
        the stream's next token is expected ``gap_ns`` from now (its last inter-token gap): a
        token is only held if the next one should come before its delay runs out, so an engine
        slower than the interval streams every token as it comes."""
        if held <= 0:
            return False
        if self.max_tokens == 1 or active < self.min_streams or held >= self.max_tokens:
            return True
        return now_ns + gap_ns - held_since_ns >= self.max_delay_ns


class TextStream:
    """One stream's text as the engine emits it: an incremental decoder (UTF-8 safe, the bytes
    of an incomplete character held back) and the stream's TTFT and inter-token timing."""

    __slots__ = ("arrival_ns", "carried", "decoder", "last_ns", "latency")

    def __init__(self, decoder: Any, latency: TokenLatency, arrival_ns: int) -> None:
        self.decoder = decoder
        self.latency = latency
        self.arrival_ns = arrival_ns
        self.last_ns = 0
        self.carried = 0  # tokens decoded into no text yet, not yet counted in a response

    def delta(self, tokens: Sequence[int], *, final: bool) -> tuple[bytes, int] | None:
        """The text of ``tokens`` and how many tokens the response carrying it counts, or None
        where there is no text to send yet: a response with no text would cost the pipeline a
        round trip for nothing (byte-fallback Chinese is three tokens per character), so its
        tokens are counted in the next one instead (usage adds the counts up). Each response
        with tokens is timed as the client sees it: the first from the request's arrival, the
        others from the previous response."""
        text = self.decoder.push(tokens) if tokens else ""
        if final:
            text += self.decoder.finish()
        count = self.carried + len(tokens)
        if not text and not final:
            self.carried = count
            return None
        self.carried = 0
        if count:
            now = time.time_ns()  # arrival times are nanoseconds since the epoch
            if self.last_ns:
                self.latency.gap((now - self.last_ns) / 1e6, count)
            else:
                self.latency.first((now - self.arrival_ns) / 1e6)
            self.last_ns = now
        return text.encode("utf-8"), count


class EngineText:
    """The text output of our Python engines (``text_output``), so that their ensemble needs no
    postprocessing step: one Python round trip per response fewer. Configured by the same
    parameters as postprocessing; timed as the ensemble's TTFT and inter-token latency, which
    postprocessing times where it runs."""

    def __init__(self, pb_utils: Any, params: dict[str, str], outbox: Outbox | None = None) -> None:
        self.tokenizer = decoding_tokenizer(params)
        defer = outbox.call if outbox is not None else None
        self.latency = TokenLatency(pb_utils, "ensemble", defer=defer)

    @classmethod
    def from_parameters(
        cls, pb_utils: Any, params: dict[str, str], outbox: Outbox | None = None
    ) -> EngineText | None:
        """None where the repository asks the engine for token ids only; its latency is
        flushed through ``outbox`` where the engine has one."""
        return cls(pb_utils, params, outbox) if params.get("tokenizer_dir") else None

    def stream(self, arrival_ns: int) -> TextStream:
        return TextStream(self.tokenizer.decoder(), self.latency, arrival_ns)


def engine_outputs(requested: Iterable[str], text: EngineText | None) -> set[str]:
    """The outputs an engine's request gets: those it names, or all (Triton asks for all when
    its client names none). Text is made only instead of ids (the ensemble's request), so a
    request for every output gets the ids alone without paying for text."""
    wanted = set(requested) or set(ENGINE_OUTPUTS)
    if "output_ids" in wanted:
        wanted.discard("text_output")
    elif "text_output" in wanted and text is None:
        raise ValueError("text_output needs the engine's tokenizer_dir parameter")
    return wanted


def engine_response(
    pb_utils: Any,
    np: Any,
    tokens: list[int],
    *,
    wanted: set[str],
    arrival_ns: int,
    prompt_tokens: int,
    batched: bool,
    text: TextStream | None = None,
    final: bool = False,
) -> Any | None:
    """One response of our engines with ``tokens``, holding only the outputs asked for (each
    tensor is copied once per streamed response); None where only text is asked for and there
    is none yet (see ``TextStream.delta``)."""
    values: dict[str, tuple[list[Any], Any]] = {
        "output_ids": ([tokens], np.int32),  # [beam, tokens]
        "sequence_length": ([len(tokens)], np.int32),
        "arrival_time_ns": ([arrival_ns], np.int64),
        # The prompt as the engine counts it: what usage.prompt_tokens reports.
        "num_input_tokens": ([prompt_tokens], np.int32),
        # This response's tokens (not a running total): what Triton's OpenAI frontend adds up
        # for usage.completion_tokens.
        "num_output_tokens": ([len(tokens)], np.int32),
    }
    if text is not None:
        delta = text.delta(tokens, final=final)
        if delta is None:
            return None
        values["text_output"] = ([delta[0]], np.object_)
        values["num_output_tokens"] = ([delta[1]], np.int32)
    out = []
    for name in ENGINE_OUTPUTS:
        if name in wanted:
            data, dtype = values[name]
            array = np.array([data] if batched else data, dtype=dtype)
            out.append(pb_utils.Tensor(name, array))
    return pb_utils.InferenceResponse(output_tensors=out)
