"""The planner: the authors' stated deployments, Yi's measured memory, no-fit reasons, backends."""

from __future__ import annotations

from typing import Any

import pytest

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.errors import SpecError, Unsupported
from chatmodel_operator.plan import Plan, plan_spec
from chatmodel_operator.plan import memory as mem
from chatmodel_operator.plan.frontend import decide_openai_frontend, triton_release


def plan_for(source: str, gpu: dict[str, Any] | None = None, **sections: Any) -> Plan:
    spec_dict: dict[str, Any] = {
        "model": {"source": f"hf://{source}"},
        "resources": {"gpu": gpu or {"memoryGiB": 80}},
    }
    for key, value in sections.items():
        spec_dict[key] = {**spec_dict.get(key, {}), **value}
    spec = parse_spec(spec_dict)
    return plan_spec(spec, resolve_model(spec.model))


# shared/seed-models.md, "Deployments the authors state: the planner must reproduce them".
AUTHORS = [
    pytest.param(
        "Tele-AI/TeleChat-52B",
        40,
        4,
        {
            "model": {"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
            "engine": {"dtype": "float16"},
        },
        id="telechat-52b-fp16-40g",
    ),
    pytest.param("01-ai/Yi-34B-Chat", 80, 1, {}, id="yi-34b-bf16-80g"),
    pytest.param("01-ai/Yi-34B-Chat", 24, 4, {}, id="yi-34b-bf16-24g"),
    pytest.param("01-ai/Yi-34B-Chat-4bits", 24, 1, {}, id="yi-34b-4bits-24g"),
    pytest.param("01-ai/Yi-34B-Chat-8bits", 24, 2, {}, id="yi-34b-8bits-24g"),
    pytest.param("01-ai/Yi-34B-Chat-8bits", 40, 1, {}, id="yi-34b-8bits-40g"),
    pytest.param("xverse/XVERSE-7B-Chat", 24, 1, {}, id="xverse-7b-bf16-24g"),
    pytest.param("SUSTech/SUS-Chat-34B", 80, 1, {}, id="sus-chat-34b-bf16-80g"),
]


@pytest.mark.parametrize(("source", "memory", "gpus", "extra"), AUTHORS)
def test_reproduces_the_authors_deployments(
    source: str, memory: int, gpus: int, extra: dict[str, Any]
) -> None:
    plan = plan_for(source, {"memoryGiB": memory}, **extra)
    assert plan.fits, plan.reason
    assert plan.gpus_per_replica == gpus, plan.reason
    assert plan.tensor_parallelism == gpus
    assert plan.max_concurrent_sequences >= 1
    assert f"fits {gpus} x {memory} GiB" in plan.reason


def test_sus_chat_8k_context_doubles_kv_per_sequence() -> None:
    sus, yi = plan_for("SUSTech/SUS-Chat-34B"), plan_for("01-ai/Yi-34B-Chat")
    assert sus.kv_cache_bytes_per_token == yi.kv_cache_bytes_per_token
    assert sus.max_sequence_length == 2 * yi.max_sequence_length


def test_yi_8bits_on_40g_uses_about_38_gb() -> None:
    plan = plan_for("01-ai/Yi-34B-Chat-8bits", {"memoryGiB": 40})
    used = (
        plan.weights_per_gpu_gib
        + plan.reserve_per_gpu_gib
        + plan.max_sequence_length * plan.kv_cache_bytes_per_token / mem.GIB
    )
    assert 33 <= used <= 40


# 01-ai's measured total memory by batch size 1/4/16/32 (shared/seed-models.md). They did not
# publish the sequence length; we compare at 3072 tokens per sequence (3/4 of the 4K context).
YI_MEASURED = [
    pytest.param("01-ai/Yi-34B-Chat", "none", "bfloat16", (65, 68, 76, None), id="bf16"),
    pytest.param("01-ai/Yi-34B-Chat-4bits", "int4-awq", "float16", (19, 20, 30, 40), id="4bits"),
    pytest.param("01-ai/Yi-34B-Chat-8bits", "int8-gptq", "float16", (35, 37, 46, 58), id="8bits"),
]


@pytest.mark.parametrize(("source", "quant", "dtype", "measured"), YI_MEASURED)
def test_memory_estimates_within_15_percent_of_yi_measurements(
    source: str, quant: str, dtype: str, measured: tuple[int | None, ...]
) -> None:
    arch = resolve_model(parse_spec({"model": {"source": f"hf://{source}"}}).model).arch
    for batch, gb in zip((1, 4, 16, 32), measured, strict=True):
        est = (
            mem.estimate_total_bytes(
                arch,
                quantization=quant,
                dtype=dtype,
                kv_dtype=dtype,
                batch=batch,
                sequence_length=3072,
            )
            / mem.GIB
        )
        if gb is None:  # published as "> 80 GB"
            assert est > 80
        else:
            assert abs(est - gb) / gb <= 0.15, (batch, est, gb)


def test_nothing_fits_names_numbers_and_what_would_fit() -> None:
    plan = plan_for("01-ai/Yi-34B-Chat", {"memoryGiB": 40, "count": 1})
    assert not plan.fits
    assert "needs 64.1 GiB of weights" in plan.reason
    assert "2 x 40 GiB GPUs would fit" in plan.reason
    assert "int4-awq on 1 x 40 GiB" in plan.reason


def test_telechat_on_one_40g_gpu_explains() -> None:
    plan = plan_for(
        "Tele-AI/TeleChat-52B",
        {"memoryGiB": 40, "count": 1},
        model={"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
    )
    assert not plan.fits
    assert "needs 98.4 GiB of weights" in plan.reason and "4 x 40 GiB GPUs would fit" in plan.reason


def test_fp8_needs_ada_or_newer() -> None:
    with pytest.raises(
        Unsupported,
        match=r"spec.engine.quantization: fp8 needs compute capability 8.9.*NVIDIA-A100-SXM4-80GB is 8.0",
    ):
        plan_for(
            "01-ai/Yi-34B-Chat",
            {"product": "NVIDIA-A100-SXM4-80GB"},
            engine={"quantization": "fp8"},
        )
    plan = plan_for(
        "01-ai/Yi-34B-Chat", {"product": "NVIDIA-H100-80GB-HBM3"}, engine={"quantization": "fp8"}
    )
    assert plan.fits and plan.quantization == "fp8" and plan.weights_gib < 34


@pytest.mark.parametrize(
    ("source", "backend", "mode", "why"),
    [
        pytest.param("xverse/XVERSE-7B-Chat", "vllm", None, "XverseForCausalLM", id="xverse-vllm"),
        pytest.param("01-ai/Yi-34B-Chat-8bits", "vllm", None, "int8-gptq", id="yi-8bits-vllm"),
        pytest.param("01-ai/Yi-34B-Chat", "tensorrt-llm", "engine", None, id="yi-trt"),
    ],
)
def test_auto_backend_falls_back_and_says_why(
    source: str, backend: str, mode: str | None, why: str | None
) -> None:
    plan = plan_for(source, {"memoryGiB": 80})
    assert (plan.backend, plan.mode) == (backend, mode)
    if why:
        assert (
            plan.backend_reason
            and why in plan.backend_reason
            and plan.backend_reason in plan.warnings
        )


def test_telechat_auto_backend_is_python_and_needs_trust_remote_code() -> None:
    with pytest.raises(Unsupported, match=r"spec.model.trustRemoteCode"):
        plan_for("Tele-AI/TeleChat-52B", {"memoryGiB": 80})
    plan = plan_for(
        "Tele-AI/TeleChat-52B",
        {"memoryGiB": 80},
        model={"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
    )
    assert plan.backend == "python" and "TeleChat" in (plan.backend_reason or "")


def test_explicit_tensorrt_llm_on_xverse_is_refused_with_the_alternative() -> None:
    with pytest.raises(
        Unsupported,
        match=r"spec.engine.backend: .*XverseForCausalLM.*fix: set engine.backend to auto \(it would pick vllm\)",
    ):
        plan_for("xverse/XVERSE-7B-Chat", engine={"backend": "tensorrt-llm"})


def test_requantizing_a_quantized_checkpoint_is_refused() -> None:
    with pytest.raises(Unsupported, match="already quantized"):
        plan_for("01-ai/Yi-34B-Chat-4bits", engine={"quantization": "int8-weight-only"})


def test_tensor_parallelism_must_divide_heads() -> None:
    # The seed models' heads divide by every power of two up to 8; a 12-head/2-KV-head model does not.
    spec = parse_spec(
        {
            "model": {"source": "file:///m", "family": "chatml"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "engine": {"tensorParallelism": 4},
        }
    )
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 1536,
        "num_hidden_layers": 4,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "max_position_embeddings": 2048,
    }
    with pytest.raises(
        Unsupported,
        match=r"4 does not divide the model's 12 attention heads and 2 KV heads.*use one of 1, 2",
    ):
        plan_spec(spec, resolve_model(spec.model, config=cfg))


def test_lengths_beyond_context_are_a_spec_error() -> None:
    with pytest.raises(
        SpecError, match=r"spec.engine.maxInputLength: .* exceeds the model's context of 4096"
    ):
        plan_for("01-ai/Yi-34B-Chat", engine={"maxInputLength": 4000, "maxOutputLength": 1000})


def test_missing_gpu_memory_is_a_spec_error() -> None:
    spec = parse_spec({"model": {"source": "hf://01-ai/Yi-34B-Chat"}})
    with pytest.raises(SpecError, match=r"spec.resources.gpu: .*set resources.gpu.product"):
        plan_spec(spec, resolve_model(spec.model))


def test_engine_key_changes_only_with_engine_inputs() -> None:
    base = plan_for("01-ai/Yi-34B-Chat")
    same = plan_for("01-ai/Yi-34B-Chat", serving={"replicas": 5}, autoscaling={"enabled": True})
    other = plan_for("01-ai/Yi-34B-Chat", engine={"maxBatchSize": 8})
    assert base.engine_key == same.engine_key
    assert base.engine_key != other.engine_key
    assert (
        plan_for("01-ai/Yi-34B-Chat", {"product": "NVIDIA-H100-80GB-HBM3"}).engine_key
        != plan_for("01-ai/Yi-34B-Chat", {"product": "NVIDIA-A100-SXM4-80GB"}).engine_key
    )


def test_status_shape_has_the_documented_keys() -> None:
    st = plan_for("01-ai/Yi-34B-Chat").to_status()
    for key in (
        "fits",
        "reason",
        "backend",
        "quantization",
        "gpusPerReplica",
        "tensorParallelism",
        "weightsGiB",
        "kvCacheBytesPerToken",
        "kvCacheTokens",
        "maxConcurrentSequences",
    ):
        assert key in st


# --- Triton's OpenAI frontend in the pods (plan.frontend) -------------------------------------


@pytest.mark.parametrize(
    ("image", "release"),
    [
        pytest.param("nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", (26, 7), id="ngc"),
        pytest.param("nvcr.io/nvidia/tritonserver:24.11-py3", (24, 11), id="ngc-old"),
        pytest.param(
            "mirror.corp:5000/nvidia/tritonserver:25.08-vllm-python-py3",
            (25, 8),
            id="mirror-with-port",
        ),
        pytest.param(
            "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3@sha256:" + "a" * 64,
            (25, 10),
            id="tag-and-digest",
        ),
        pytest.param("nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64, None, id="digest-only"),
        pytest.param("registry:5000/tritonserver", None, id="port-no-tag"),
        pytest.param("myorg/triton-custom:25.08", None, id="other-repository"),
        pytest.param("nvcr.io/nvidia/tritonserver:latest", None, id="latest"),
    ],
)
def test_triton_release_reads_ngc_tags_only(image: str, release: tuple[int, int] | None) -> None:
    assert triton_release(image) == release


@pytest.mark.parametrize(
    ("mode", "image", "tokenizer_code", "enabled", "words"),
    [
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3",
            False,
            True,
            "26.07 ships",
            id="auto-current",
        ),
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:25.08-py3",
            False,
            True,
            "25.08",
            id="auto-first-with-flags",
        ),
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:25.07-py3",
            False,
            False,
            "--chat-template",
            id="auto-shipped-but-too-old-for-the-flags",
        ),
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3",
            False,
            False,
            "older than",
            id="auto-old-image",
        ),
        pytest.param(
            "Auto",
            "registry.example.com/triton:custom",
            False,
            False,
            "cannot be told",
            id="auto-custom-image",
        ),
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:26.07-py3",
            True,
            False,
            "own code",
            id="auto-remote-code-tokenizer",
        ),
        pytest.param(
            "Auto",
            "nvcr.io/nvidia/tritonserver:26.07-py3",
            None,
            False,
            "cannot be told",
            id="auto-unknown-tokenizer",
        ),
        pytest.param(
            "Enabled",
            "registry.example.com/triton:custom",
            None,
            True,
            "Enabled",
            id="enabled-custom-image",
        ),
        pytest.param(
            "Disabled",
            "nvcr.io/nvidia/tritonserver:26.07-py3",
            False,
            False,
            "Disabled",
            id="disabled",
        ),
    ],
)
def test_openai_frontend_decision(
    mode: str, image: str, tokenizer_code: bool | None, enabled: bool, words: str
) -> None:
    decision = decide_openai_frontend(mode=mode, image=image, tokenizer_remote_code=tokenizer_code)
    assert decision.enabled is enabled
    assert words in decision.reason


@pytest.mark.parametrize(
    ("image", "tokenizer_code", "words"),
    [
        pytest.param(
            "nvcr.io/nvidia/tritonserver:24.11-py3",
            False,
            "ships no OpenAI frontend",
            id="image-without-frontend",
        ),
        pytest.param(
            "nvcr.io/nvidia/tritonserver:26.07-py3",
            True,
            "trust_remote_code",
            id="remote-code-tokenizer",
        ),
    ],
)
def test_enabled_frontend_that_cannot_start_is_refused(
    image: str, tokenizer_code: bool, words: str
) -> None:
    with pytest.raises(Unsupported, match=r"spec\.serving\.openai") as err:
        decide_openai_frontend(mode="Enabled", image=image, tokenizer_remote_code=tokenizer_code)
    assert words in str(err.value) and "fix:" in str(err.value)


def test_enabled_on_a_release_before_the_flags_warns() -> None:
    image = "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"
    plan = plan_for("01-ai/Yi-34B-Chat", engine={"image": image}, serving={"openai": "Enabled"})
    assert plan.openai_frontend
    assert any("--chat-template" in w for w in plan.warnings)


def test_plan_decides_the_frontend_from_image_and_tokenizer() -> None:
    yi = plan_for("01-ai/Yi-34B-Chat")
    assert yi.openai_frontend and yi.to_status()["openaiFrontend"] is True
    old = plan_for(
        "01-ai/Yi-34B-Chat", engine={"image": "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"}
    )
    assert not old.openai_frontend
    assert "older than" in old.to_status()["openaiFrontendReason"]
    # TeleChat's tokenizer is its own code (shared/seed-models.md); XVERSE's is not.
    telechat = plan_for("Tele-AI/TeleChat-52B", model={"trustRemoteCode": True})
    assert not telechat.openai_frontend
    assert plan_for("xverse/XVERSE-7B-Chat", model={"trustRemoteCode": True}).openai_frontend
    with pytest.raises(Unsupported, match=r"spec\.serving\.openai"):
        plan_for(
            "Tele-AI/TeleChat-52B", model={"trustRemoteCode": True}, serving={"openai": "Enabled"}
        )


def test_frontend_choice_never_changes_the_engine() -> None:
    on = plan_for("01-ai/Yi-34B-Chat")
    off = plan_for("01-ai/Yi-34B-Chat", serving={"openai": "Disabled"})
    assert on.openai_frontend and not off.openai_frontend
    assert on.engine_key == off.engine_key
