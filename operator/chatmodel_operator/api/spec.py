"""Pydantic models of the ChatModel resource: spec and status.

These models are the single source of truth: the CRD in ``crds/`` is generated from them
(``chatmodel crd``) and the operator validates every spec with them before acting.
Field names are camelCase on the wire (aliases) and snake_case in Python.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from chatmodel_operator.errors import SpecError, SpecErrors

GROUP = "serving.chatmodel.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ChatModel"
PLURAL = "chatmodels"
SINGULAR = "chatmodel"
SHORT_NAME = "chm"

Family = Literal["auto", "sus-chat", "yi-chat", "telechat", "xverse", "llama", "chatml"]
Backend = Literal["auto", "tensorrt-llm", "vllm", "python"]
EngineMode = Literal["auto", "engine", "llmapi"]
DType = Literal["auto", "bfloat16", "float16"]
Quantization = Literal[
    "auto",
    "none",
    "int8-weight-only",
    "int4-weight-only",
    "int4-awq",
    "int4-gptq",
    "int8-gptq",
    "fp8",
    "smoothquant",
]
KVCacheDType = Literal["auto", "float16", "bfloat16", "fp8", "int8"]
AutoscalingMetric = Literal["queue-to-compute-ratio", "pending-requests", "kv-cache-utilization"]
AutoscalingEngine = Literal["hpa", "keda"]
DeletePolicy = Literal["Retain", "Delete"]
OpenAIFrontend = Literal["Auto", "Enabled", "Disabled"]
# The levels of the Pod Security Standards, spelt as the namespace label
# pod-security.kubernetes.io/enforce spells them.
PodSecurityLevel = Literal["restricted", "baseline", "privileged"]

SOURCE_PATTERN = r"^(hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(@[A-Za-z0-9._/-]+)?|s3://[a-z0-9.-]+/.+|gs://[a-z0-9._-]+/.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.*|file:///.*)$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Defaults of the autoscaling target per metric: the ratio's 1.0 is NVIDIA's tutorial value
# (requests wait as long as they compute), 4 pending requests per replica, 80% KV-cache use.
DEFAULT_TARGETS: dict[str, float] = {
    "queue-to-compute-ratio": 1.0,
    "pending-requests": 4.0,
    "kv-cache-utilization": 0.8,
}


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class ModelSource(_Model):
    """Which checkpoint to serve and how to talk to it."""

    source: str = Field(pattern=SOURCE_PATTERN, min_length=6)
    """Where the checkpoint lives: hf://org/name[@revision], s3://bucket/path, gs://bucket/path,
    pvc://claim/path or file:///path.
    """
    family: Family = "auto"
    """Model family, which fixes the chat format and stop tokens; auto detects it from the
    checkpoint.
    """
    chat_template: str | None = Field(default=None, max_length=65536)
    """Jinja chat template that overrides the family's format and the checkpoint's own template."""
    credentials_secret: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN, max_length=253)
    """Name of a Secret in the same namespace whose key HF_TOKEN holds the hub token (hf:// sources
    only).
    """
    trust_remote_code: bool = False
    """Allow the checkpoint's own Python code to run (TeleChat and XVERSE ship custom modelling
    code).
    """


class EngineSpec(_Model):
    """How the model is executed inside Triton."""

    backend: Backend = "auto"
    """Triton backend: tensorrt-llm, vllm or python; auto picks the best one that supports the
    architecture.
    """
    mode: EngineMode = "auto"
    """For tensorrt-llm: engine converts the checkpoint and builds a TensorRT engine (TensorRT-LLM
    1.2 and older); llmapi loads the checkpoint with the PyTorch-backend LLM API, no engine
    build. auto picks engine only where the image's release ships the engine tools, llmapi
    otherwise; on an image that is not an NGC release tag, state the mode it carries.
    """
    dtype: DType = "auto"
    """Activation and weight dtype; auto takes the checkpoint's torch_dtype."""
    quantization: Quantization = "auto"
    """Weight quantization; auto keeps the checkpoint's own (pre-quantized AWQ/GPTQ checkpoints) or
    none.
    """
    kv_cache_dtype: KVCacheDType = "auto"
    """KV-cache element type; fp8 and int8 halve the KV memory per token."""
    max_input_length: int | None = Field(default=None, ge=16, le=1048576)
    """Longest prompt in tokens; defaults to the context length minus maxOutputLength."""
    max_output_length: int | None = Field(default=None, ge=1, le=1048576)
    """Most tokens generated per request; defaults to a quarter of the context, at most 2048."""
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    """Most requests batched together in flight by one replica."""
    tensor_parallelism: Literal["auto", 1, 2, 4, 8] = "auto"
    """Tensor-parallel size (GPUs one copy of the model spans); auto picks the fewest that fit."""
    image: str | None = Field(default=None, max_length=512)
    """Triton image; defaults to the newest NGC release whose contents are documented and that
    runs the backend and mode (`chatmodel releases` lists them).
    """


class GPUSpec(_Model):
    """The GPUs one replica runs on."""

    product: str | None = Field(default=None, max_length=128)
    """Value of the node label nvidia.com/gpu.product, e.g. NVIDIA-A100-SXM4-80GB; used as node
    selector.
    """
    memory_gi_b: float | None = Field(default=None, gt=0, le=1024, alias="memoryGiB")
    """Memory of one GPU in GiB, used for planning; known products fill it in."""
    count: Literal["auto", 1, 2, 4, 8] = "auto"
    """GPUs per replica; auto lets the planner choose."""


class ResourcesSpec(_Model):
    """Compute resources of one replica."""

    gpu: GPUSpec = GPUSpec()
    """GPU product, memory and count."""


class SecurityContextSpec(_Model):
    """Who the serving and build containers run as. Every pod passes the Pod Security Standard
    restricted by default: non-root, no privilege escalation, every capability dropped, seccomp
    RuntimeDefault, a read-only root filesystem."""

    run_as_user: int | None = Field(default=None, ge=0, le=2147483647)
    """UID of every container; defaults to 1000, the triton-server user of NVIDIA's Triton
    images. Set it for a custom image with another user; 0 (root) needs podSecurityLevel
    baseline or privileged.
    """
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647)
    """GID of every container; defaults to 1000, the triton-server group of NVIDIA's Triton
    images."""
    fs_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Group that owns the cache volume (applied with fsGroupChangePolicy OnRootMismatch);
    defaults to runAsGroup."""
    read_only_root_filesystem: bool = True
    """Mount the image read-only; every path the servers write to is an emptyDir or the cache
    volume. false for a custom image that writes elsewhere."""
    pod_security_level: PodSecurityLevel | None = None
    """The Pod Security Standard the pods must pass, as the namespace label
    pod-security.kubernetes.io/enforce names it. Unset means restricted, except that a file://
    source is mounted from the node (hostPath, for development clusters). restricted and
    baseline refuse the settings that break them (runAsUser 0, a file:// source); baseline or
    privileged is the explicit opt-out, for namespaces that do not enforce restricted."""


class NetworkPolicySpec(_Model):
    """A NetworkPolicy for the serving pods (who may connect) and one for the build Job (where
    it may connect). Triton's HTTP, gRPC and OpenAI ports have no authentication of their own.
    """

    enabled: bool = False
    """Create the two NetworkPolicies."""
    from_namespaces: list[
        Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
    ] = Field(default_factory=list, max_length=64)
    """Namespaces whose pods may reach the serving ports (HTTP, gRPC, OpenAI)."""
    from_pod_labels: dict[
        str,
        Annotated[str, StringConstraints(max_length=63), Field(description="The label's value.")],
    ] = Field(default_factory=dict, max_length=32)
    """Labels of the pods in the ChatModel's own namespace that may reach the serving ports;
    empty lets none of them (list the namespace in fromNamespaces to let all)."""
    monitoring_namespace: str | None = Field(
        default="monitoring", pattern=DNS_LABEL_PATTERN, max_length=63
    )
    """Namespace of the Prometheus that scrapes the metrics (the metrics port, or the OpenAI
    port's /metrics where the pods run Triton's OpenAI frontend); null lets nobody scrape."""
    build_egress_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        min_length=1,
        max_length=64,
        alias="buildEgressCIDRs",
    )
    """Where the build Job may open HTTPS connections (port 443): the hub, S3 or GCS, or your
    mirror or proxy. DNS is always allowed; nothing else is."""

    @field_validator("build_egress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(
                    f"{cidr!r} is not a CIDR: write a network and prefix length with no host "
                    "bits set, such as 10.0.0.0/8"
                ) from None
        return value


class StreamIntervalSpec(_Model):
    """How our Python engines (python and tensorrt-llm llmapi modes) stream under load: every
    token while fewer than minStreams streams are active; from then on at most maxTokens tokens
    per response, none held longer than maxDelayMs (a token is held only while the next one is
    expected within that time, so a slower engine still streams every token as it comes). Each
    response costs the serving pipeline about the same whatever its size, so this is what keeps
    it from capping a fast engine. Whatever the interval, tokens that come while their stream's
    last response is still waiting for Triton to take it go out with the next one. The C++
    engine (engine mode) and vLLM send every step.
    """

    max_tokens: int = Field(default=4, ge=1, le=64)
    """Most tokens in one streamed response under load while Triton keeps up (1: every token
    on its own)."""
    max_delay_ms: float = Field(default=50.0, ge=0.0, le=1000.0)
    """Longest a generated token waits for the others of its response, in milliseconds."""
    min_streams: int = Field(default=16, ge=1, le=100000)
    """Active streams from which responses are combined."""


class ServingSpec(_Model):
    """The serving Deployment and its Service."""

    replicas: int = Field(default=1, ge=0, le=1000)
    """Replicas when autoscaling is off (the scale subresource writes here)."""
    streaming: bool = True
    """Decoupled models so that generate_stream streams tokens."""
    stream_interval: StreamIntervalSpec = StreamIntervalSpec()
    """Tokens per streamed response when many streams are active (Python engines)."""
    http_port: int = Field(default=8000, ge=1, le=65535)
    """Triton HTTP port (KServe v2 and generate endpoints)."""
    grpc_port: int = Field(default=8001, ge=1, le=65535)
    """Triton gRPC port."""
    metrics_port: int = Field(default=8002, ge=1, le=65535)
    """Triton Prometheus metrics port of plain tritonserver; pods that run Triton's OpenAI
    frontend serve the same metrics on openaiPort (/metrics) instead.
    """
    openai: OpenAIFrontend = "Auto"
    """OpenAI-compatible /v1/chat/completions in the pods, through Triton's own OpenAI frontend
    (which also serves the KServe HTTP and gRPC ports). Auto runs it where the image ships a
    frontend that takes the operator's flags (NGC tritonserver images from 25.08) and the
    tokenizer loads without the checkpoint's own code, plain tritonserver otherwise; Enabled
    insists (a custom image that ships it); Disabled always runs plain tritonserver.
    """
    openai_port: int = Field(default=9000, ge=1, le=65535)
    """Port of the OpenAI-compatible API (and of Triton's metrics) when the frontend runs."""
    service_monitor: bool = False
    """Also create a prometheus-operator ServiceMonitor for the Triton pods."""
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the Service in front of the Triton pods."""
    security_context: SecurityContextSpec = SecurityContextSpec()
    """User, group and Pod Security level of the serving and build pods."""
    network_policy: NetworkPolicySpec = NetworkPolicySpec()
    """Who may reach the serving pods and where the build Job may connect."""


class AutoscalingSpec(_Model):
    """Horizontal autoscaling on a load signal derived from Triton's metrics."""

    enabled: bool = False
    """Create a HorizontalPodAutoscaler (or KEDA ScaledObject) for the serving Deployment."""
    engine: AutoscalingEngine = "hpa"
    """hpa uses the custom metrics API (prometheus-adapter); keda renders a ScaledObject instead."""
    min_replicas: int = Field(default=1, ge=0, le=1000)
    """Fewest replicas. 0 (scale to zero when idle) needs engine keda and
    routing.inferencePool: the router holds requests while the first pod starts, and its queue
    wakes the Deployment."""
    max_replicas: int = Field(default=4, ge=1, le=1000)
    """Most replicas."""
    # Not NVIDIA's queue-to-compute ratio by default: in-flight batching engines take every
    # request off Triton's queue at once, so the ratio stays low while requests wait inside
    # the engine (measured in tests/prometheus/test_data_plane.py).
    metric: AutoscalingMetric = "pending-requests"
    """Load signal to scale on; pending-requests counts requests waiting in Triton and in the
    engine's in-flight batcher."""
    target: float | None = Field(default=None, gt=0, le=1000000)
    """Average value per replica to hold the metric at; defaults to 1 (ratio), 4 (pending) or 0.8
    (KV use).
    """
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    """How long load must stay low before replicas are removed."""
    cooldown_seconds: int = Field(default=300, ge=0, le=86400)
    """With minReplicas 0: how long after the last sign of load (engine keda's triggers all
    at their activation value) the Deployment goes down to zero (KEDA's cooldownPeriod)."""
    prometheus_address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        pattern=r"^https?://.+",
        max_length=512,
    )
    """Prometheus that KEDA queries (engine keda only)."""

    def effective_target(self) -> float:
        return self.target if self.target is not None else DEFAULT_TARGETS[self.metric]


ENDPOINT_PICKER_KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
API_GROUP_PATTERN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class PortSpec(_Model):
    """A port, as the Gateway API Inference Extension writes one."""

    number: int = Field(ge=1, le=65535)
    """The port number."""


class EndpointPickerRefSpec(_Model):
    """The endpoint picker (the llm-d router's EPP, or another) that chooses a pod of the pool
    for each request; the InferencePool's endpointPickerRef, field for field."""

    group: str = Field(default="", max_length=253, pattern=API_GROUP_PATTERN)
    """API group of the referent; empty is the core group (a Service)."""
    kind: str = Field(
        default="Service", min_length=1, max_length=63, pattern=ENDPOINT_PICKER_KIND_PATTERN
    )
    """Kind of the referent; Service unless set (ExternalName Services are not supported by
    the gateways)."""
    name: str = Field(min_length=1, max_length=253)
    """Name of the referent, in the ChatModel's namespace."""
    port: PortSpec | None = None
    """Port of the picker; required when kind is Service (the Service port, not the target
    port)."""
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"
    """What the gateway does when the picker does not answer: FailClose drops the request,
    FailOpen forwards it to a pod of its own choosing."""


class InferencePoolSpec(_Model):
    """An InferencePool (inference.networking.k8s.io/v1) for the serving pods."""

    endpoint_picker_ref: EndpointPickerRefSpec | None = None
    """The endpoint picker of the pool; unset leaves it to the gateway (optional since the
    Gateway API Inference Extension v1.6)."""


class RoutingSpec(_Model):
    """How a gateway routes requests to the serving pods."""

    inference_pool: InferencePoolSpec | None = None
    """Create an InferencePool named as the ChatModel that selects exactly its serving pods
    on the OpenAI port (`{}` is enough), so that a Gateway API Inference Extension gateway
    and the llm-d router can route to them. Needs the OpenAI frontend (serving.openai not
    Disabled)."""


class CacheSpec(_Model):
    """The volume that holds downloaded checkpoints and built engines, keyed by engine hash."""

    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the cache PersistentVolumeClaim; the cluster default when unset."""
    size: str = Field(default="500Gi", pattern=QUANTITY_PATTERN)
    """Size of the cache volume."""
    delete_policy: DeletePolicy = "Retain"
    """Retain keeps the cache when the ChatModel is deleted; Delete removes it with the ChatModel.
    """
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteMany"
    """ReadWriteMany lets every replica mount the engine; ReadWriteOnce for single-node clusters."""


# Cross-field rules, declared once: each has the CEL expression for the CRD (checked by the API
# server) and a Python predicate over the validated spec (checked by the operator and CLI).
CrossRule = tuple[str, str, str, str]  # (scope, CEL, message, field path)

# One container listens on every serving port, so they must differ; a port left out of the
# spec counts at its default (the CEL below spells the defaults out).
SERVING_PORTS = ("httpPort", "grpcPort", "metricsPort", "openaiPort")


def _port_or_default(alias: str) -> str:
    field = next(f for f in ServingSpec.model_fields.values() if f.alias == alias)
    return f"(has(self.{alias}) ? self.{alias} : {field.default})"


_DISTINCT_PORTS_CEL = " && ".join(
    f"{_port_or_default(a)} != {_port_or_default(b)}"
    for i, a in enumerate(SERVING_PORTS)
    for b in SERVING_PORTS[i + 1 :]
)

SPEC_RULES: list[CrossRule] = [
    (
        "autoscaling",
        "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "spec.autoscaling.minReplicas",
    ),
    (
        "engine",
        "!has(self.mode) || self.mode != 'llmapi' || !has(self.backend)"
        " || self.backend in ['auto', 'tensorrt-llm']",
        "engine.mode llmapi applies to backend tensorrt-llm only; "
        "set engine.backend to tensorrt-llm or auto",
        "spec.engine.mode",
    ),
    (
        "spec",
        "!has(self.model.credentialsSecret) || self.model.source.startsWith('hf://')",
        "model.credentialsSecret is only used with hf:// sources; remove it or use an hf:// source",
        "spec.model.credentialsSecret",
    ),
    (
        "spec",
        # Both fields are int-or-string ('auto' is their only string): compare only two ints,
        # since CEL without heterogeneous equality rejects int == string.
        "!has(self.resources) || !has(self.resources.gpu) || !has(self.resources.gpu.count)"
        " || type(self.resources.gpu.count) == string || !has(self.engine)"
        " || !has(self.engine.tensorParallelism) || type(self.engine.tensorParallelism) == string"
        " || self.resources.gpu.count == self.engine.tensorParallelism",
        "resources.gpu.count and engine.tensorParallelism must agree when both are set "
        "(one replica spans tensorParallelism GPUs)",
        "spec.resources.gpu.count",
    ),
    (
        "serving",
        _DISTINCT_PORTS_CEL,
        "serving.httpPort, grpcPort, metricsPort and openaiPort must all differ "
        "(one Triton container listens on them)",
        "spec.serving.openaiPort",
    ),
    (
        "serving",
        "!has(self.securityContext) || !has(self.securityContext.runAsUser)"
        " || self.securityContext.runAsUser != 0"
        " || (has(self.securityContext.podSecurityLevel)"
        " && self.securityContext.podSecurityLevel != 'restricted')",
        "serving.securityContext.runAsUser 0 runs the pods as root, which Pod Security "
        "restricted forbids; set the image's non-root uid, or set "
        "serving.securityContext.podSecurityLevel to baseline to opt out",
        "spec.serving.securityContext.runAsUser",
    ),
    (
        # A file:// checkpoint is mounted from the node (hostPath), which baseline and
        # restricted forbid. With no level set, file:// stays usable on development clusters;
        # a level that forbids it is refused. (No default in the schema: the API server would
        # fill one in, and the rule could no longer tell.)
        "spec",
        "!self.model.source.startsWith('file://') || !has(self.serving)"
        " || !has(self.serving.securityContext)"
        " || !has(self.serving.securityContext.podSecurityLevel)"
        " || self.serving.securityContext.podSecurityLevel == 'privileged'",
        "a file:// source is mounted from the node as a hostPath volume, which Pod Security "
        "baseline and restricted forbid; copy the checkpoint to a volume and use "
        "pvc://claim/path, or set serving.securityContext.podSecurityLevel to privileged",
        "spec.serving.securityContext.podSecurityLevel",
    ),
    (
        # Scoped at spec, like the rules below, so that the API server names the field itself.
        "spec",
        "!has(self.routing) || !has(self.routing.inferencePool)"
        " || !has(self.routing.inferencePool.endpointPickerRef)"
        " || (has(self.routing.inferencePool.endpointPickerRef.kind)"
        " && self.routing.inferencePool.endpointPickerRef.kind != 'Service')"
        " || has(self.routing.inferencePool.endpointPickerRef.port)",
        "routing.inferencePool.endpointPickerRef.port is required when kind is Service (the "
        "default); set port.number to the picker Service's port, 9002 for the llm-d router",
        "spec.routing.inferencePool.endpointPickerRef.port",
    ),
    (
        "spec",
        "!has(self.routing) || !has(self.routing.inferencePool) || !has(self.serving)"
        " || !has(self.serving.openai) || self.serving.openai != 'Disabled'",
        "routing.inferencePool routes to the OpenAI port, which serving.openai Disabled turns "
        "off; set serving.openai to Auto or Enabled, or remove routing.inferencePool",
        "spec.routing.inferencePool",
    ),
    (
        "spec",
        "!has(self.autoscaling) || !has(self.autoscaling.minReplicas)"
        " || self.autoscaling.minReplicas > 0"
        " || (has(self.autoscaling.engine) && self.autoscaling.engine == 'keda')",
        "autoscaling.minReplicas 0 needs autoscaling.engine keda (an HPA cannot scale to zero "
        "and back); set engine to keda, or minReplicas to 1 or more",
        "spec.autoscaling.minReplicas",
    ),
    (
        "spec",
        "!has(self.autoscaling) || !has(self.autoscaling.minReplicas)"
        " || self.autoscaling.minReplicas > 0"
        " || (has(self.routing) && has(self.routing.inferencePool))",
        "autoscaling.minReplicas 0 needs routing.inferencePool: at zero replicas only the "
        "router holds requests while the first pod starts, and its queue wakes the "
        "Deployment; add routing.inferencePool, or set minReplicas to 1 or more",
        "spec.autoscaling.minReplicas",
    ),
]


class ChatModelSpec(_Model):
    """Desired state: serve one chat model on Triton."""

    model: ModelSource
    """The checkpoint and its chat format."""
    engine: EngineSpec = EngineSpec()
    """Backend, precision, parallelism and limits of the engine."""
    resources: ResourcesSpec = ResourcesSpec()
    """GPUs per replica."""
    serving: ServingSpec = ServingSpec()
    """Serving replicas, streaming and ports."""
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    """Autoscaling on Triton load signals."""
    cache: CacheSpec = CacheSpec()
    """Checkpoint and engine cache volume."""
    routing: RoutingSpec = RoutingSpec()
    """Routing through a Gateway API Inference Extension gateway (InferencePool)."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ChatModelSpec:
        problems: list[tuple[str, str]] = []
        a = self.autoscaling
        if a.min_replicas > a.max_replicas:
            problems.append((SPEC_RULES[0][3], SPEC_RULES[0][2]))
        e = self.engine
        if e.mode == "llmapi" and e.backend not in ("auto", "tensorrt-llm"):
            problems.append((SPEC_RULES[1][3], SPEC_RULES[1][2]))
        if self.model.credentials_secret and not self.model.source.startswith("hf://"):
            problems.append((SPEC_RULES[2][3], SPEC_RULES[2][2]))
        count = self.resources.gpu.count
        tp = e.tensor_parallelism
        if count != "auto" and tp != "auto" and count != tp:
            problems.append((SPEC_RULES[3][3], SPEC_RULES[3][2]))
        s = self.serving
        if len({s.http_port, s.grpc_port, s.metrics_port, s.openai_port}) < len(SERVING_PORTS):
            problems.append((SPEC_RULES[4][3], SPEC_RULES[4][2]))
        sc = s.security_context
        if sc.run_as_user == 0 and sc.pod_security_level in (None, "restricted"):
            problems.append((SPEC_RULES[5][3], SPEC_RULES[5][2]))
        if self.model.source.startswith("file://") and sc.pod_security_level not in (
            None,
            "privileged",
        ):
            problems.append((SPEC_RULES[6][3], SPEC_RULES[6][2]))
        pool = self.routing.inference_pool
        picker = pool.endpoint_picker_ref if pool is not None else None
        if picker is not None and picker.kind == "Service" and picker.port is None:
            problems.append((SPEC_RULES[7][3], SPEC_RULES[7][2]))
        if pool is not None and s.openai == "Disabled":
            problems.append((SPEC_RULES[8][3], SPEC_RULES[8][2]))
        if a.min_replicas == 0 and a.engine != "keda":
            problems.append((SPEC_RULES[9][3], SPEC_RULES[9][2]))
        if a.min_replicas == 0 and pool is None:
            problems.append((SPEC_RULES[10][3], SPEC_RULES[10][2]))
        if problems:
            # pydantic wraps ValueError; the message carries field and fix for _to_spec_errors.
            raise ValueError(" | ".join(f"{f}::{m}" for f, m in problems))
        return self


class Condition(_Model):
    """A Kubernetes API convention condition."""

    type: str
    """Condition type: Validated, Planned, EngineReady, Available, Ready and others."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    """CamelCase reason."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The generation this condition was computed from."""


class PlanStatus(_Model):
    """The planner's decision (the same shape `chatmodel plan -o json` prints)."""

    fits: bool
    """Whether the model fits the GPUs."""
    reason: str
    """Why: the numbers behind the decision, or what would fit."""
    backend: str
    """Backend chosen."""
    mode: str | None = None
    """TensorRT-LLM mode (engine or llmapi) when the backend is tensorrt-llm."""
    mode_reason: str | None = None
    """Why this mode: what the image's release carries, or the spec's own choice."""
    image: str | None = None
    """The Triton image the pods and the build Job run."""
    backend_reason: str | None = None
    """Why this backend, when it is a fallback."""
    family: str | None = None
    """Model family detected."""
    architecture: str | None = None
    """Hugging Face architecture of the checkpoint."""
    dtype: str | None = None
    """Dtype of the unquantized parts."""
    quantization: str
    """Weight quantization."""
    kv_cache_dtype: str | None = None
    """KV-cache element type."""
    gpus_per_replica: int
    """GPUs one replica needs."""
    tensor_parallelism: int
    """Tensor-parallel size."""
    gpu_memory_gi_b: float | None = Field(default=None, alias="gpuMemoryGiB")
    """Memory of one GPU planned with."""
    weights_gi_b: float = Field(alias="weightsGiB")
    """Weights of the whole model in GiB."""
    weights_per_gpu_gi_b: float | None = Field(default=None, alias="weightsPerGpuGiB")
    """Weights on one GPU in GiB."""
    reserve_per_gpu_gi_b: float | None = Field(default=None, alias="reservePerGpuGiB")
    """Runtime reserve and activation workspace on one GPU in GiB."""
    kv_cache_bytes_per_token: int
    """KV-cache bytes per token for the whole model (all layers, all GPUs)."""
    kv_cache_tokens: int
    """KV-cache tokens one replica holds."""
    max_sequence_length: int | None = None
    """maxInputLength + maxOutputLength."""
    max_input_length: int | None = None
    """Longest prompt in tokens."""
    max_output_length: int | None = None
    """Most generated tokens."""
    max_concurrent_sequences: int
    """Full-length sequences one replica holds at once."""
    engine_key: str | None = None
    """Hash of everything that changes the engine."""
    openai_frontend: bool | None = None
    """Whether the pods run Triton's OpenAI frontend (else plain tritonserver)."""
    openai_frontend_reason: str | None = None
    """Why the frontend runs or not: the image's release, the tokenizer, spec.serving.openai."""
    warnings: list[str] = Field(default_factory=list)
    """Things worth knowing that do not stop serving."""


class EngineStatus(_Model):
    """The engine (or prepared checkpoint) the replicas serve."""

    key: str
    """Engine key: hash of everything that changes the engine."""
    ready: bool
    """The engine is built and cached."""
    job: str | None = None
    """Name of the build Job."""
    attempts: int | None = Field(default=None, ge=0)
    """Build attempts so far under this key."""
    serving_key: str | None = None
    """Engine key the serving pods run now (differs from key during a switch)."""


class ChatModelStatus(_Model):
    """Observed state, written by the operator once per reconcile."""

    phase: Literal[
        "Pending",
        "Planning",
        "BuildingEngine",
        "Deploying",
        "Blocked",
        "Ready",
        "Idle",
        "Degraded",
        "Failed",
    ] = "Pending"
    """Short summary for kubectl get."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Validated, Planned, EngineBuilding, EngineReady, EngineBuildFailed, Available, rolled up
    into Ready.
    """
    plan: PlanStatus | None = None
    """The planner's decision."""
    engine: EngineStatus | None = None
    """The engine in use or being built."""
    replicas: int | None = Field(default=None, ge=0)
    """Replicas of the serving Deployment."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """Replicas ready to serve."""
    gpus: int | None = Field(default=None, ge=0)
    """GPUs requested by all replicas."""
    selector: str | None = None
    """Label selector of the serving pods (for the scale subresource)."""
    endpoint: str | None = None
    """In-cluster URL of the Triton HTTP endpoint."""
    openai_endpoint: str | None = None
    """In-cluster URL of the OpenAI-compatible API (/v1), when the pods run Triton's OpenAI
    frontend.
    """


class ChatModel(_Model):
    """A chat model served by Triton."""

    api_version: Literal["serving.chatmodel.io/v1alpha1"] = "serving.chatmodel.io/v1alpha1"
    """serving.chatmodel.io/v1alpha1."""
    kind: Literal["ChatModel"] = "ChatModel"
    """ChatModel."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard object metadata."""
    spec: ChatModelSpec
    """Desired state."""
    status: ChatModelStatus | None = None
    """Observed state."""


def _loc_to_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif item in {"literal['auto']", "int", "str", "float", "bool"} or item.startswith(
            "literal["
        ):
            continue
        else:
            parts.append(str(item))
    return ".".join(parts)


_FIXES = {
    "extra_forbidden": "remove it (see `kubectl explain chatmodel.{parent}` for the fields)",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "use the documented format",
    "greater_than_equal": "raise it",
    "less_than_equal": "lower it",
    "greater_than": "raise it",
    "less_than": "lower it",
}


def _to_spec_errors(exc: ValidationError, prefix: str) -> SpecErrors:
    out: list[SpecError] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        etype = err["type"]
        msg = str(err.get("msg", ""))
        if etype == "value_error" and "::" in msg:
            for part in msg.removeprefix("Value error, ").split(" | "):
                field, text = part.split("::", 1)
                out.append(SpecError(field, text.split(";")[0], text))
            continue
        path = _loc_to_path(prefix, tuple(err["loc"]))
        if path in seen:  # a union reports every branch: keep the first message per field
            continue
        seen.add(path)
        parent = path.rsplit(".", 1)[0].removeprefix("spec").lstrip(".") or "spec"
        parent = "spec." + parent if parent != "spec" else parent
        fix = _FIXES.get(etype, "correct the value").format(parent=parent)
        if etype == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            fix = f"use one of {expected}"
        elif etype == "string_pattern_mismatch" and path.endswith("model.source"):
            fix = (
                "use hf://org/name[@revision], s3://bucket/path, gs://bucket/path, "
                "pvc://claim/path or file:///path"
            )
        problem = "unknown field" if etype == "extra_forbidden" else msg[0].lower() + msg[1:]
        out.append(SpecError(path, problem, fix))
    return SpecErrors(out)


def parse_spec(spec: Any) -> ChatModelSpec:
    """Validate a ChatModel spec dict; raise SpecErrors naming each field and its fix."""
    if not isinstance(spec, dict):
        raise SpecErrors([SpecError("spec", "must be a mapping", "write spec as a YAML mapping")])
    try:
        return ChatModelSpec.model_validate(spec)
    except ValidationError as exc:
        raise _to_spec_errors(exc, "spec") from None


def parse_chatmodel(obj: Any) -> ChatModel:
    """Validate a whole ChatModel object (apiVersion, kind, metadata, spec)."""
    if not isinstance(obj, dict):
        raise SpecErrors([SpecError("(document)", "is not a mapping", "write a ChatModel as YAML")])
    if obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        raise SpecErrors(
            [
                SpecError(
                    "apiVersion/kind",
                    f"got {obj.get('apiVersion')}/{obj.get('kind')}",
                    f"set apiVersion: {API_VERSION} and kind: {KIND}",
                )
            ]
        )
    spec = parse_spec(obj.get("spec"))
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not isinstance(name, str) or not re.match(DNS_LABEL_PATTERN, name) or len(name) > 52:
        raise SpecErrors(
            [
                SpecError(
                    "metadata.name",
                    f"{name!r} is not a DNS label of at most 52 characters",
                    "use lower-case letters, digits and '-' (children append suffixes)",
                )
            ]
        )
    return ChatModel(metadata=meta, spec=spec)
