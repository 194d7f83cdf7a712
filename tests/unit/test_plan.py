"""The planner: the authors' stated deployments (on the default and on the newest NGC release),
Yi's measured memory, no-fit reasons, backends, and the mode each NGC release in the table gets."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.catalog.triton_releases import RELEASES, TritonRelease
from chatmodel_operator.errors import SpecError, Unsupported
from chatmodel_operator.plan import Plan, plan_spec
from chatmodel_operator.plan import memory as mem
from chatmodel_operator.plan.frontend import REQUIRED_FLAGS, decide_openai_frontend, triton_release
from chatmodel_operator.plan.image import default_image, ngc_image


def plan_for(source: str, gpu: dict[str, Any] | None = None, **sections: Any) -> Plan:
    spec_dict: dict[str, Any] = {
        "model": {"source": f"hf://{source}"},
        "resources": {"gpu": gpu or {"memoryGiB": 80}},
    }
    for key, value in sections.items():
        spec_dict[key] = {**spec_dict.get(key, {}), **value}
    spec = parse_spec(spec_dict)
    return plan_spec(spec, resolve_model(spec.model))


# shared/seed-models.md, "Deployments the authors state: the planner must reproduce them", each
# with the image flavour its backend runs on (XVERSE goes to vLLM, the rest to the LLM image).
AUTHORS = [
    pytest.param(
        "Tele-AI/TeleChat-52B",
        40,
        4,
        {
            "model": {"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
            "engine": {"dtype": "float16"},
        },
        "trtllm-python-py3",
        id="telechat-52b-fp16-40g",
    ),
    pytest.param("01-ai/Yi-34B-Chat", 80, 1, {}, "trtllm-python-py3", id="yi-34b-bf16-80g"),
    pytest.param("01-ai/Yi-34B-Chat", 24, 4, {}, "trtllm-python-py3", id="yi-34b-bf16-24g"),
    pytest.param("01-ai/Yi-34B-Chat-4bits", 24, 1, {}, "trtllm-python-py3", id="yi-34b-4bits-24g"),
    pytest.param("01-ai/Yi-34B-Chat-8bits", 24, 2, {}, "vllm-python-py3", id="yi-34b-8bits-24g"),
    pytest.param("01-ai/Yi-34B-Chat-8bits", 40, 1, {}, "vllm-python-py3", id="yi-34b-8bits-40g"),
    pytest.param("xverse/XVERSE-7B-Chat", 24, 1, {}, "vllm-python-py3", id="xverse-7b-bf16-24g"),
    pytest.param(
        "SUSTech/SUS-Chat-34B", 80, 1, {}, "trtllm-python-py3", id="sus-chat-34b-bf16-80g"
    ),
]
# The image column: the default image (the newest release whose TensorRT-LLM is documented),
# and the newest release NVIDIA documents at all, whose TensorRT-LLM is not documented.
NEWEST = RELEASES[-1].release


@pytest.mark.parametrize("image", ["default", "newest"])
@pytest.mark.parametrize(("source", "memory", "gpus", "extra", "flavour"), AUTHORS)
def test_reproduces_the_authors_deployments(
    source: str, memory: int, gpus: int, extra: dict[str, Any], flavour: str, image: str
) -> None:
    if image == "newest":
        extra = {
            **extra,
            "engine": {**extra.get("engine", {}), "image": ngc_image(NEWEST, flavour)},
        }
    plan = plan_for(source, {"memoryGiB": memory}, **extra)
    assert plan.fits, plan.reason
    assert plan.gpus_per_replica == gpus, plan.reason
    assert plan.tensor_parallelism == gpus
    assert plan.max_concurrent_sequences >= 1
    assert f"fits {gpus} x {memory} GiB" in plan.reason
    if image == "newest":
        assert plan.image == ngc_image(NEWEST, flavour)
        # Nothing documents the engine tools in the newest release: never engine mode there.
        assert plan.mode != "engine"


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


# --- the table of NGC releases (catalog.triton_releases) and what each one gets ---------------


def test_the_table_runs_month_by_month_from_24_12_and_says_what_it_does_not_know() -> None:
    releases = [r.release for r in RELEASES]
    assert releases[0] == (24, 12)
    for (y0, m0), (y1, m1) in itertools.pairwise(releases):
        assert (y1, m1) == ((y0, m0 + 1) if m0 < 12 else (y0 + 1, 1))
    for row in RELEASES:
        unknown = None in (row.trtllm, row.engine_path, row.llmapi_model, row.frontend_flags)
        assert bool(row.note) == unknown, row.name
        if row.frontend_flags is not None:
            assert "--model-repository" in row.frontend_flags
    # Flags only accumulate from one release to the next.
    flags = [r.frontend_flags for r in RELEASES if r.frontend_flags is not None]
    assert all(a <= b for a, b in itertools.pairwise(flags))


def _yi_on(release: tuple[int, int], mode: str | None = None) -> Plan:
    engine: dict[str, Any] = {"image": ngc_image(release, "trtllm-python-py3")}
    if mode:
        engine["mode"] = mode
    return plan_for("01-ai/Yi-34B-Chat", {"product": "NVIDIA-H100-80GB-HBM3"}, engine=engine)


def _expected_mode(row: TritonRelease) -> str:
    return "engine" if row.engine_path else "llmapi"


@pytest.mark.parametrize("row", RELEASES, ids=lambda r: r.name)
def test_chatmodel_plan_is_right_for_every_release(
    row: TritonRelease, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatmodel_operator.cli import main

    doc = (
        "apiVersion: serving.chatmodel.io/v1alpha1\nkind: ChatModel\nmetadata: {name: yi}\n"
        "spec:\n  model: {source: hf://01-ai/Yi-34B-Chat}\n"
        "  resources: {gpu: {product: NVIDIA-H100-80GB-HBM3}}\n"
        f"  engine: {{image: '{ngc_image(row.release, 'trtllm-python-py3')}'}}\n"
    )
    path = tmp_path / "yi.yaml"
    path.write_text(doc)
    assert main(["plan", str(path), "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["backend"], status["mode"]) == ("tensorrt-llm", _expected_mode(row))
    assert row.name in status["modeReason"]
    assert status["image"].endswith(f":{row.name}-trtllm-python-py3")
    assert status["openaiFrontend"] is (row.takes_flags(*REQUIRED_FLAGS) is True)
    assert row.name in status["openaiFrontendReason"]
    if row.engine_path is None:
        assert "no TensorRT-LLM version is documented" in status["modeReason"]


@pytest.mark.parametrize("row", RELEASES, ids=lambda r: r.name)
def test_an_explicit_mode_the_release_lacks_fails_at_planning(row: TritonRelease) -> None:
    for mode, runs in (("engine", row.engine_path), ("llmapi", row.llmapi_mode)):
        if runs is False or (mode == "engine" and runs is None):
            with pytest.raises(Unsupported, match=r"^spec\.engine\.mode: ") as err:
                _yi_on(row.release, mode)
            assert row.name in str(err.value)
            assert "fix: set engine.mode to auto" in str(err.value)
        else:
            assert _yi_on(row.release, mode).mode == mode


def test_releases_outside_the_table() -> None:
    old = _yi_on((24, 6))  # TensorRT-LLM 0.10: the engine path only
    assert old.mode == "engine" and "0.15 or older" in (old.mode_reason or "")
    with pytest.raises(Unsupported, match="without the PyTorch backend"):
        _yi_on((24, 6), "llmapi")
    future = _yi_on((27, 3))
    assert future.mode == "llmapi" and "newer than the newest release documented" in (
        future.mode_reason or ""
    )
    with pytest.raises(Unsupported, match=r"spec\.engine\.mode: engine mode cannot run"):
        _yi_on((27, 3), "engine")


def test_a_custom_image_is_trusted_as_the_spec_states_it() -> None:
    custom = "registry.example.com/triton-trtllm:1.2.1-ours"
    auto = plan_for("01-ai/Yi-34B-Chat", engine={"image": custom})
    assert auto.mode == "llmapi" and "engine.mode to engine" in (auto.mode_reason or "")
    engine = plan_for("01-ai/Yi-34B-Chat", engine={"image": custom, "mode": "engine"})
    assert engine.mode == "engine" and engine.image == custom
    assert "spec.engine.mode is engine" in (engine.mode_reason or "")


def test_an_image_of_the_wrong_flavour_is_refused_or_skipped() -> None:
    vllm_image = ngc_image((26, 7), "vllm-python-py3")
    with pytest.raises(Unsupported, match=r"spec\.engine\.mode: .*not the trtllm-python-py3"):
        plan_for("01-ai/Yi-34B-Chat", engine={"image": vllm_image, "mode": "engine"})
    # auto: TensorRT-LLM is not in a vLLM image, so vLLM serves Yi there.
    assert plan_for("01-ai/Yi-34B-Chat", engine={"image": vllm_image}).backend == "vllm"
    with pytest.raises(Unsupported, match=r"spec\.engine\.image: engine\.backend vllm"):
        plan_for(
            "01-ai/Yi-34B-Chat",
            engine={"backend": "vllm", "image": ngc_image((26, 7), "trtllm-python-py3")},
        )


def test_default_image_is_the_newest_release_with_documented_tensorrt_llm() -> None:
    newest_known = [r for r in RELEASES if r.trtllm is not None][-1]
    plan = plan_for("01-ai/Yi-34B-Chat")
    assert plan.image == ngc_image(newest_known.release, "trtllm-python-py3")
    assert plan.mode == "engine" and newest_known.name in (plan.mode_reason or "")
    assert plan_for("xverse/XVERSE-7B-Chat").image == ngc_image(
        newest_known.release, "vllm-python-py3"
    )


# A release after 26.07 documented to have dropped the engine path, to check the rule "default
# to the newest release, unless that loses what the model needs".
FUTURE = (
    *RELEASES[: [r.release for r in RELEASES].index((26, 7)) + 1],
    TritonRelease((26, 8), "2.72.0", "1.3.0", False, True, RELEASES[-4].frontend_flags, None),
)


def test_newest_release_without_the_engine_path_becomes_the_default_for_llmapi() -> None:
    spec = parse_spec(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )
    plan = plan_spec(spec, resolve_model(spec.model), releases=FUTURE)
    assert plan.mode == "llmapi" and plan.image.endswith(":26.08-trtllm-python-py3")
    assert default_image("tensorrt-llm/engine", FUTURE).endswith(":26.07-trtllm-python-py3")


def test_what_only_engine_mode_serves_keeps_the_older_release_and_says_so() -> None:
    spec = parse_spec(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "engine": {"quantization": "int8-weight-only"},
        }
    )
    plan = plan_spec(spec, resolve_model(spec.model), releases=FUTURE)
    assert plan.mode == "engine" and plan.image.endswith(":26.07-trtllm-python-py3")
    assert any("kept" in w and "26.08" in w for w in plan.warnings), plan.warnings
    assert "int8-weight-only" in (plan.backend_reason or "")


# --- llmapi mode gets what engine mode has ----------------------------------------------------


def test_llmapi_plan_counts_cuda_graphs_and_sizes_them_from_the_batch() -> None:
    engine = plan_for("01-ai/Yi-34B-Chat")
    llmapi = plan_for("01-ai/Yi-34B-Chat", engine={"mode": "llmapi"})
    assert llmapi.cuda_graph_batch_sizes == (1, 2, 4, 8, 16, 32, 64) and llmapi.chunked_prefill
    assert engine.cuda_graph_batch_sizes == () and not engine.chunked_prefill
    arch = resolve_model(parse_spec({"model": {"source": "hf://01-ai/Yi-34B-Chat"}}).model).arch
    graphs = mem.cuda_graph_pool_bytes(arch, "bfloat16", 1, 64)
    assert graphs > 0
    assert llmapi.reserve_per_gpu_gib == pytest.approx(
        engine.reserve_per_gpu_gib + graphs / mem.GIB, abs=0.1
    )
    assert llmapi.kv_cache_tokens < engine.kv_cache_tokens + 5000
    assert mem.cuda_graph_batch_sizes(48) == (1, 2, 4, 8, 16, 32, 48)


@pytest.mark.parametrize(
    ("source", "engine", "quant", "kv"),
    [
        pytest.param("01-ai/Yi-34B-Chat-4bits", {}, "int4-awq", "float16", id="awq-checkpoint"),
        pytest.param(
            "01-ai/Yi-34B-Chat", {"quantization": "fp8"}, "fp8", "bfloat16", id="fp8-weights"
        ),
        pytest.param(
            "01-ai/Yi-34B-Chat", {"kvCacheDtype": "fp8"}, "none", "fp8", id="fp8-kv-cache"
        ),
    ],
)
def test_llmapi_mode_serves_quantized_weights_and_an_fp8_kv_cache(
    source: str, engine: dict[str, Any], quant: str, kv: str
) -> None:
    plan = plan_for(
        source, {"product": "NVIDIA-H100-80GB-HBM3"}, engine={**engine, "mode": "llmapi"}
    )
    assert (plan.mode, plan.quantization, plan.kv_cache_dtype) == ("llmapi", quant, kv)
