"""Helpers of our Triton Python models that touch files or Triton (shipped next to each one).

``load_tokenizer`` reads ``tokenizer.json`` with the ``tokenizers`` library alone: it starts in
milliseconds and leaves ``transformers`` (seconds to import) to checkpoints that only ship a
slow tokenizer, such as TeleChat's SentencePiece model with remote code.

``speed_up_string_tensors`` replaces the Python backend's serializer of string tensors, which
walks every element with ``np.nditer``, by one that joins the length-prefixed bytes directly
(the same bytes): text outputs are made once per streamed token, so this is on the hot path.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterable, Sequence
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


# Names docs/metrics.md documents and the serving dashboard reads (next to Triton's own
# nv_inference_first_response_histogram_ms, which Triton's OpenAI frontend does not enable).
TTFT_METRIC = "chatmodel_time_to_first_token_ms"
ITL_METRIC = "chatmodel_inter_token_latency_ms"
TTFT_BUCKETS_MS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
ITL_BUCKETS_MS = [1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560]


class TokenLatency:
    """Time to first token and inter-token latency as histograms, through the Python
    backend's custom metrics (``MetricFamily.HISTOGRAM``), labelled with the client-facing
    model whose requests they time.

    Observations are serialized: the BLS times its requests from many threads, and concurrent
    custom-metric calls from one model's threads crashed Triton 2.51's Python backend (a
    segfault in libtriton_python.so under 16 concurrent streams)."""

    def __init__(self, pb_utils: Any, model: str) -> None:
        self.lock = threading.Lock()
        kind = pb_utils.MetricFamily.HISTOGRAM
        # The families must outlive their metrics, so they are kept here.
        self.families = (
            pb_utils.MetricFamily(
                name=TTFT_METRIC,
                description="Time from a request's arrival to its first generated token (ms)",
                kind=kind,
            ),
            pb_utils.MetricFamily(
                name=ITL_METRIC,
                description="Time between a request's generated tokens after the first (ms)",
                kind=kind,
            ),
        )
        labels = {"model": model}
        self.ttft = self.families[0].Metric(labels=labels, buckets=TTFT_BUCKETS_MS)
        self.itl = self.families[1].Metric(labels=labels, buckets=ITL_BUCKETS_MS)

    def first(self, ms: float) -> None:
        with self.lock:
            self.ttft.observe(max(ms, 0.0))

    def gap(self, ms: float, tokens: int) -> None:
        """``tokens`` arrived together ``ms`` after the previous ones: each took its share."""
        if tokens > 0:
            share = max(ms, 0.0) / tokens
            with self.lock:
                for _ in range(tokens):
                    self.itl.observe(share)
