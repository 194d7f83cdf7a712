"""The renderers: every object for every example validates; build commands as data; secrets."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
from tests.conftest import EXAMPLES, load_example

from chatmodel_operator.api import parse_chatmodel, parse_spec
from chatmodel_operator.catalog import KNOWN_MODELS, resolve_model
from chatmodel_operator.plan import Plan, plan_spec
from chatmodel_operator.render import Children, render_children

K8S_VERSION = "1.33"
# The renderer takes the model repository as data; its content is the data plane's concern.
REPOSITORY = {
    PurePosixPath("ensemble/config.pbtxt"): 'name: "ensemble"\n',
    PurePosixPath("preprocessing/1/model.py"): "# model\n",
}


def children_for(
    spec_dict: dict[str, Any], name: str = "m", namespace: str = "ns"
) -> tuple[Plan, Children]:
    spec = parse_spec(spec_dict)
    plan = plan_spec(spec, resolve_model(spec.model))
    return plan, render_children(
        name=name, namespace=namespace, uid="uid-1", spec=spec, plan=plan, repository=REPOSITORY
    )


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith(("monitoring.coreos.com", "keda.sh")):
        return  # CRD kinds: kubernetes-validate ships only the built-in schemas
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_valid_objects(path: Path) -> None:
    cm = parse_chatmodel(load_example(path))
    plan, children = children_for(
        cm.spec.model_dump(by_alias=True, exclude_none=True), name=cm.metadata["name"]
    )
    assert plan.fits
    kinds = [o["kind"] for o in children.all()]
    assert kinds[:5] == ["PersistentVolumeClaim", "Job", "ConfigMap", "Deployment", "Service"]
    for obj in children.all():
        validate(obj)
        assert obj["metadata"]["namespace"] == "ns"


def test_all_toggles_render_valid_objects() -> None:
    _, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat", "credentialsSecret": "hf-token"},
            "resources": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
            "serving": {"serviceMonitor": True},
            "autoscaling": {"enabled": True, "metric": "kv-cache-utilization"},
            "cache": {"storageClassName": "fast", "deletePolicy": "Delete"},
        }
    )
    kinds = {o["kind"] for o in children.all()}
    assert {"HorizontalPodAutoscaler", "ServiceMonitor", "PodDisruptionBudget"} <= kinds
    for obj in children.all():
        validate(obj)
    hpa = next(o for o in children.serving if o["kind"] == "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "chatmodel_kv_cache_utilization"
    assert metric["target"]["averageValue"] == "800m"
    dep = next(o for o in children.serving if o["kind"] == "Deployment")
    assert "replicas" not in dep["spec"]  # left to the autoscaler: no tug of war


def test_keda_renders_a_scaled_object_instead_of_an_hpa() -> None:
    _, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "autoscaling": {"enabled": True, "engine": "keda", "metric": "pending-requests"},
        }
    )
    so = next(o for o in children.serving if o["kind"] == "ScaledObject")
    trigger = so["spec"]["triggers"][0]
    assert (
        'chatmodel="m"' in trigger["metadata"]["query"]
        and trigger["metadata"]["threshold"] == "4.0"
    )
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in children.serving)


def test_deployment_requests_planned_gpus_and_probes_health() -> None:
    plan, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"product": "NVIDIA-GeForce-RTX-4090"}},
        }
    )
    dep = next(o for o in children.serving if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == plan.gpus_per_replica == 4
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 8002}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/v2/health/ready"
    cache_mount = next(m for m in c["volumeMounts"] if m["name"] == "cache")
    assert cache_mount["readOnly"] is True
    items = next(v for v in pod["volumes"] if v["name"] == "model-repository")["configMap"]["items"]
    assert {"key": "preprocessing__1__model.py", "path": "preprocessing/1/model.py"} in items
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert {"name": "TRTLLM_ORCHESTRATOR", "value": "1"} in c["env"]


def test_hub_token_only_through_secret_key_ref() -> None:
    _, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat", "credentialsSecret": "hf-token"},
            "resources": {"gpu": {"memoryGiB": 80}},
        }
    )
    text = json.dumps(children.all())
    assert "hf-token" in text
    job = children.build_job
    env = job["spec"]["template"]["spec"]["initContainers"][0]["env"]
    token = next(e for e in env if e["name"] == "HF_TOKEN")
    assert token["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert all("value" not in e for e in env if e["name"] == "HF_TOKEN")
    configmap = next(o for o in children.serving if o["kind"] == "ConfigMap")
    assert "hf-token" not in json.dumps(configmap)


def test_cache_pvc_owned_only_with_delete_policy() -> None:
    _, retain = children_for(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )
    _, delete = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "cache": {"deletePolicy": "Delete"},
        }
    )
    assert "ownerReferences" not in retain.cache_pvc["metadata"]
    assert delete.cache_pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "ownerReferences" not in retain.build_job["metadata"]  # shared by key across ChatModels
    assert all(o["metadata"]["ownerReferences"][0]["kind"] == "ChatModel" for o in retain.serving)


def build_script(spec: dict[str, Any]) -> str:
    _, children = children_for({"resources": {"gpu": {"memoryGiB": 80}}, **spec})
    return str(children.build_job["spec"]["template"]["spec"]["containers"][0]["args"][0])


# TensorRT-LLM 1.2's documented recipes (shared/trtllm-triton.md section 2.2).
@pytest.mark.parametrize(
    ("spec", "must", "must_not"),
    [
        pytest.param(
            {"model": {"source": "hf://01-ai/Yi-34B-Chat"}},
            [
                "$CONVERT --model_dir",
                "--dtype bfloat16 --tp_size 1",
                "trtllm-build --checkpoint_dir",
                "--gemm_plugin auto",
                "--max_seq_len 4096",
                "--use_paged_context_fmha enable",
            ],
            ["quantize.py", "--use_weight_only"],
            id="bf16",
        ),
        pytest.param(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "engine": {"quantization": "int8-weight-only"},
            },
            ["--use_weight_only --weight_only_precision int8"],
            ["quantize.py"],
            id="int8-wo",
        ),
        pytest.param(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "engine": {"quantization": "int4-weight-only"},
            },
            ["--use_weight_only --weight_only_precision int4"],
            [],
            id="int4-wo",
        ),
        pytest.param(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "engine": {"quantization": "smoothquant"},
            },
            ["--smoothquant 0.5 --per_token --per_channel"],
            [],
            id="smoothquant",
        ),
        pytest.param(
            {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "engine": {"quantization": "int4-awq"}},
            [
                "quantization/quantize.py",
                "--qformat int4_awq --output_dir",
                "--awq_block_size 128 --calib_size 32",
            ],
            ["python3 $CONVERT"],
            id="awq-calibrated",
        ),
        pytest.param(
            {"model": {"source": "hf://01-ai/Yi-34B-Chat-4bits"}},
            ["$CONVERT --model_dir", "--dtype float16"],
            ["quantize.py"],
            id="awq-prequantized",
        ),
        pytest.param(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "resources": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
                "engine": {"quantization": "fp8", "kvCacheDtype": "fp8"},
            },
            [
                "--qformat fp8",
                "--calib_size 512",
                "--kv_cache_dtype fp8",
                "--use_fp8_context_fmha enable",
            ],
            [],
            id="fp8",
        ),
        pytest.param(
            {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "engine": {"kvCacheDtype": "int8"}},
            ["--int8_kv_cache"],
            [],
            id="int8-kv",
        ),
        pytest.param(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "resources": {"gpu": {"memoryGiB": 24}},
            },
            ["--tp_size 4", "--workers 4"],
            [],
            id="tp4",
        ),
        pytest.param(
            {"model": {"source": "hf://xverse/XVERSE-7B-Chat"}},
            [".complete"],
            ["trtllm-build", "$CONVERT"],
            id="vllm-prepare-only",
        ),
        pytest.param(
            {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "engine": {"mode": "llmapi"}},
            [".complete"],
            ["trtllm-build"],
            id="llmapi-no-build",
        ),
    ],
)
def test_build_job_commands(spec: dict[str, Any], must: list[str], must_not: list[str]) -> None:
    script = build_script(spec)
    for text in must:
        assert text in script, (text, script)
    for text in must_not:
        assert text not in script, (text, script)


def test_download_is_atomic_and_retried() -> None:
    _, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat@abc123"},
            "resources": {"gpu": {"memoryGiB": 80}},
        }
    )
    fetch = children.build_job["spec"]["template"]["spec"]["initContainers"][0]["args"][0]
    assert "snapshot_download" in fetch and "abc123" in fetch and "range(1, 6)" in fetch
    assert fetch.index(".tmp") < fetch.index("mv ") < fetch.index(".complete", fetch.index("mv "))


def test_pvc_source_is_mounted_not_downloaded() -> None:
    spec = parse_spec(
        {
            "model": {"source": "pvc://models/yi", "family": "yi-chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
        }
    )
    plan = plan_spec(
        spec, resolve_model(spec.model, config=KNOWN_MODELS["01-ai/yi-34b-chat"].config)
    )
    ch = render_children(
        name="m", namespace="ns", uid="u", spec=spec, plan=plan, repository=REPOSITORY
    )
    pod = ch.build_job["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {
        "name": "source",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod["volumes"]
    assert "--model_dir /source/yi" in pod["containers"][0]["args"][0]


def test_serving_key_keeps_old_engine_during_switch() -> None:
    spec = parse_spec(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )
    old = plan_spec(spec, resolve_model(spec.model))
    spec2 = parse_spec(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "engine": {"maxBatchSize": 8},
        }
    )
    new = plan_spec(spec2, resolve_model(spec2.model))
    ch = render_children(
        name="m",
        namespace="ns",
        uid="u",
        spec=spec2,
        plan=new,
        repository=REPOSITORY,
        serving_key=old.engine_key,
        serving_plan=old,
        serving_repository=REPOSITORY,
    )
    dep = next(o for o in ch.serving if o["kind"] == "Deployment")
    assert (
        dep["spec"]["template"]["metadata"]["labels"]["serving.chatmodel.io/engine-key"]
        == old.engine_key
    )
    assert ch.build_job["metadata"]["labels"]["serving.chatmodel.io/engine-key"] == new.engine_key


def test_rendering_is_deterministic() -> None:
    a = children_for(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )[1].all()
    b = children_for(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )[1].all()
    assert a == b and a is not b
