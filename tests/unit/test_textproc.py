"""Text processing of the data plane: chat formats (golden, every family), conversation parsing
and truncation, UTF-8-safe incremental detokenization (property tests), word lists, sampling."""

# Chinese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001
from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmodel_operator.catalog.families import FAMILIES
from chatmodel_operator.runtime.tiny_checkpoint import build_tokenizer
from chatmodel_operator.triton import textproc as tp

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "golden" / "chat_formats.json").read_text()
)


# --- chat formats --------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(GOLDEN["prompts"]))
@pytest.mark.parametrize("case", ["with_system", "without_system"])
def test_family_chat_format_matches_the_authors_format(family: str, case: str) -> None:
    renderer = tp.ChatRenderer(FAMILIES[family].chat_template)
    messages = GOLDEN[f"messages_{case}"]
    assert renderer.render(messages) == GOLDEN["prompts"][family][case]


def test_checkpoint_template_gets_hugging_face_conveniences() -> None:
    template = (
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] | tojson }}\n"
        "{% endfor %}{% if add_generation_prompt %}{{ bos_token }}{% endif %}"
    )
    out = tp.ChatRenderer(template, {"bos_token": "<s>"}).render([{"role": "user", "content": "é"}])
    assert out == 'USER: "é"\n<s>'


def test_template_raise_exception_is_a_request_error() -> None:
    renderer = tp.ChatRenderer("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(tp.RequestError, match="roles must alternate"):
        renderer.render([{"role": "user", "content": "x"}])


def test_broken_template_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        tp.ChatRenderer("{% for %}")


# --- conversations -------------------------------------------------------------------------


def test_plain_text_is_one_user_turn_after_the_default_system_prompt() -> None:
    assert tp.parse_conversation("hi") == [{"role": "user", "content": "hi"}]
    assert tp.parse_conversation("hi", "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_envelope_carries_a_whole_conversation() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    assert tp.parse_conversation(tp.envelope(messages)) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "ab"},
    ]


def test_the_developer_role_is_the_system_role() -> None:
    raw = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert tp.normalize_messages(raw) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    with pytest.raises(tp.RequestError, match="developer; got 'robot'"):
        tp.normalize_messages([{"role": "robot", "content": "x"}])


def test_json_that_is_not_an_envelope_is_plain_text() -> None:
    text = '{"question": "what are \\"messages\\"?"}'
    assert tp.parse_conversation(text) == [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "non-empty list"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "system", "content": "x"}], "at least one user message"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "only text parts"),
        ([{"role": "user", "content": 3}], "string or a list"),
        (["hello"], "must be an object"),
    ],
    ids=["empty", "role", "no-user", "image", "number", "string"],
)
def test_invalid_messages_say_what_to_fix(raw: Any, message: str) -> None:
    with pytest.raises(tp.RequestError, match=message):
        tp.normalize_messages(raw)


def _conversation(turns: int, system: bool = True) -> list[dict[str, str]]:
    out = [{"role": "system", "content": "SYSTEM"}] if system else []
    for i in range(turns):
        out += [{"role": "user", "content": f"q{i} " * 5}, {"role": "assistant", "content": "a "}]
    return [*out, {"role": "user", "content": "LAST " * 3}]


def _render(messages: Sequence[dict[str, str]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def _encode(text: str) -> list[int]:
    return [len(w) for w in text.split()]  # one token per word


def test_truncation_drops_oldest_turns_first() -> None:
    messages = _conversation(5)
    full = len(_encode(_render(messages)))
    fitted = tp.fit_conversation(messages, _render, _encode, full - 6)
    assert fitted.dropped_turns == 1
    assert "q0" not in fitted.prompt and "q1" in fitted.prompt
    assert fitted.prompt.startswith("<system>SYSTEM") and fitted.prompt.endswith("LAST ")


def test_truncation_never_drops_system_or_last_user_turn() -> None:
    messages = _conversation(3)
    kept = [messages[0], messages[-1]]
    fitted = tp.fit_conversation(messages, _render, _encode, len(_encode(_render(kept))))
    assert fitted.prompt == _render(kept)
    with pytest.raises(tp.RequestError, match="maxInputLength 1"):
        tp.fit_conversation(messages, _render, _encode, 1)


@settings(max_examples=150, deadline=None)
@given(
    turns=st.integers(0, 12),
    system=st.booleans(),
    budget=st.integers(1, 200),
)
def test_truncation_properties(turns: int, system: bool, budget: int) -> None:
    messages = _conversation(turns, system)
    try:
        fitted = tp.fit_conversation(messages, _render, _encode, budget)
    except tp.RequestError:
        minimal = [m for m in messages if m["role"] == "system"] + [messages[-1]]
        assert len(_encode(_render(minimal))) > budget
        return
    assert len(fitted.ids) <= budget
    assert fitted.ids == _encode(fitted.prompt)
    assert fitted.prompt.endswith("<user>" + messages[-1]["content"])
    assert system == fitted.prompt.startswith("<system>SYSTEM")
    # What is kept is a suffix of the turns: dropping one turn fewer would not fit.
    if fitted.dropped_turns:
        longer = tp.fit_conversation(messages, _render, _encode, 10**9)
        assert longer.dropped_turns == 0
        units = tp._droppable_units(messages)
        gone = {i for u in units[: fitted.dropped_turns - 1] for i in u}
        one_less = _render([m for i, m in enumerate(messages) if i not in gone])
        assert len(_encode(one_less)) > budget


# --- detokenization ------------------------------------------------------------------------


@cache
def _tokenizer(family: str) -> tuple[Any, tp.TokenTable]:
    tok = build_tokenizer(FAMILIES[family])
    table = tp.token_table_from_tokenizer_json(json.loads(tok.to_str()))
    assert table is not None
    return tok, table


TEXT = st.text(
    alphabet=st.sampled_from(list("abc xyz,.!?\n你好世界北京春风吹绿了柳树。！🙂é€")), max_size=40
)
STYLES = ["sus-chat", "xverse"]  # SentencePiece byte fallback and byte-level BPE


def _split(ids: Sequence[int], cuts: Sequence[int]) -> list[list[int]]:
    points = sorted({c % (len(ids) + 1) for c in cuts})
    chunks, start = [], 0
    for p in [*points, len(ids)]:
        chunks.append(list(ids[start:p]))
        start = p
    return chunks


@pytest.mark.parametrize("family", STYLES)
@settings(max_examples=200, deadline=None)
@given(text=TEXT, cuts=st.lists(st.integers(0, 200), max_size=12))
def test_streamed_chunks_join_to_the_text_without_replacement_chars(
    family: str, text: str, cuts: list[int]
) -> None:
    tok, table = _tokenizer(family)
    ids = tok.encode(text, add_special_tokens=False).ids
    decoder = table.decoder()
    chunks = [decoder.push(c) for c in _split(ids, cuts)] + [decoder.finish()]
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == table.decode(ids)
    # The same text the tokenizer's own decoder gives (it decodes the whole sequence at once).
    assert table.decode(ids) == tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("family", STYLES)
def test_one_token_at_a_time_chinese_never_shows_a_replacement_char(family: str) -> None:
    tok, table = _tokenizer(family)
    text = "北京是中国的首都，有很多名胜古迹。"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) >= 3 * 15  # every character is several byte tokens
    decoder = table.decoder()
    pieces = [decoder.push([i]) for i in ids]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces).strip() == text
    assert pieces.count("") >= 2 * 15  # held back until each character was complete


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.binary(min_size=0, max_size=4), max_size=30), cuts=st.lists(st.integers()))
def test_arbitrary_bytes_decode_the_same_streamed_or_not(
    data: list[bytes], cuts: list[int]
) -> None:
    """Invalid sequences become U+FFFD exactly as bytes.decode(errors='replace') does, whatever
    the chunking; an incomplete character at the very end is dropped in both."""
    table = tp.TokenTable(tuple(data))
    ids = list(range(len(data)))
    decoder = table.decoder()
    streamed = "".join(decoder.push(c) for c in _split(ids, cuts)) + decoder.finish()
    assert streamed == table.decode(ids)
    whole = b"".join(data).decode("utf-8", errors="replace")
    assert whole.startswith(streamed)
    assert whole[len(streamed) :] in ("", "\ufffd")


def test_work_per_token_is_constant() -> None:
    """The decoder looks each pushed id up once and never revisits earlier ones."""

    class Counting(tuple):  # type: ignore[type-arg]
        lookups = 0

        def __getitem__(self, i: Any) -> Any:
            Counting.lookups += 1
            return super().__getitem__(i)

    table = tp.TokenTable(Counting([b"a", b"\xe4", b"\xbd", b"\xa0"]))
    decoder = table.decoder()
    for n in range(1, 2001):
        decoder.push([n % 4])
        assert Counting.lookups == n


def test_special_tokens_are_skipped_and_the_first_space_is_stripped() -> None:
    tok, table = _tokenizer("yi-chat")
    ids = tok.encode("<|im_start|>assistant\nHi there<|im_end|>", add_special_tokens=False).ids
    assert table.decode(ids) == "assistant\nHi there"
    sp = tp.token_table(["▁Hello", "▁world", "<0xE4>", "<0xBD>", "<0xA0>"], style="sentencepiece")
    assert sp.decode([0, 1, 2, 3, 4]) == " Hello world你"
    stripped = tp.token_table(["▁Hi", "▁there"], style="sentencepiece", strip_leading_space=True)
    assert stripped.decode([0, 1]) == "Hi there"


def test_unknown_decoders_fall_back_to_a_window() -> None:
    assert (
        tp.token_table_from_tokenizer_json({"model": {"vocab": {"a": 0}}, "decoder": None}) is None
    )
    words = ["he", "llo", " wor", "ld"]

    def decode(ids: Sequence[int]) -> str:
        return "".join(words[i] for i in ids)

    decoder = tp.WindowDecoder(decode)
    assert "".join(decoder.push([i]) for i in range(4)) == "hello world"


# --- word lists and sampling -----------------------------------------------------------------


@given(st.lists(st.lists(st.integers(0, 50000), min_size=1, max_size=5), max_size=6))
def test_word_lists_round_trip(words: list[list[int]]) -> None:
    flat = tp.flatten_word_lists(words)
    assert len(flat) == 2 and len(flat[0]) == len(flat[1])
    assert tp.unflatten_word_lists(flat) == words


def test_empty_word_list_is_tensorrt_llms_empty_shape() -> None:
    assert tp.flatten_word_lists([]) == [[0], [-1]]
    assert tp.word_lists(["", "ab"], lambda s: [len(s)]) == [[2]]


@pytest.mark.parametrize(
    ("requested", "defaults", "expected"),
    [
        ({}, {}, {"temperature": 1.0, "top_k": 1, "top_p": 0.0, "repetition_penalty": 1.0}),
        (
            {},
            {"temperature": 0.6, "top_p": 0.8},
            {"temperature": 0.6, "top_k": 0, "top_p": 0.8, "repetition_penalty": 1.0},
        ),
        (
            {"temperature": 0.7},
            {"temperature": 0.3, "top_k": 5},
            {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0},
        ),
        (
            {"top_k": 1},
            {"repetition_penalty": 1.02},
            {"temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.02},
        ),
    ],
    ids=["greedy-without-defaults", "family-defaults", "request-wins", "family-penalty"],
)
def test_sampling_resolution(
    requested: dict[str, Any], defaults: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert tp.resolve_sampling(requested, defaults) == expected


def test_sampling_out_of_range_is_a_request_error() -> None:
    with pytest.raises(tp.RequestError, match="top_p"):
        tp.resolve_sampling({"top_p": 1.5}, {})
