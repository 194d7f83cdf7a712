"""One builder per Kubernetes kind (pure): keyword arguments in, a fresh dict out."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from chatmodel_operator.api.spec import API_VERSION, KIND, ChatModelSpec
from chatmodel_operator.catalog.source import Source, parse_source
from chatmodel_operator.plan import Plan
from chatmodel_operator.render import build_commands as bc
from chatmodel_operator.render.labels import (
    FRONTEND_LABEL,
    cache_pvc_name,
    configmap_name,
    deployment_name,
    job_name,
    labels,
    selector_labels,
    service_name,
)
from chatmodel_operator.render.paths import (
    CACHE_MOUNT,
    MODEL_REPOSITORY_MOUNT,
    RUNTIME_CACHE_ENV,
    RUNTIME_CACHE_MOUNT,
    SCRATCH_MOUNT,
    SOURCE_MOUNT,
    CachePaths,
    cache_paths,
    runtime_cache_subpath,
)
from chatmodel_operator.render.routing import ENGINE_TYPE_LABEL, engine_type, inference_pool_name
from chatmodel_operator.render.security import (
    BUILD_SCRATCH_LIMIT,
    SERVING_SCRATCH_LIMIT,
    harden_pod,
    scratch_mount,
    scratch_volume,
    shm_mount,
    shm_volume,
    writable_env,
)
from chatmodel_operator.signals import SIGNALS, router_queue_query
from chatmodel_operator.triton import configmap_key, triton_openai_frontend_args

BUILD_BACKOFF_LIMIT = 2
BUILD_DEADLINE_SECONDS = 6 * 3600
HF_TOKEN_KEY = "HF_TOKEN"
REPOSITORY_HASH_ANNOTATION = "serving.chatmodel.io/repository-hash"
FRONTEND_REASON_ANNOTATION = "serving.chatmodel.io/frontend-reason"
TRITON_OPENAI_FRONTEND = "triton-openai-frontend"
TRITONSERVER = "tritonserver"
# Requests that leave max_tokens out get this many (at most maxOutputLength), as from the local
# OpenAI front of `chatmodel serve`.
DEFAULT_MAX_TOKENS = 512


def _last_wins(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variable, the last one given, in the order the names first appear (the
    API server keeps duplicates and the kubelet takes the last: say it once)."""
    by_name = {e["name"]: e for e in env}
    return [by_name[n] for n in dict.fromkeys(e["name"] for e in env)]


def owner_reference(*, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    *,
    name: str,
    namespace: str,
    labels_: Mapping[str, str],
    owner: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels_)}
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def render_cache_pvc(
    *, namespace: str, spec: ChatModelSpec, chatmodel: str, owner: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The cache volume. With deletePolicy Retain it has no owner and outlives the ChatModel."""
    c = spec.cache
    pvc_spec: dict[str, Any] = {
        "accessModes": [c.access_mode],
        "resources": {"requests": {"storage": c.size}},
        "volumeMode": "Filesystem",
    }
    if c.storage_class_name:
        pvc_spec["storageClassName"] = c.storage_class_name
    lab = labels(chatmodel, "cache")
    lab.pop("chatmodel")  # shared between ChatModels
    lab.pop("app.kubernetes.io/instance")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(
            name=cache_pvc_name(c.storage_class_name, c.access_mode),
            namespace=namespace,
            labels_=lab,
            owner=owner if c.delete_policy == "Delete" else None,
        ),
        "spec": pvc_spec,
    }


def _cache_volumes(
    spec: ChatModelSpec, source: Source, *, read_only: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    c = spec.cache
    volumes: list[dict[str, Any]] = [
        {
            "name": "cache",
            "persistentVolumeClaim": {
                "claimName": cache_pvc_name(c.storage_class_name, c.access_mode),
                "readOnly": read_only,
            },
        }
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_MOUNT, "readOnly": read_only}
    ]
    if source.scheme == "pvc":
        volumes.append(
            {
                "name": "source",
                "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
            }
        )
        mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
    elif source.scheme == "file":
        # A node-local checkpoint (single-node clusters, kind): mounted read-only in place.
        volumes.append(
            {"name": "source", "hostPath": {"path": source.location, "type": "Directory"}}
        )
        mounts.append({"name": "source", "mountPath": source.location, "readOnly": True})
    return volumes, mounts


def _credentials_env(spec: ChatModelSpec, source: Source) -> list[dict[str, Any]]:
    """Secrets reach the pod only as secretKeyRef, and only the container that downloads: never
    the build or serving container, the spec we render or the status."""
    secret = spec.model.credentials_secret
    if not secret:
        return []
    if source.scheme == "hf":
        return [
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": HF_TOKEN_KEY}},
            }
        ]
    return []


def build_script(*, plan: Plan, paths: CachePaths, prequantized: bool) -> str:
    if plan.route == "tensorrt-llm/engine":
        return bc.engine_build_script(
            paths=paths,
            quantization=plan.quantization,
            dtype=plan.dtype,
            kv_cache_dtype=plan.kv_cache_dtype,
            tensor_parallelism=plan.tensor_parallelism,
            max_batch_size=plan.max_batch_size,
            max_input_length=plan.max_input_length,
            max_sequence_length=plan.max_sequence_length,
            max_num_tokens=plan.max_num_tokens,
            prequantized=prequantized,
        )
    if plan.route == "tensorrt-llm/llmapi":
        return bc.llmapi_prepare_script(
            paths=paths, quantization=plan.quantization, dtype=plan.dtype, prequantized=prequantized
        )
    return bc.prepare_only_script(paths=paths)


def render_build_job(
    *,
    namespace: str,
    spec: ChatModelSpec,
    plan: Plan,
    chatmodel: str,
    prequantized: bool,
) -> dict[str, Any]:
    """Download the checkpoint, then convert and build (engine mode) or prepare it.

    Named by the engine key and owned by no ChatModel: a build started for one ChatModel is
    shared with every other that asks for the same key, and survives their deletion.
    """
    source = parse_source(spec.model.source)
    paths = cache_paths(source, spec.model.source, plan.engine_key)
    volumes, mounts = _cache_volumes(spec, source, read_only=False)
    volumes.append(scratch_volume(BUILD_SCRATCH_LIMIT))
    mounts.append(scratch_mount())
    env = [
        *writable_env(vllm=False),
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/hf-home"},
    ]
    init: list[dict[str, Any]] = []
    if paths.downloaded:
        init.append(
            {
                "name": "download",
                "image": plan.image
                if source.scheme == "hf"
                else (
                    "amazon/aws-cli:2.17.0" if source.scheme == "s3" else "google/cloud-sdk:slim"
                ),
                "command": ["/bin/sh", "-c"],
                "args": [bc.fetch_script(source, spec.model.source, paths)],
                "env": env + _credentials_env(spec, source),
                "volumeMounts": mounts,
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"memory": "8Gi"},
                },
            }
        )
    gpus = (
        plan.gpus_per_replica
        if plan.route == "tensorrt-llm/engine" or plan.quantization == "fp8"
        else 0
    )
    resources: dict[str, Any] = {
        "requests": {"cpu": "4", "memory": "32Gi"},
        "limits": {"memory": "256Gi"},
    }
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = gpus
        resources["limits"]["nvidia.com/gpu"] = gpus
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": init,
        "containers": [
            {
                "name": "build",
                "image": plan.image,
                "command": ["/bin/bash", "-c"],
                "args": [build_script(plan=plan, paths=paths, prequantized=prequantized)],
                # trtllm-build writes its timing cache (model.cache) to the working directory.
                "workingDir": SCRATCH_MOUNT,
                "env": env,
                "volumeMounts": mounts,
                "resources": resources,
            }
        ],
        "volumes": volumes,
    }
    if gpus:
        # Engines are specific to the GPU they are built on: build where they will serve.
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        if plan.gpu_product:
            pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": plan.gpu_product}
    if not init:
        pod_spec.pop("initContainers")
    harden_pod(pod_spec, spec.serving.security_context)
    lab = labels(chatmodel, "engine-build", plan.engine_key)
    lab.pop("chatmodel")
    lab.pop("app.kubernetes.io/instance")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(
            name=job_name(plan.engine_key),
            namespace=namespace,
            labels_=lab,
            owner=None,
            annotations={
                "serving.chatmodel.io/source": spec.model.source,
                "serving.chatmodel.io/route": plan.route,
            },
        ),
        "spec": {
            "backoffLimit": BUILD_BACKOFF_LIMIT,
            "activeDeadlineSeconds": BUILD_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {"metadata": {"labels": lab}, "spec": pod_spec},
        },
    }


def _paths(repository: Mapping[PurePosixPath, str]) -> list[PurePosixPath]:
    """Repository paths in a fixed order. Sorted by their text: comparing PurePosixPath objects
    part by part made sorting the slowest step of rendering."""
    return sorted(repository, key=str)


def repository_hash(repository: Mapping[PurePosixPath, str]) -> str:
    """Digest of the whole repository (paths and contents)."""
    h = hashlib.sha256()
    for path in _paths(repository):
        h.update(str(path).encode() + b"\0" + _text_digest(repository[path]) + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def _text_digest(text: str) -> bytes:
    # Most of a repository is our Python models' source, the same str objects on every pass;
    # str caches its own hash, so a hit here costs a dict lookup instead of re-hashing ~100 KiB.
    return hashlib.sha256(text.encode()).digest()


def render_configmap(
    *,
    name: str,
    namespace: str,
    engine_key: str,
    repository: Mapping[PurePosixPath, str],
    owner: Mapping[str, Any],
    digest: str | None = None,
) -> dict[str, Any]:
    """``digest`` is repository_hash(repository) when the caller already has it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            name=configmap_name(name, engine_key),
            namespace=namespace,
            labels_=labels(name, "model-repository", engine_key),
            owner=owner,
            annotations={REPOSITORY_HASH_ANNOTATION: digest or repository_hash(repository)},
        ),
        "data": {configmap_key(p): repository[p] for p in _paths(repository)},
    }


# Triton's opt-in latency metrics, which the serving dashboard reads: per-model summaries (p50
# and p95 request latency) and the time-to-first-token histogram. Triton's default summary
# quantiles ask for 0.1% error at p95/p99, whose CKMS buffers cost every request a few
# microseconds of copying; the dashboard shows p50 and p95, to within 5% and 1%.
TRITON_METRICS_CONFIG: tuple[str, ...] = (
    "--metrics-config=summary_latencies=true",
    "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.95:0.01,0.99:0.01",
    "--metrics-config=histogram_latencies=true",
)


def tritonserver_args(
    *, http_port: int, grpc_port: int, metrics_port: int, repository: str
) -> list[str]:
    """The tritonserver command line, shared by the pod and `chatmodel serve`."""
    return [
        f"--model-repository={repository}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=false",
        "--metrics-interval-ms=1000",
        *TRITON_METRICS_CONFIG,
        "--disable-auto-complete-config",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]


@dataclass(frozen=True)
class ServingProcess:
    """What the serving container runs and where it listens (the Service and ServiceMonitor
    cover both kinds, see METRICS_PORTS)."""

    frontend: str  # TRITON_OPENAI_FRONTEND or TRITONSERVER, the value of FRONTEND_LABEL
    reason: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    ports: tuple[tuple[str, int], ...]  # (name, number) of the container's ports
    metrics_port: str  # the one whose /metrics has Triton's nv_* series (see METRICS_PORTS)
    env: tuple[tuple[str, str], ...]


def serving_process(*, spec: ChatModelSpec, plan: Plan) -> ServingProcess:
    """Triton's OpenAI frontend where the plan says the image ships it, plain tritonserver
    otherwise. The frontend runs Triton in its own process and also serves the KServe HTTP and
    gRPC ports (generate endpoints, genai-perf, `chatmodel chat` keep working); it starts no
    metrics port of its own (tritonfrontend's Metrics server is never started by it), and
    serves Triton's metrics on the OpenAI port's /metrics."""
    s = spec.serving
    env: list[tuple[str, str]] = []
    if plan.openai_frontend:
        if plan.route == "tensorrt-llm/engine":
            # The frontend's in-process server cannot be started per rank by mpirun (leader
            # mode): NVIDIA runs it in orchestrator mode, the only one with tensor parallelism.
            env.append(("TRTLLM_ORCHESTRATOR", "1"))
        paths = cache_paths(parse_source(spec.model.source), spec.model.source, plan.engine_key)
        argv = triton_openai_frontend_args(
            repository=MODEL_REPOSITORY_MOUNT,
            tokenizer_dir=paths.checkpoint,  # the checkpoint's tokenizer, as the pod mounts it
            http_port=s.http_port,
            grpc_port=s.grpc_port,
            openai_port=s.openai_port,
            default_max_tokens=min(DEFAULT_MAX_TOKENS, plan.max_output_length),
        )
        return ServingProcess(
            frontend=TRITON_OPENAI_FRONTEND,
            reason=plan.openai_frontend_reason,
            command=tuple(argv[:1]),
            args=tuple(argv[1:]),
            ports=(("http", s.http_port), ("grpc", s.grpc_port), ("openai", s.openai_port)),
            metrics_port="openai",
            env=tuple(env),
        )
    if plan.route == "tensorrt-llm/engine" and plan.tensor_parallelism > 1:
        # Orchestrator mode: one tritonserver spawns the other ranks itself (no mpirun).
        env.append(("TRTLLM_ORCHESTRATOR", "1"))
    return ServingProcess(
        frontend=TRITONSERVER,
        reason=plan.openai_frontend_reason,
        command=("tritonserver",),
        args=tuple(
            tritonserver_args(
                http_port=s.http_port,
                grpc_port=s.grpc_port,
                metrics_port=s.metrics_port,
                repository=MODEL_REPOSITORY_MOUNT,
            )
        ),
        ports=(("http", s.http_port), ("grpc", s.grpc_port), ("metrics", s.metrics_port)),
        metrics_port="metrics",
        env=tuple(env),
    )


def render_deployment(
    *,
    name: str,
    namespace: str,
    spec: ChatModelSpec,
    plan: Plan,
    engine_key: str,
    repository: Mapping[PurePosixPath, str],
    owner: Mapping[str, Any],
    replicas: int | None,
    digest: str | None = None,
) -> dict[str, Any]:
    """Triton pods serving the engine ``engine_key`` (the serving key, which may lag the
    planned key while a new engine builds). ``replicas`` None leaves them to the autoscaler.
    What they run, Triton's OpenAI frontend or tritonserver, follows ``plan``."""
    proc = serving_process(spec=spec, plan=plan)
    source = parse_source(spec.model.source)
    volumes, mounts = _cache_volumes(spec, source, read_only=True)
    items = [{"key": configmap_key(p), "path": str(p)} for p in _paths(repository)]
    volumes += [
        {
            "name": "model-repository",
            "configMap": {"name": configmap_name(name, engine_key), "items": items},
        },
        shm_volume(),
        scratch_volume(SERVING_SCRATCH_LIMIT),
    ]
    mounts += [
        {"name": "model-repository", "mountPath": MODEL_REPOSITORY_MOUNT, "readOnly": True},
        shm_mount(),
        scratch_mount(),
    ]
    runtime_env: list[dict[str, str]] = []
    if plan.runtime_cache_key:
        # The rest of the cache stays read-only; only this key's directory is writable. The
        # kubelet creates the subPath on first use.
        c = spec.cache
        volumes.append(
            {
                "name": "runtime-cache",
                "persistentVolumeClaim": {
                    "claimName": cache_pvc_name(c.storage_class_name, c.access_mode)
                },
            }
        )
        mounts.append(
            {
                "name": "runtime-cache",
                "mountPath": RUNTIME_CACHE_MOUNT,
                "subPath": runtime_cache_subpath(plan.runtime_cache_key),
            }
        )
        runtime_env = [{"name": k, "value": v} for k, v in RUNTIME_CACHE_ENV]
    gpus = plan.gpus_per_replica
    memory_gi = max(16, int(plan.weights_gib * 1.25) + 8)
    env = [
        *writable_env(vllm=plan.route == "vllm"),
        {"name": "HF_HOME", "value": f"{SCRATCH_MOUNT}/hf-home"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    env += [{"name": k, "value": v} for k, v in proc.env]
    # The runtime cache on the volume outranks the scratch copy of the same caches.
    env = _last_wins(env + runtime_env)
    # Both processes serve KServe's health on the HTTP port. The frontend opens it (and /v1)
    # only once every model is loaded, so it is ready exactly when tritonserver would be.
    probe_http = {"path": "/v2/health/ready", "port": "http"}
    pod_labels = {
        **labels(name, "server", engine_key),
        FRONTEND_LABEL: proc.frontend,
        ENGINE_TYPE_LABEL: engine_type(plan.route),
    }
    container = {
        "name": "triton",
        "image": plan.image,
        "command": list(proc.command),
        "args": list(proc.args),
        "ports": [
            {"name": port, "containerPort": number, "protocol": "TCP"}
            for port, number in proc.ports
        ],
        "env": env,
        "resources": {
            "requests": {
                "cpu": str(max(2, 4 * gpus)),
                "memory": f"{memory_gi}Gi",
                "nvidia.com/gpu": gpus,
            },
            "limits": {"memory": f"{memory_gi * 2}Gi", "nvidia.com/gpu": gpus},
        },
        "volumeMounts": mounts,
        # Loading tens of GiB of weights takes minutes: the startup probe allows up to an hour
        # so that liveness never kills a pod that is still loading.
        "startupProbe": {
            "httpGet": probe_http,
            "periodSeconds": 10,
            "failureThreshold": 360,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "httpGet": probe_http,
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": probe_http,
            "periodSeconds": 15,
            "failureThreshold": 4,
            "timeoutSeconds": 5,
        },
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
    }
    if plan.gpu_product and spec.resources.gpu.product:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": plan.gpu_product}
    harden_pod(pod_spec, spec.serving.security_context)
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        # A new engine rolls in pod by pod and an old pod leaves only once a new one is ready.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": 3600,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {REPOSITORY_HASH_ANNOTATION: digest or repository_hash(repository)},
            },
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            name=deployment_name(name),
            namespace=namespace,
            labels_={**labels(name, "server"), FRONTEND_LABEL: proc.frontend},
            owner=owner,
            annotations={FRONTEND_REASON_ANNOTATION: proc.reason} if proc.reason else None,
        ),
        "spec": dep_spec,
    }


# Service ports target container ports by name, and a pod that lacks the name is left out of
# that port's endpoints. So the Service lists the ports of both processes: `metrics` reaches
# pods running tritonserver, `openai` pods running Triton's OpenAI frontend, and each pod sits
# behind exactly one of them. The Service need not know what the pods run: it is right during
# an engine build (applied at once while the Deployment waits) and while a rollout mixes both.
METRICS_PORTS = ("metrics", "openai")


def render_service(
    *, name: str, namespace: str, spec: ChatModelSpec, owner: Mapping[str, Any]
) -> dict[str, Any]:
    s = spec.serving
    numbers = {
        "http": s.http_port,
        "grpc": s.grpc_port,
        "metrics": s.metrics_port,
        "openai": s.openai_port,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(
            name=service_name(name),
            namespace=namespace,
            labels_=labels(name, "server"),
            owner=owner,
        ),
        "spec": {
            "type": s.service_type,
            "selector": selector_labels(name),
            "ports": [
                {"name": port, "port": number, "targetPort": port, "protocol": "TCP"}
                for port, number in numbers.items()
            ],
        },
    }


def _target_quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers plain, fractions in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def render_hpa(
    *, name: str, namespace: str, spec: ChatModelSpec, owner: Mapping[str, Any]
) -> dict[str, Any]:
    a = spec.autoscaling
    signal = SIGNALS[a.metric]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(
            name=name, namespace=namespace, labels_=labels(name, "autoscaler"), owner=owner
        ),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(name),
            },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": signal.hpa_metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": _target_quantity(a.effective_target()),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
                # New replicas need minutes to load weights: add one at a time, promptly.
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
                },
            },
        },
    }


def render_scaled_object(
    *, name: str, namespace: str, spec: ChatModelSpec, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """A KEDA ScaledObject on the Triton load signal, and, with routing.inferencePool, on the
    router's queue for this pool too: at zero replicas no pod reports load, and requests wait
    in the router (llm-d flow control), so its queue is what wakes the Deployment. With
    minReplicas 0 every query falls back to 0 rather than to no series, which KEDA would
    otherwise answer with its fallback or an error instead of "idle"."""
    a = spec.autoscaling
    signal = SIGNALS[a.metric]
    to_zero = a.min_replicas == 0
    query = signal.keda_query(namespace, name)
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": a.prometheus_address,
                "query": f"{query} or vector(0)" if to_zero else query,
                "threshold": str(a.effective_target()),
            },
        }
    ]
    if spec.routing.inference_pool is not None:
        triggers.append(
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": a.prometheus_address,
                    "query": router_queue_query(inference_pool_name(name)),
                    # llm-d's KEDA guide: one queued request per replica; any queued request
                    # wakes a Deployment at zero (activation above 0).
                    "threshold": "1",
                    "activationThreshold": "0",
                },
            }
        )
    scaled: dict[str, Any] = {
        "scaleTargetRef": {"name": deployment_name(name)},
        "minReplicaCount": a.min_replicas,
        "maxReplicaCount": a.max_replicas,
    }
    if to_zero:
        scaled["cooldownPeriod"] = a.cooldown_seconds
    scaled["advanced"] = {
        "horizontalPodAutoscalerConfig": {
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_seconds}
            }
        }
    }
    scaled["triggers"] = triggers
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(
            name=name, namespace=namespace, labels_=labels(name, "autoscaler"), owner=owner
        ),
        "spec": scaled,
    }


def render_pdb(*, name: str, namespace: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    # maxUnavailable rather than minAvailable: a single-replica model must not block node drains.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(
            name=name, namespace=namespace, labels_=labels(name, "server"), owner=owner
        ),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }


def render_service_monitor(
    *, name: str, namespace: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """Scrapes /metrics on both METRICS_PORTS: each pod answers on the one its process has
    (ServingProcess.metrics_port), so every pod is scraped once, whatever it runs."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(
            name=name, namespace=namespace, labels_=labels(name, "server"), owner=owner
        ),
        "spec": {
            "selector": {
                "matchLabels": {
                    k: v
                    for k, v in labels(name, "server").items()
                    if k != "app.kubernetes.io/managed-by"
                }
            },
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [
                {"port": port, "path": "/metrics", "interval": "5s"} for port in METRICS_PORTS
            ],
            # The recording rules group by this label: copy it from the Service onto every series.
            "targetLabels": ["chatmodel"],
        },
    }
