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
