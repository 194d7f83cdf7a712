"""A model's shape, read from its Hugging Face ``config.json`` (Llama keys or GPT-2 style keys)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatmodel_operator.errors import UnknownModel


@dataclass(frozen=True)
class PreQuantization:
    """Quantization baked into a checkpoint (its ``quantization_config``)."""

    method: str  # awq, gptq, fp8
    bits: int
    group_size: int

    @property
    def name(self) -> str:
        """The spec's quantization value this corresponds to."""
        if self.method == "fp8":
            return "fp8"
        return f"int{self.bits}-{self.method}"


@dataclass(frozen=True)
class Architecture:
    """Everything the planner needs about a model's shape."""

    architecture: str  # Hugging Face class name, or model_type when the config has none
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    tied_embeddings: bool
    torch_dtype: str | None
    gated_mlp: bool = True
    rope_theta: float | None = None
    pre_quantization: PreQuantization | None = None
    remote_code: bool = False

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @property
    def layer_linear_params(self) -> int:
        """Parameters of the matrices in one transformer block (attention and MLP)."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * self.num_heads * hd * 2 + h * self.num_kv_heads * hd * 2
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        return attn + mlp

    @property
    def norm_params(self) -> int:
        return self.num_layers * 2 * self.hidden_size + self.hidden_size

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.layer_linear_params

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.linear_params + self.norm_params


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return None


def _pre_quantization(cfg: Mapping[str, Any]) -> PreQuantization | None:
    q = cfg.get("quantization_config")
    if not isinstance(q, Mapping):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method in ("awq", "gptq"):
        return PreQuantization(method, int(q.get("bits", 4)), int(q.get("group_size", 128) or 128))
    if method in ("fp8", "modelopt") and "fp8" in str(q).lower():
        return PreQuantization("fp8", 8, 0)
    if method:
        raise UnknownModel(
            f"config.json quantization_config.quant_method {method!r} is not supported; "
            "fix: use an AWQ, GPTQ or FP8 checkpoint, or the unquantized checkpoint with "
            "spec.engine.quantization"
        )
    return None


def from_hf_config(cfg: Mapping[str, Any], *, where: str = "config.json") -> Architecture:
    """Read a Hugging Face config.json (dict). Raises UnknownModel naming the missing key."""
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head")
    vocab = _first(cfg, "vocab_size", "padded_vocab_size")
    missing = [
        name
        for name, v in (
            ("hidden_size (or n_embd)", hidden),
            ("num_hidden_layers (or n_layer)", layers),
            ("num_attention_heads (or n_head)", heads),
            ("vocab_size", vocab),
        )
        if v is None
    ]
    if missing:
        raise UnknownModel(
            f"{where} lacks {', '.join(missing)}; fix: point spec.model.source at a Hugging Face "
            "checkpoint directory whose config.json describes a decoder-only transformer"
        )
    hidden, layers, heads, vocab = int(hidden), int(layers), int(heads), int(vocab)
    kv = int(_first(cfg, "num_key_value_heads", "multi_query_group_num", "n_head_kv") or heads)
    head_dim = int(_first(cfg, "head_dim", "kv_channels") or hidden // heads)
    ffn = _first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size")
    ffn = int(ffn) if ffn is not None else 4 * hidden
    context = _first(
        cfg, "max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"
    )
    context = int(context) if context is not None else 2048
    archs = cfg.get("architectures") or []
    model_type = str(cfg.get("model_type", "") or "")
    architecture = str(archs[0]) if archs else (model_type or "unknown")
    # GPT-2 proper has a plain two-matrix MLP; TeleChat keeps GPT-2 key names but a gated MLP.
    gated = model_type not in ("gpt2", "gpt_neox", "opt", "gpt_bigcode", "falcon")
    dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    return Architecture(
        architecture=architecture,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        context_length=context,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        torch_dtype=str(dtype) if dtype else None,
        gated_mlp=gated,
        rope_theta=_first(cfg, "rope_theta", "rotary_theta"),
        pre_quantization=_pre_quantization(cfg),
        remote_code=bool(cfg.get("auto_map")),
    )
