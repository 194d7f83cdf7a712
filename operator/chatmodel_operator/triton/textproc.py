"""Text processing for the data plane: chat rendering, truncation, detokenization, word lists.

Our Triton Python models (preprocessing, postprocessing, the BLS) need exactly this code, and
they run inside stock Triton images where this package is not installed. So this module is
shipped verbatim into the model repository, as ``chatmodel_textproc.py`` next to each Python
model that imports it. Hence the rules for this file: standard library only (Jinja2, which
every image with ``transformers`` has, is imported lazily by ``ChatRenderer``), no I/O, and
nothing from ``chatmodel_operator``.

Streaming detokenization is the part that users of NVIDIA's models complain about: decoding
each streamed token on its own turns a character that spans several byte tokens into U+FFFD.
``IncrementalDecoder`` maps every token id to its bytes once (``TokenTable``), feeds them to an
incremental UTF-8 decoder, and so emits a character only once all its bytes have arrived, with
constant work per token. Decoding a whole sequence goes through the same object, which is why
the streamed chunks joined always equal the non-streamed text.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
ENVELOPE_KEY = "messages"


class RequestError(ValueError):
    """A request the client must fix; the Python models answer it with an INVALID_ARG (400)."""


# --- conversations -------------------------------------------------------------------------


def _content_text(content: Any, where: str) -> str:
    """OpenAI content: a string, or a list of parts of which only text parts are supported."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        out: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise RequestError(
                    f"{where}.content[{i}]: only text parts are supported "
                    '(use {"type": "text", "text": "..."})'
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}.content[{i}].text must be a string")
            out.append(text)
        return "".join(out)
    raise RequestError(f"{where}.content must be a string or a list of text parts")


def normalize_messages(raw: Any) -> list[dict[str, str]]:
    """Validate OpenAI-style messages and reduce them to ``{"role", "content"}`` strings."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise RequestError(f"{where} must be an object with role and content")
        role = msg.get("role")
        if isinstance(role, str):
            role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            names = ", ".join((*ROLES, *ROLE_ALIASES))
            raise RequestError(f"{where}.role must be one of {names}; got {msg.get('role')!r}")
        out.append({"role": str(role), "content": _content_text(msg.get("content"), where)})
    if not any(m["role"] == "user" for m in out):
        raise RequestError("messages must contain at least one user message")
    return out


def parse_conversation(text: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """What a ``text_input`` asks for, as messages.

    ``{"messages": [...]}`` (our OpenAI fronts send this envelope) is a whole conversation;
    any other text is one user turn, after ``system_prompt`` when there is one.
    """
    stripped = text.lstrip()
    if stripped.startswith("{") and f'"{ENVELOPE_KEY}"' in stripped:
        try:
            doc = json.loads(stripped)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ENVELOPE_KEY in doc:
            return normalize_messages(doc[ENVELOPE_KEY])
    messages = [{"role": "user", "content": text}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def envelope(messages: Sequence[Mapping[str, Any]]) -> str:
    """The ``text_input`` that carries a whole conversation to the preprocessing model."""
    return json.dumps({ENVELOPE_KEY: list(messages)}, ensure_ascii=False)


class ChatRenderer:
    """Renders messages with a Jinja chat template, as Hugging Face tokenizers do (sandboxed,
    trim_blocks and lstrip_blocks, ``raise_exception`` and ``tojson`` available)."""

    def __init__(self, template: str, variables: Mapping[str, Any] | None = None) -> None:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise RequestError(f"chat template: {message}")

        def tojson(value: Any, indent: int | None = None) -> str:
            return json.dumps(value, ensure_ascii=False, indent=indent)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        try:
            self._template = env.from_string(template)
        except TemplateError as exc:
            raise ValueError(f"chat template does not compile: {exc}") from None
        self._errors: tuple[type[Exception], ...] = (TemplateError,)
        self._variables = dict(variables or {})

    def render(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                **self._variables,
            )
        except self._errors as exc:
            raise RequestError(f"chat template failed on these messages: {exc}") from None


def _droppable_units(messages: Sequence[Mapping[str, str]]) -> list[list[int]]:
    """Indices of the turns that truncation may drop, oldest first.

    Kept always: every system message and everything from the last user message on. A unit
    starts at a user message and takes the replies after it, so that what remains still
    alternates user/assistant.
    """
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    units: list[list[int]] = []
    for i in range(last_user):
        if messages[i]["role"] == "system":
            continue
        if messages[i]["role"] == "user" or not units:
            units.append([i])
        else:
            units[-1].append(i)
    return units


@dataclass(frozen=True)
class Fitted:
    """A conversation cut to fit: the prompt, its token ids and how many turns were dropped."""

    prompt: str
    ids: list[int]
    dropped_turns: int


def fit_conversation(
    messages: Sequence[Mapping[str, str]],
    render: Callable[[Sequence[Mapping[str, str]]], str],
    encode: Callable[[str], list[int]],
    max_tokens: int,
) -> Fitted:
    """Render and encode, dropping the oldest turns until the prompt has at most ``max_tokens``.

    The token count falls as more turns are dropped, so a binary search over the number of
    dropped turns needs O(log turns) renders rather than one per turn.
    """
    units = _droppable_units(messages)

    def attempt(k: int) -> Fitted:
        gone = {i for unit in units[:k] for i in unit}
        kept = [m for i, m in enumerate(messages) if i not in gone]
        prompt = render(kept)
        return Fitted(prompt, encode(prompt), k)

    full = attempt(0)
    if len(full.ids) <= max_tokens:
        return full
    lo, hi = 1, len(units)
    best = attempt(hi) if units else full
    if len(best.ids) > max_tokens:
        raise RequestError(
            f"the prompt has {len(best.ids)} tokens even with only the system prompt and the "
            f"last user turn, more than maxInputLength {max_tokens}; shorten the last message"
        )
    while lo < hi:
        mid = (lo + hi) // 2
        got = attempt(mid)
        if len(got.ids) <= max_tokens:
            best, hi = got, mid
        else:
            lo = mid + 1
    return best


# --- token bytes ---------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte as a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


_SP_SPACE = "▁"


def _sentencepiece_bytes(piece: str, byte_fallback: bool) -> bytes:
    if byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace(_SP_SPACE, " ").encode("utf-8")


@dataclass(frozen=True)
class TokenTable:
    """The bytes of every token id (empty for special tokens, which are not shown)."""

    pieces: tuple[bytes, ...]
    strip_leading_space: bool = False

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)

    def decode(self, ids: Iterable[int]) -> str:
        dec = IncrementalDecoder(self)
        return dec.push(ids) + dec.finish()


def token_table(
    pieces: Sequence[str | None],
    *,
    style: str,
    special_ids: Iterable[int] = (),
    strip_leading_space: bool = False,
    byte_fallback: bool = True,
) -> TokenTable:
    """A table from each id's vocabulary piece. ``style`` is ``byte_level`` (GPT-2 alphabet) or
    ``sentencepiece`` (``▁`` for space, ``<0xHH>`` byte-fallback pieces)."""
    skip = set(special_ids)
    out: list[bytes] = []
    if style == "byte_level":
        inverse = {c: b for b, c in bytes_to_unicode().items()}
        for i, piece in enumerate(pieces):
            if piece is None or i in skip:
                out.append(b"")
            elif all(ch in inverse for ch in piece):
                out.append(bytes(inverse[ch] for ch in piece))
            else:  # an added token written as plain text
                out.append(piece.encode("utf-8"))
    elif style == "sentencepiece":
        for i, piece in enumerate(pieces):
            out.append(
                b"" if piece is None or i in skip else _sentencepiece_bytes(piece, byte_fallback)
            )
    else:
        raise ValueError(f"unknown token style {style!r}")
    return TokenTable(tuple(out), strip_leading_space)


def _decoder_steps(decoder: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [d for d in decoder.get("decoders") or [] if isinstance(d, Mapping)]
    return [decoder]


def token_table_from_tokenizer_json(
    tok: Mapping[str, Any], extra_special_ids: Iterable[int] = ()
) -> TokenTable | None:
    """A table from a ``tokenizer.json`` document, or None when its decoder is not one whose
    tokens map to bytes on their own (then ``WindowDecoder`` is the fallback)."""
    model = tok.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, Mapping):  # BPE, WordPiece, WordLevel
        pairs = [(int(i), str(p)) for p, i in vocab.items()]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        pairs = [(i, str(entry[0])) for i, entry in enumerate(vocab)]
    else:
        return None
    special: set[int] = set(extra_special_ids)
    for added in tok.get("added_tokens") or []:
        pairs.append((int(added["id"]), str(added["content"])))
        if added.get("special"):
            special.add(int(added["id"]))
    size = max(i for i, _ in pairs) + 1 if pairs else 0
    pieces: list[str | None] = [None] * size
    for i, p in pairs:
        pieces[i] = p
    added_plain = {int(a["id"]) for a in tok.get("added_tokens") or [] if not a.get("special")}
    steps = _decoder_steps(tok.get("decoder"))
    kinds = [s.get("type") for s in steps]
    if "ByteLevel" in kinds:
        table = token_table(pieces, style="byte_level", special_ids=special)
        # Plain added tokens are stored as text, not in the byte alphabet.
        fixed = list(table.pieces)
        for i in added_plain:
            if pieces[i] is not None and i not in special:
                fixed[i] = str(pieces[i]).encode("utf-8")
        return TokenTable(tuple(fixed), False)
    sp_replace = any(
        s.get("type") == "Replace" and (s.get("pattern") or {}).get("String") == _SP_SPACE
        for s in steps
    )
    metaspace = next((s for s in steps if s.get("type") == "Metaspace"), None)
    if not (sp_replace or metaspace):
        return None
    strip = any(s.get("type") == "Strip" and int(s.get("start", 0)) > 0 for s in steps)
    if metaspace is not None:
        scheme = metaspace.get("prepend_scheme")
        strip = strip or scheme in ("first", "always") or bool(metaspace.get("add_prefix_space"))
    fallback = "ByteFallback" in kinds or bool(model.get("byte_fallback"))
    table = token_table(
        pieces,
        style="sentencepiece",
        special_ids=special,
        strip_leading_space=strip,
        byte_fallback=fallback,
    )
    fixed = list(table.pieces)
    for i in added_plain:
        if pieces[i] is not None and i not in special:
            fixed[i] = str(pieces[i]).encode("utf-8")
    return TokenTable(tuple(fixed), strip)


class IncrementalDecoder:
    """Token ids in, text out, UTF-8 safe: bytes of a character split across tokens are held
    until the character is complete. Work per token is a table lookup plus the bytes decoded.

    Invalid byte sequences become U+FFFD exactly as ``bytes.decode(errors="replace")`` would;
    an incomplete character at the very end (generation cut inside it) is dropped by
    ``finish``, in streamed and non-streamed decoding alike.
    """

    __slots__ = ("_pieces", "_size", "_strip", "_utf8")

    def __init__(self, table: TokenTable) -> None:
        self._pieces = table.pieces
        self._size = len(table.pieces)
        self._strip = table.strip_leading_space
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, ids: Iterable[int]) -> str:
        pieces, size = self._pieces, self._size
        data = b"".join(pieces[i] for i in ids if 0 <= i < size)
        if not data:
            return ""
        if self._strip:
            # SentencePiece decoders drop the space of the first word of a sequence.
            self._strip = False
            if data[:1] == b" ":
                data = data[1:]
        return self._utf8.decode(data)

    def finish(self) -> str:
        # Flush what is held back. A truncated but valid character (generation stopped inside
        # it) decodes to one U+FFFD and is dropped; bytes that could never form a character
        # (such as ED A0, a surrogate) are shown as bytes.decode(errors="replace") shows them.
        tail = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return "" if tail == "\ufffd" else tail


class WindowDecoder:
    """Fallback for tokenizers whose tokens do not map to bytes on their own: re-decode a short
    window of recent ids and emit the new text once it does not end in an incomplete
    character. The window restarts after every emission, so the work per token stays bounded.
    """

    __slots__ = ("_decode", "_ids", "_read")

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._read = 0  # ids before this were emitted; the window decodes from the start

    def push(self, ids: Iterable[int]) -> str:
        self._ids.extend(ids)
        if len(self._ids) == self._read:
            return ""
        before = self._decode(self._ids[: self._read]) if self._read else ""
        text = self._decode(self._ids)
        if text.endswith("\ufffd") or len(text) <= len(before):
            return ""
        # Keep the last emitted token as context: tokenizers that merge spaces need it.
        new = text[len(before) :]
        self._ids = self._ids[-1:] if self._ids else []
        self._read = len(self._ids)
        return new

    def finish(self) -> str:
        return ""


# --- word lists ----------------------------------------------------------------------------


def word_lists(words: Iterable[str], encode: Callable[[str], list[int]]) -> list[list[int]]:
    """Token ids of each non-empty word."""
    return [ids for w in words if w for ids in [encode(w)] if ids]


def flatten_word_lists(lists: Sequence[Sequence[int]]) -> list[list[int]]:
    """TensorRT-LLM's ``[2, L]`` layout: row 0 the ids of all words concatenated, row 1 the end
    offset of each word, both padded (ids with 0, offsets with -1). ``[[0], [-1]]`` if empty."""
    flat: list[int] = []
    offsets: list[int] = []
    for ids in lists:
        flat.extend(int(i) for i in ids)
        offsets.append(len(flat))
    if not flat:
        return [[0], [-1]]
    width = max(len(flat), len(offsets))
    return [flat + [0] * (width - len(flat)), offsets + [-1] * (width - len(offsets))]


def unflatten_word_lists(rows: Sequence[Sequence[int]]) -> list[list[int]]:
    """The inverse of ``flatten_word_lists``."""
    if len(rows) != 2:
        return []
    flat, offsets = list(rows[0]), list(rows[1])
    out: list[list[int]] = []
    start = 0
    for end in offsets:
        if end < 0:
            break
        if end > start:
            out.append([int(i) for i in flat[start:end]])
        start = end
    return out


# --- sampling ------------------------------------------------------------------------------

GREEDY = {"temperature": 1.0, "top_k": 1, "top_p": 0.0}
NEUTRAL_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}


def resolve_sampling(
    requested: Mapping[str, float | int | None], defaults: Mapping[str, Any]
) -> dict[str, float | int]:
    """Temperature, top_k, top_p and repetition_penalty for one request.

    A request that sets any sampling value gets neutral values for the others (so
    ``temperature: 0.7`` alone samples, as OpenAI clients expect); a request that sets none
    gets the model's published defaults, or greedy decoding when it has none.
    """
    keys = ("temperature", "top_k", "top_p")
    asked = {k: requested.get(k) for k in keys if requested.get(k) is not None}
    if asked:
        base: dict[str, float | int] = dict(NEUTRAL_SAMPLING)
        base.update({k: v for k, v in asked.items() if v is not None})
    else:
        published = {k: defaults[k] for k in keys if k in defaults}
        base = dict(NEUTRAL_SAMPLING if published else GREEDY)
        base.update(published)
    penalty = requested.get("repetition_penalty")
    if penalty is None:
        penalty = defaults.get("repetition_penalty", 1.0)
    base["repetition_penalty"] = float(penalty)
    base["temperature"] = float(base["temperature"])
    base["top_p"] = float(base["top_p"])
    base["top_k"] = int(base["top_k"])
    if base["temperature"] < 0 or base["top_k"] < 0 or not 0.0 <= base["top_p"] <= 1.0:
        raise RequestError("temperature and top_k must be >= 0 and top_p within [0, 1]")
    return base
