"""The seed checkpoints: the parts of their published config.json the planner reads.

Stored as config dicts and read with the same parser as any other checkpoint, so the catalog
cannot drift from what ``from_hf_config`` understands.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_LLAMA_34B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 7168,
    "intermediate_size": 20480,
    "num_hidden_layers": 60,
    "num_attention_heads": 56,
    "num_key_value_heads": 8,
    "vocab_size": 64000,
    "rope_theta": 5000000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
_XVERSE_7B: dict[str, Any] = {
    "architectures": ["XverseForCausalLM"],
    "model_type": "xverse",
    "auto_map": {"AutoModelForCausalLM": "modeling_xverse.XverseForCausalLM"},
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "vocab_size": 100534,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


@dataclass(frozen=True)
class KnownModel:
    repo_id: str
    family: str
    config: MappingProxyType[str, Any]
    trust_remote_code: bool = False
    tokenizer_remote_code: bool = False
    """The tokenizer itself is the checkpoint's own code (auto_map AutoTokenizer)."""
    note: str = ""


def _known(repo_id: str, family: str, config: dict[str, Any], **kw: Any) -> KnownModel:
    return KnownModel(repo_id, family, MappingProxyType(config), **kw)


KNOWN_MODELS: dict[str, KnownModel] = {
    m.repo_id.lower(): m
    for m in [
        _known(
            "SUSTech/SUS-Chat-34B",
            "sus-chat",
            {**_LLAMA_34B, "max_position_embeddings": 8192},
            note="Yi-34B fine-tuned to an 8K context",
        ),
        _known("01-ai/Yi-34B-Chat", "yi-chat", {**_LLAMA_34B, "max_position_embeddings": 4096}),
        _known(
            "01-ai/Yi-34B-Chat-4bits",
            "yi-chat",
            {
                **_LLAMA_34B,
                "max_position_embeddings": 4096,
                "torch_dtype": "float16",
                "quantization_config": {
                    "quant_method": "awq",
                    "bits": 4,
                    "group_size": 128,
                    "zero_point": True,
                    "version": "gemm",
                },
            },
        ),
        _known(
            "01-ai/Yi-34B-Chat-8bits",
            "yi-chat",
            {
                **_LLAMA_34B,
                "max_position_embeddings": 4096,
                "torch_dtype": "float16",
                "quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 128},
            },
        ),
        _known(
            "Tele-AI/TeleChat-52B",
            "telechat",
            {
                "model_type": "telechat",
                "auto_map": {
                    "AutoConfig": "configuration_telechat.TELECHATConfig",
                    "AutoModelForCausalLM": "modeling_telechat.TELECHAT",
                },
                "n_embd": 8192,
                "n_inner": 21824,
                "n_layer": 64,
                "n_head": 64,
                "vocab_size": 80896,
                "n_positions": 4096,
                "rotary_theta": 10000,
                "tie_word_embeddings": False,
                "use_mup": True,
            },
            trust_remote_code=True,
            tokenizer_remote_code=True,  # tokenization_telechat.TelechatTokenizer
            note="fp16 inference on 4 x A100-40G per the authors",
        ),
        _known("xverse/XVERSE-7B-Chat", "xverse", dict(_XVERSE_7B), trust_remote_code=True),
        _known(
            "xverse/XVERSE-7B-Chat-GPTQ-Int4",
            "xverse",
            {
                **_XVERSE_7B,
                "torch_dtype": "float16",
                "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128},
            },
            trust_remote_code=True,
        ),
    ]
}


def find_known(repo_id: str | None) -> KnownModel | None:
    return KNOWN_MODELS.get(repo_id.lower()) if repo_id else None
