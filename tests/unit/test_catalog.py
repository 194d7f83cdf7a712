"""The catalog: seed-model shapes from config.json, pre-quantization, families and chat formats."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import FAMILIES, KNOWN_MODELS, from_hf_config, resolve_model
from chatmodel_operator.errors import SpecError, UnknownModel
from chatmodel_operator.plan.memory import kv_bytes_per_token, weights_bytes

# Published facts (shared/seed-models.md): parameters, bf16 weight bytes, KV bytes per token.
SEED_FACTS = [
    pytest.param("SUSTech/SUS-Chat-34B", 34.389e9, 68.8e9, 240 * 1024, id="sus-chat-34b"),
    pytest.param("01-ai/Yi-34B-Chat", 34.389e9, 68.8e9, 240 * 1024, id="yi-34b-chat"),
    pytest.param("Tele-AI/TeleChat-52B", 52.833e9, 105.7e9, 2 * 1024**2, id="telechat-52b"),
    pytest.param("xverse/XVERSE-7B-Chat", 7.300e9, 14.6e9, 512 * 1024, id="xverse-7b-chat"),
]


@pytest.mark.parametrize(("repo", "params", "bf16_bytes", "kv"), SEED_FACTS)
def test_seed_model_shapes_match_published_figures(
    repo: str, params: float, bf16_bytes: float, kv: int
) -> None:
    arch = from_hf_config(KNOWN_MODELS[repo.lower()].config)
    assert arch.total_params == pytest.approx(params, rel=5e-4)
    assert weights_bytes(arch, "none", "bfloat16") == pytest.approx(bf16_bytes, rel=2e-3)
    assert kv_bytes_per_token(arch, "bfloat16") == kv


def test_telechat_gpt2_style_keys_and_no_architectures() -> None:
    arch = from_hf_config(KNOWN_MODELS["tele-ai/telechat-52b"].config)
    assert (arch.hidden_size, arch.intermediate_size, arch.num_layers, arch.num_heads) == (
        8192,
        21824,
        64,
        64,
    )
    assert arch.num_kv_heads == 64 and arch.context_length == 4096
    assert arch.architecture == "telechat" and arch.remote_code


@pytest.mark.parametrize(
    ("repo", "quant"),
    [
        ("01-ai/Yi-34B-Chat-4bits", "int4-awq"),
        ("01-ai/Yi-34B-Chat-8bits", "int8-gptq"),
        ("xverse/XVERSE-7B-Chat-GPTQ-Int4", "int4-gptq"),
    ],
)
def test_pre_quantized_checkpoints_are_recognised(repo: str, quant: str) -> None:
    pq = from_hf_config(KNOWN_MODELS[repo.lower()].config).pre_quantization
    assert pq is not None and pq.name == quant


def test_unsupported_quant_method_is_a_clear_error() -> None:
    cfg = dict(KNOWN_MODELS["01-ai/yi-34b-chat"].config) | {
        "quantization_config": {"quant_method": "bitnet"}
    }
    with pytest.raises(UnknownModel, match=r"quant_method .bitnet.*fix"):
        from_hf_config(cfg)


def test_config_without_shape_names_missing_keys() -> None:
    with pytest.raises(UnknownModel, match="hidden_size"):
        from_hf_config({"model_type": "mystery", "vocab_size": 10})


def test_unknown_hub_model_without_config_says_how_to_fix() -> None:
    spec = parse_spec({"model": {"source": "hf://someone/unknown-chat"}})
    with pytest.raises(UnknownModel, match=r"spec.model.source.*fix: .*file://"):
        resolve_model(spec.model)


def test_any_checkpoint_is_read_from_its_config_and_template_is_honoured() -> None:
    cfg = dict(KNOWN_MODELS["01-ai/yi-34b-chat"].config)
    spec = parse_spec({"model": {"source": "file:///models/my-llama"}})
    info = resolve_model(
        spec.model, config=cfg, tokenizer_config={"chat_template": "{{ messages[0]['content'] }}"}
    )
    assert info.template_origin == "checkpoint"
    assert info.arch.num_kv_heads == 8


@pytest.mark.parametrize(
    ("source", "config_extra", "tokenizer_config", "expected"),
    [
        pytest.param("hf://Tele-AI/TeleChat-52B", None, None, True, id="catalog-telechat"),
        pytest.param("hf://xverse/XVERSE-7B-Chat", None, None, False, id="catalog-xverse"),
        pytest.param("hf://01-ai/Yi-34B-Chat", None, None, False, id="catalog-yi"),
        pytest.param(
            "file:///m",
            {},
            {"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}},
            True,
            id="tokenizer-auto-map",
        ),
        pytest.param(
            "file:///m", {"auto_map": {"AutoModel": "m.M"}}, {}, False, id="model-code-only"
        ),
        pytest.param(
            "file:///m",
            {"auto_map": {"AutoModel": "m.M"}},
            None,
            None,
            id="model-code-tokenizer-unread",
        ),
        pytest.param("file:///m", {}, None, False, id="no-code-at-all"),
    ],
)
def test_whether_the_tokenizer_is_the_checkpoints_own_code(
    source: str,
    config_extra: dict[str, Any] | None,
    tokenizer_config: dict[str, Any] | None,
    expected: bool | None,
) -> None:
    """Triton's OpenAI frontend never runs checkpoint code (plan.frontend reads this)."""
    spec = parse_spec({"model": {"source": source, "family": "yi-chat"}})
    config = None
    if config_extra is not None:
        config = {**KNOWN_MODELS["01-ai/yi-34b-chat"].config, **config_extra}
    info = resolve_model(spec.model, config=config, tokenizer_config=tokenizer_config)
    assert info.tokenizer_remote_code is expected


def test_spec_template_overrides_everything() -> None:
    spec = parse_spec(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat", "chatTemplate": "X{{ messages|length }}"}}
    )
    assert resolve_model(spec.model).template_origin == "spec"


def test_no_chat_format_at_all_is_a_spec_error() -> None:
    spec = parse_spec({"model": {"source": "file:///models/x"}})
    cfg = {
        "architectures": ["MysteryForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    }
    with pytest.raises(SpecError, match=r"spec.model.family"):
        resolve_model(spec.model, config=cfg, tokenizer_config={})


def render(
    template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> str:
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt
    )


CONVERSATION = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "q2"},
]


# Golden prompts from the authors' reference code (shared/seed-models.md, "Tokens and chat formats").
@pytest.mark.parametrize(
    ("family", "system", "expected"),
    [
        pytest.param(
            "sus-chat",
            None,
            "### Human: q1\n\n### Assistant: a1<|endoftext|>### Human: q2\n\n### Assistant: ",
            id="sus",
        ),
        pytest.param(
            "sus-chat",
            "Be brief.",
            "Be brief.### Human: q1\n\n### Assistant: a1<|endoftext|>### Human: q2\n\n### Assistant: ",
            id="sus-system",
        ),
        pytest.param(
            "yi-chat",
            "s",
            "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n",
            id="yi-chatml",
        ),
        pytest.param("telechat", None, "<_user>q1<_bot>a1<_end><_user>q2<_bot>", id="telechat"),
        pytest.param(
            "telechat", " sys ", "sys<_user>q1<_bot>a1<_end><_user>q2<_bot>", id="telechat-system"
        ),
        pytest.param(
            "xverse",
            None,
            "Human: q1\n\nAssistant: a1<|endoftext|>Human: q2\n\nAssistant: ",
            id="xverse",
        ),
    ],
)
def test_family_chat_formats_render_the_documented_prompt(
    family: str, system: str | None, expected: str
) -> None:
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    assert render(FAMILIES[family].chat_template, messages) == expected


@pytest.mark.parametrize(
    ("family", "stop", "stop_id"),
    [
        ("sus-chat", "<|endoftext|>", 2),
        ("yi-chat", "<|im_end|>", 7),
        ("telechat", "</s>", 2),
        ("xverse", "<|endoftext|>", 3),
    ],
)
def test_stop_tokens(family: str, stop: str, stop_id: int) -> None:
    fam = FAMILIES[family]
    assert fam.stop[0] == stop
    assert fam.stop_token().id == stop_id
