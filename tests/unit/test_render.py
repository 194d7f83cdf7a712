"""The renderers: every object for every example validates; build commands as data; secrets;
what the serving container runs (Triton's OpenAI frontend or tritonserver) and its ports."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
from tests.conftest import EXAMPLES, load_example

from chatmodel_operator.api import ChatModelSpec, parse_chatmodel, parse_spec
from chatmodel_operator.catalog import KNOWN_MODELS, parse_source, resolve_model
from chatmodel_operator.errors import SpecErrors
from chatmodel_operator.plan import Plan, plan_spec
from chatmodel_operator.render import (
    FRONTEND_LABEL,
    FRONTEND_REASON_ANNOTATION,
    Children,
    cache_paths,
    openai_endpoint,
    render_children,
    serving_process,
)

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


def _render(spec: ChatModelSpec, plan: Plan, *, still_serving: Plan | None = None) -> Children:
    """The children of ChatModel ns/m; ``still_serving``: the plan whose engine the pods
    still serve while ``plan``'s engine is being built."""
    serving: dict[str, Any] = {}
    if still_serving is not None:
        serving = {
            "serving_key": still_serving.engine_key,
            "serving_plan": still_serving,
            "serving_repository": REPOSITORY,
        }
    return render_children(
        name="m", namespace="ns", uid="u", spec=spec, plan=plan, repository=REPOSITORY, **serving
    )


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith(
        ("monitoring.coreos.com", "keda.sh", "inference.networking.k8s.io")
    ):
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
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 9000}  # OpenAI frontend
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
    ch = _render(spec, plan)
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
    ch = _render(spec2, new, still_serving=old)
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


# --- what the serving container runs: Triton's OpenAI frontend or plain tritonserver ----------

FRONTEND_MAIN = "/opt/tritonserver/python/openai/openai_frontend/main.py"
OLD_IMAGE = "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"


def serving(children: Children) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in children.serving}


def yi(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"source": "hf://01-ai/Yi-34B-Chat"},
        "resources": {"gpu": {"memoryGiB": 80}},
        "serving": {"serviceMonitor": True},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


def test_pods_run_tritons_openai_frontend_where_the_image_ships_it() -> None:
    plan, children = children_for(yi())
    objs = serving(children)
    dep = objs["Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert plan.openai_frontend and plan.image.endswith(":26.07-trtllm-python-py3")
    assert c["command"] == ["python3"]
    source = "hf://01-ai/Yi-34B-Chat"
    checkpoint = cache_paths(parse_source(source), source, plan.engine_key).checkpoint
    assert checkpoint.startswith("/cache/checkpoints/")  # where the build Job downloaded it
    assert c["args"] == [
        FRONTEND_MAIN,
        "--model-repository=/models",
        f"--tokenizer={checkpoint}",
        "--chat-template=/models/preprocessing/1/openai_chat_template.jinja",
        "--backend=tensorrtllm",
        "--openai-port=9000",
        "--enable-kserve-frontends",
        "--kserve-http-port=8000",
        "--kserve-grpc-port=8001",
        f"--default-max-tokens={min(512, plan.max_output_length)}",
    ]
    # The KServe ports stay (generate endpoints, genai-perf, `chatmodel chat`); Triton's metrics
    # are on the OpenAI port's /metrics: the frontend opens no metrics port of its own.
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("openai", 9000),
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # TP 1, and still orchestrator mode: NVIDIA runs the frontend over TensorRT-LLM that way.
    assert plan.tensor_parallelism == 1
    assert {"name": "TRTLLM_ORCHESTRATOR", "value": "1"} in c["env"]
    assert serving_process(spec=parse_spec(yi()), plan=plan).metrics_port == "openai"
    for meta in (dep["metadata"], dep["spec"]["template"]["metadata"]):
        assert meta["labels"][FRONTEND_LABEL] == "triton-openai-frontend"
    assert "26.07" in dep["metadata"]["annotations"][FRONTEND_REASON_ANNOTATION]
    assert openai_endpoint(name="m", namespace="ns", spec=parse_spec(yi()), plan=plan) == (
        "http://m.ns.svc:9000/v1"
    )


@pytest.mark.parametrize(
    "sections",
    [
        pytest.param({"engine": {"image": OLD_IMAGE}}, id="image-before-24.12"),
        pytest.param(
            {"engine": {"image": "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"}},
            id="frontend-without-our-flags",
        ),
        pytest.param(
            {"engine": {"image": "registry.example.com/triton:custom"}}, id="unknown-custom-image"
        ),
        pytest.param({"serving": {"openai": "Disabled"}}, id="disabled"),
    ],
)
def test_plain_tritonserver_otherwise(sections: dict[str, Any]) -> None:
    plan, children = children_for(yi(**sections))
    objs = serving(children)
    dep = objs["Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert not plan.openai_frontend
    assert c["command"] == ["tritonserver"]
    assert "--metrics-port=8002" in c["args"] and "--model-repository=/models" in c["args"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    ]
    assert all(e["name"] != "TRTLLM_ORCHESTRATOR" for e in c["env"])  # TP 1: leader mode
    assert dep["metadata"]["labels"][FRONTEND_LABEL] == "tritonserver"
    assert dep["metadata"]["annotations"][FRONTEND_REASON_ANNOTATION] == plan.openai_frontend_reason
    assert openai_endpoint(name="m", namespace="ns", spec=parse_spec(yi()), plan=plan) is None
    for obj in children.all():
        validate(obj)


def test_enabled_runs_the_frontend_on_a_custom_image_with_the_spec_ports() -> None:
    plan, children = children_for(
        yi(
            engine={"image": "registry.example.com/triton:custom"},
            serving={"openai": "Enabled", "httpPort": 8080, "grpcPort": 8081, "openaiPort": 9100},
        )
    )
    objs = serving(children)
    c = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert plan.openai_frontend and c["args"][0] == FRONTEND_MAIN
    for flag in ("--openai-port=9100", "--kserve-http-port=8080", "--kserve-grpc-port=8081"):
        assert flag in c["args"]
    assert [p["containerPort"] for p in c["ports"]] == [8080, 8081, 9100]
    service = {p["name"]: p["port"] for p in objs["Service"]["spec"]["ports"]}
    assert service == {"http": 8080, "grpc": 8081, "metrics": 8002, "openai": 9100}


def _scraped(children: Children) -> list[tuple[str, int]]:
    """(container port name, number) that the ServiceMonitor reaches in these pods: a Service
    port targets a container port by name, and pods without that name are not its endpoints."""
    objs = serving(children)
    c = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    container = {p["name"]: p["containerPort"] for p in c["ports"]}
    target = {p["name"]: p["targetPort"] for p in objs["Service"]["spec"]["ports"]}
    out = []
    for endpoint in objs["ServiceMonitor"]["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        name = target[endpoint["port"]]
        if name in container:
            out.append((name, container[name]))
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
@pytest.mark.parametrize("openai", ["Auto", "Disabled"])
def test_every_pod_is_scraped_once_where_its_metrics_are(path: Path, openai: str) -> None:
    """Service ports target container ports by name; the ServiceMonitor reaches exactly one
    port of each pod: tritonserver's metrics port, or the OpenAI port where the frontend
    serves Triton's metrics."""
    cm = parse_chatmodel(load_example(path))
    spec = cm.spec.model_dump(by_alias=True, exclude_none=True)
    spec["serving"] = {**spec.get("serving", {}), "serviceMonitor": True, "openai": openai}
    if openai == "Disabled" and spec.pop("routing", None):
        spec.pop("autoscaling")  # a router needs the OpenAI port, scale to zero a router
    plan, children = children_for(spec, name=cm.metadata["name"])
    objs = serving(children)
    c = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["targetPort"] for p in objs["Service"]["spec"]["ports"]} == {
        "http": "http",
        "grpc": "grpc",
        "metrics": "metrics",
        "openai": "openai",
    }
    if plan.openai_frontend:
        assert c["args"][0] == FRONTEND_MAIN
        assert _scraped(children) == [("openai", 9000)]
        assert "--openai-port=9000" in c["args"]
    else:
        assert c["command"] == ["tritonserver"]
        assert _scraped(children) == [("metrics", 8002)]
        assert "--metrics-port=8002" in c["args"]
    for obj in children.all():
        validate(obj)


def test_tokenizer_is_the_checkpoint_as_the_pod_mounts_it() -> None:
    spec = parse_spec(
        {
            "model": {"source": "pvc://models/yi", "family": "yi-chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
        }
    )
    plan = plan_spec(
        spec, resolve_model(spec.model, config=KNOWN_MODELS["01-ai/yi-34b-chat"].config)
    )
    assert plan.openai_frontend  # a Llama checkpoint: no code of its own
    process = serving_process(spec=spec, plan=plan)
    assert "--tokenizer=/source/yi" in process.args


def test_service_and_monitor_do_not_depend_on_what_the_pods_run() -> None:
    """The operator applies them at once while the Deployment waits for a new engine, and a
    rollout mixes old and new pods: an image upgrade across 25.08 must not stop the old pods'
    scrapes (the autoscaler reads them)."""
    old_spec = parse_spec(yi(engine={"image": OLD_IMAGE}))
    old = plan_spec(old_spec, resolve_model(old_spec.model))
    spec = parse_spec(yi())
    new = plan_spec(spec, resolve_model(spec.model))
    assert old.engine_key != new.engine_key  # the image is part of the engine key
    switching = _render(spec, new, still_serving=old)
    before = _render(old_spec, old)
    after = _render(spec, new)
    assert serving(switching)["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "command"
    ] == ["tritonserver"]
    for kind in ("Service", "ServiceMonitor"):
        assert serving(before)[kind] == serving(switching)[kind] == serving(after)[kind]
    assert _scraped(before) == [("metrics", 8002)]
    assert _scraped(after) == [("openai", 9000)]


def test_telechat_keeps_tritonserver_because_its_tokenizer_is_code() -> None:
    plan, children = children_for(
        {
            "model": {"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
            "resources": {"gpu": {"memoryGiB": 80}},
        }
    )
    assert not plan.openai_frontend and "own code" in plan.openai_frontend_reason
    dep = serving(children)["Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"] == ["tritonserver"]


# --- llmapi mode: start-up caches on the volume, the checkpoint verified by the Job ----------


def test_llmapi_pods_persist_start_up_caches_under_the_runtime_key() -> None:
    plan, children = children_for(yi(engine={"mode": "llmapi"}))
    assert plan.mode == "llmapi" and plan.runtime_cache_key
    pod = serving(children)["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "runtime-cache")
    assert mount == {
        "name": "runtime-cache",
        "mountPath": "/runtime-cache",
        "subPath": f"runtime/{plan.runtime_cache_key}",
    }
    # Writable, unlike the rest of the cache volume, which the pods only read.
    volume = next(v for v in pod["volumes"] if v["name"] == "runtime-cache")
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert (
        volume["persistentVolumeClaim"]["claimName"] == cache["persistentVolumeClaim"]["claimName"]
    )
    assert "readOnly" not in volume["persistentVolumeClaim"]
    assert cache["persistentVolumeClaim"]["readOnly"] is True
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TLLM_AUTOTUNER_CACHE_PATH"] == "/runtime-cache/autotuner.cache"
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/runtime-cache/")
    # Engine mode compiles nothing at start-up: no such mount.
    engine_plan, engine_children = children_for(yi())
    assert engine_plan.mode == "engine" and engine_plan.runtime_cache_key is None
    engine_pod = serving(engine_children)["Deployment"]["spec"]["template"]["spec"]
    assert all(v["name"] != "runtime-cache" for v in engine_pod["volumes"])


def test_runtime_key_follows_what_start_up_compiles_for() -> None:
    base = children_for(yi(engine={"mode": "llmapi"}))[0]
    same = children_for(yi(engine={"mode": "llmapi"}, serving={"replicas": 3}))[0]
    batch = children_for(yi(engine={"mode": "llmapi", "maxBatchSize": 8}))[0]
    gpu = children_for(
        yi(engine={"mode": "llmapi"}, resources={"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}})
    )[0]
    assert base.runtime_cache_key == same.runtime_cache_key
    assert len({base.runtime_cache_key, batch.runtime_cache_key, gpu.runtime_cache_key}) == 3
    assert batch.cuda_graph_batch_sizes == (1, 2, 4, 8)


def _checkpoint(root: Path, *, config: dict[str, Any], files: tuple[str, ...]) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    for name in files:
        (root / name).write_text("x")
    return root


@pytest.mark.parametrize(
    ("config", "files", "quantized", "error"),
    [
        pytest.param(
            {"architectures": ["LlamaForCausalLM"]},
            ("model.safetensors", "tokenizer.json"),
            False,
            None,
            id="hf-checkpoint",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "awq"}},
            ("model.safetensors", "tokenizer.model"),
            True,
            None,
            id="awq-checkpoint",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"]},
            ("model.safetensors", "tokenizer.json"),
            True,
            "no quantization_config",
            id="quantized-without-config",
        ),
        pytest.param(
            {"architecture": "LlamaForCausalLM", "quantization": {}},
            ("rank0.safetensors", "tokenizer.json"),
            False,
            "names no architectures",
            id="tensorrt-llm-checkpoint",
        ),
        pytest.param(
            {"architectures": ["LlamaForCausalLM"]},
            ("tokenizer.json",),
            False,
            "no weights",
            id="no-weights",
        ),
    ],
)
def test_job_verifies_the_checkpoint_the_llm_api_loads(
    tmp_path: Path,
    config: dict[str, Any],
    files: tuple[str, ...],
    quantized: bool,
    error: str | None,
) -> None:
    import subprocess
    import sys

    from chatmodel_operator.render.build_commands import verify_script

    root = _checkpoint(tmp_path / "ckpt", config=config, files=files)
    line = verify_script(str(root), quantized=quantized, tokenizer=True)
    assert line.startswith("python3 ")
    run = subprocess.run(
        ["bash", "-c", sys.executable + line.removeprefix("python3")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if error is None:
        assert run.returncode == 0 and "verified" in run.stdout, run.stdout + run.stderr
    else:
        assert run.returncode == 4 and error in run.stdout, run.stdout + run.stderr


def test_llmapi_job_verifies_before_marking_the_key_complete() -> None:
    script = build_script(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat-4bits"}, "engine": {"mode": "llmapi"}}
    )
    verify, complete = script.index("cannot be served"), script.index("/.complete")
    assert verify < complete


SEEDS_ON_NEWEST = [
    pytest.param("SUSTech/SUS-Chat-34B", "trtllm-python-py3", {}, id="sus-chat"),
    pytest.param("01-ai/Yi-34B-Chat", "trtllm-python-py3", {}, id="yi"),
    pytest.param(
        "Tele-AI/TeleChat-52B", "trtllm-python-py3", {"trustRemoteCode": True}, id="telechat"
    ),
    pytest.param("xverse/XVERSE-7B-Chat", "vllm-python-py3", {}, id="xverse"),
]


@pytest.mark.parametrize(("source", "flavour", "model"), SEEDS_ON_NEWEST)
def test_seed_models_render_on_the_newest_release(
    source: str, flavour: str, model: dict[str, Any]
) -> None:
    from chatmodel_operator.catalog.triton_releases import RELEASES
    from chatmodel_operator.plan.image import ngc_image
    from chatmodel_operator.render.repository import build_repository_for

    image = ngc_image(RELEASES[-1].release, flavour)
    spec = parse_spec(
        {
            "model": {"source": f"hf://{source}", **model},
            "resources": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3", "count": 4}},
            "engine": {"image": image},
        }
    )
    info = resolve_model(spec.model)
    plan = plan_spec(spec, info)
    assert plan.fits and plan.image == image and plan.mode != "engine", plan.reason
    repo = build_repository_for(spec=spec, plan=plan, model=info)
    children = render_children(
        name="seed", namespace="ns", uid="u", spec=spec, plan=plan, repository=repo
    )
    for obj in children.all():
        validate(obj)
    assert all(
        c["image"] == image
        for o in children.all()
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    )


def test_network_policies_admit_only_the_listed_clients_and_limit_the_build() -> None:
    plan, children = children_for(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "serving": {
                "networkPolicy": {
                    "enabled": True,
                    "fromNamespaces": ["apps"],
                    "fromPodLabels": {"app": "ui"},
                    "buildEgressCIDRs": ["10.20.0.0/16"],
                }
            },
        }
    )
    policies = {o["metadata"]["name"]: o for o in children.serving if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {"m-serving", "m-build"}
    for obj in policies.values():
        validate(obj)
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "ChatModel"
    serving = policies["m-serving"]["spec"]
    dep = next(o for o in children.serving if o["kind"] == "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert serving["podSelector"]["matchLabels"].items() <= pod_labels.items()
    clients, monitoring = serving["ingress"]
    assert clients["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}},
        {"podSelector": {"matchLabels": {"app": "ui"}}},
    ]
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in clients["ports"]} == {"http", "grpc", "openai"} <= container_ports
    assert {p["port"] for p in monitoring["ports"]} == {"metrics", "openai"}
    assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    build = policies["m-build"]["spec"]
    job_labels = children.build_job["spec"]["template"]["metadata"]["labels"]
    assert build["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert build["ingress"] == [] and build["policyTypes"] == ["Ingress", "Egress"]
    dns, https = build["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert https == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    assert plan.engine_key in json.dumps(build["podSelector"])


def test_network_policy_is_opt_in_and_checks_its_cidrs() -> None:
    _, children = children_for(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )
    assert not any(o["kind"] == "NetworkPolicy" for o in children.all())
    with pytest.raises(SpecErrors, match=r"buildEgressCIDRs.*10\.0\.0\.1/8.*such as 10\.0\.0\.0/8"):
        parse_spec(
            {
                "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                "serving": {"networkPolicy": {"enabled": True, "buildEgressCIDRs": ["10.0.0.1/8"]}},
            }
        )
