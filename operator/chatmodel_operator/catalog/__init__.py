"""The model catalog: seed models, families, GPU products, and reading any checkpoint's config.

``resolve_model`` is pure: the caller (an adapter or the CLI) reads config.json and
tokenizer_config.json and passes them in when the checkpoint is not in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatmodel_operator.catalog.architecture import Architecture, PreQuantization, from_hf_config
from chatmodel_operator.catalog.families import FAMILIES, Family, SpecialToken, get_family
from chatmodel_operator.catalog.gpus import PRODUCTS, GPUProduct, find_product
from chatmodel_operator.catalog.known import KNOWN_MODELS, KnownModel, find_known
from chatmodel_operator.catalog.source import Source, parse_source
from chatmodel_operator.errors import SpecError, UnknownModel

__all__ = [
    "FAMILIES",
    "KNOWN_MODELS",
    "PRODUCTS",
    "Architecture",
    "Family",
    "GPUProduct",
    "KnownModel",
    "ModelInfo",
    "PreQuantization",
    "Source",
    "SpecialToken",
    "detect_family",
    "find_known",
    "find_product",
    "from_hf_config",
    "get_family",
    "parse_source",
    "resolve_model",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the planner and the data plane know about the model to serve."""

    source: Source
    arch: Architecture
    family: Family | None
    chat_template: str
    template_origin: str  # spec, checkpoint or family
    known: KnownModel | None = None
    generation: Mapping[str, Any] = field(default_factory=dict)
    tokenizer_remote_code: bool | None = False
    """Whether loading the tokenizer runs the checkpoint's own code; None when it cannot be
    told (no tokenizer_config.json read, and the checkpoint ships code)."""

    @property
    def trust_remote_code(self) -> bool:
        return self.arch.remote_code or bool(self.known and self.known.trust_remote_code)


def detect_family(
    name: str, arch: Architecture, tokenizer_config: Mapping[str, Any] | None
) -> str | None:
    """Guess the family from the checkpoint name, its architecture and its special tokens."""
    lname = name.lower()
    if arch.model_type == "telechat" or "telechat" in lname:
        return "telechat"
    if arch.architecture == "XverseForCausalLM" or arch.model_type == "xverse" or "xverse" in lname:
        return "xverse"
    if "sus-chat" in lname:
        return "sus-chat"
    if "yi-" in lname and "chat" in lname:
        return "yi-chat"
    tokens = str(tokenizer_config or {})
    if "<|im_start|>" in tokens:
        return "chatml"
    if arch.architecture == "LlamaForCausalLM" and "[INST]" in tokens:
        return "llama"
    return None


def resolve_model(
    model: Any,
    *,
    config: Mapping[str, Any] | None = None,
    tokenizer_config: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Combine spec.model (a ModelSource), the catalog and the checkpoint's own files.

    Chat format precedence: spec.model.chatTemplate, then the checkpoint's chat_template, then
    the family's format (explicit spec.model.family, else detected).
    """
    source = parse_source(model.source)
    known = find_known(source.repo_id)
    if config is None:
        if known is None:
            raise UnknownModel(
                f"spec.model.source: {model.source} is not in the catalog and its config.json "
                "could not be read; fix: check the source and its credentialsSecret, or use a "
                "file:// or pvc:// checkpoint that contains config.json "
                f"(catalog: {', '.join(sorted(k.repo_id for k in KNOWN_MODELS.values()))})"
            )
        config = known.config
    arch = from_hf_config(config, where=f"{model.source} config.json")

    family_name = model.family if model.family != "auto" else None
    if family_name is None:
        family_name = (
            known.family if known else detect_family(source.display_name, arch, tokenizer_config)
        )
    family = get_family(family_name) if family_name else None

    checkpoint_template = (tokenizer_config or {}).get("chat_template")
    if isinstance(checkpoint_template, list):  # named templates: take "default"
        named = {
            t.get("name"): t.get("template") for t in checkpoint_template if isinstance(t, dict)
        }
        checkpoint_template = named.get("default")
    if model.chat_template:
        template, origin = model.chat_template, "spec"
    elif isinstance(checkpoint_template, str) and checkpoint_template.strip():
        template, origin = checkpoint_template, "checkpoint"
    elif family is not None:
        template, origin = family.chat_template, "family"
    else:
        raise SpecError(
            "spec.model.family",
            f"no chat format is known for {model.source} (no catalog entry, no chat_template in "
            "tokenizer_config.json)",
            "set spec.model.family (sus-chat, yi-chat, telechat, xverse, llama, chatml) or "
            "spec.model.chatTemplate",
        )
    generation = dict(family.generation) if family else {}
    return ModelInfo(
        source=source,
        arch=arch,
        family=family,
        chat_template=template,
        template_origin=origin,
        known=known,
        generation=generation,
        tokenizer_remote_code=_tokenizer_remote_code(arch, known, tokenizer_config),
    )


def _tokenizer_remote_code(
    arch: Architecture, known: KnownModel | None, tokenizer_config: Mapping[str, Any] | None
) -> bool | None:
    if tokenizer_config is not None:
        auto_map = tokenizer_config.get("auto_map")
        return isinstance(auto_map, Mapping) and "AutoTokenizer" in auto_map
    if known is not None:
        return known.tokenizer_remote_code
    return None if arch.remote_code else False
