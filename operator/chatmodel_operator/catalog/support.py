"""Which backend can serve which architecture with which quantization, and why not.

Facts from TensorRT-LLM 1.2 (legacy MODEL_MAP for engine builds, the PyTorch backend's
architecture index for llmapi), vLLM's model registry, and our own Python backend, which runs
anything transformers can load.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatmodel_operator.catalog.architecture import Architecture

# TensorRT-LLM 1.2 engine path (convert_checkpoint + trtllm-build): MODEL_MAP entries we plan for.
TRTLLM_ENGINE_ARCHS = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "GemmaForCausalLM",
        "Phi3ForCausalLM",
        "GPT2LMHeadModel",
    }
)
# TensorRT-LLM PyTorch backend (LLM API) architecture index entries we plan for.
TRTLLM_LLMAPI_ARCHS = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Gemma3ForCausalLM",
        "Phi3ForCausalLM",
    }
)
# vLLM registry entries we plan for (XverseForCausalLM maps onto vLLM's Llama implementation).
VLLM_ARCHS = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "XverseForCausalLM",
        "TeleChat2ForCausalLM",
        "GemmaForCausalLM",
        "Phi3ForCausalLM",
        "GPT2LMHeadModel",
    }
)

QUANT_BY_BACKEND: dict[str, frozenset[str]] = {
    "tensorrt-llm/engine": frozenset(
        {
            "none",
            "int8-weight-only",
            "int4-weight-only",
            "int4-awq",
            "int4-gptq",
            "fp8",
            "smoothquant",
        }
    ),
    "tensorrt-llm/llmapi": frozenset({"none", "int4-awq", "int4-gptq", "fp8"}),
    "vllm": frozenset({"none", "int4-awq", "int4-gptq", "int8-gptq", "fp8"}),
    "python": frozenset({"none"}),
}
# Quantizations that only come from a pre-quantized checkpoint (no calibration step in our Job).
NEEDS_PREQUANTIZED: dict[str, frozenset[str]] = {
    "tensorrt-llm/engine": frozenset({"int4-gptq"}),
    "tensorrt-llm/llmapi": frozenset({"int4-awq", "int4-gptq"}),
    "vllm": frozenset({"int4-awq", "int4-gptq", "int8-gptq"}),
    "python": frozenset(),
}
KV_DTYPE_BY_BACKEND: dict[str, frozenset[str]] = {
    "tensorrt-llm/engine": frozenset({"auto", "float16", "bfloat16", "fp8", "int8"}),
    "tensorrt-llm/llmapi": frozenset({"auto", "float16", "bfloat16", "fp8"}),
    "vllm": frozenset({"auto", "float16", "bfloat16", "fp8"}),
    "python": frozenset({"auto", "float16", "bfloat16"}),
}
# Order `auto` tries: the TensorRT-LLM engine is fastest, vLLM next, our Python backend last.
AUTO_ORDER = ("tensorrt-llm/engine", "tensorrt-llm/llmapi", "vllm", "python")


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str


def architecture_support(arch: Architecture, route: str) -> Support:
    """Can ``route`` (tensorrt-llm/engine, tensorrt-llm/llmapi, vllm, python) serve ``arch``?"""
    name = arch.architecture
    if route == "tensorrt-llm/engine":
        if name in TRTLLM_ENGINE_ARCHS:
            return Support(True, f"TensorRT-LLM builds {name} engines")
        if name == "XverseForCausalLM":
            return Support(
                False,
                "TensorRT-LLM 1.2's trtllm-build rejects XverseForCausalLM (not in MODEL_MAP: "
                '"Unsupported model architecture")',
            )
        return Support(False, f"TensorRT-LLM 1.2 has no engine builder for {name}")
    if route == "tensorrt-llm/llmapi":
        if name in TRTLLM_LLMAPI_ARCHS:
            return Support(True, f"the TensorRT-LLM PyTorch backend loads {name}")
        return Support(False, f"the TensorRT-LLM PyTorch backend has no implementation of {name}")
    if route == "vllm":
        if name in VLLM_ARCHS:
            return Support(True, f"vLLM implements {name}")
        if arch.model_type == "telechat":
            return Support(
                False,
                "vLLM registers TeleChat2ForCausalLM, not TeleChat v1's custom TELECHAT "
                "(muP) class",
            )
        return Support(False, f"vLLM has no implementation of {name}")
    if route == "python":
        return Support(True, "our Python backend runs any checkpoint transformers can load")
    raise ValueError(route)
