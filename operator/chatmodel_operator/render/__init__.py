"""Renderers (pure): every object the operator creates for one ChatModel, as dicts.

``render_children`` is the whole desired state for one pass; the operator diffs it against
what exists. The model repository (``triton.build_repository``) is passed in, not built here,
so this layer knows Kubernetes and nothing about Triton's configuration language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.plan import Plan
from chatmodel_operator.render.labels import (
    CHATMODEL_LABEL,
    ENGINE_KEY_LABEL,
    FIELD_MANAGER,
    FRONTEND_LABEL,
    cache_pvc_name,
    configmap_name,
    deployment_name,
    job_name,
    labels,
    network_policy_name,
    selector_labels,
    service_name,
)
from chatmodel_operator.render.network import render_network_policies
from chatmodel_operator.render.objects import (
    FRONTEND_REASON_ANNOTATION,
    METRICS_PORTS,
    TRITON_OPENAI_FRONTEND,
    TRITONSERVER,
    ServingProcess,
    owner_reference,
    render_build_job,
    render_cache_pvc,
    render_configmap,
    render_deployment,
    render_hpa,
    render_pdb,
    render_scaled_object,
    render_service,
    render_service_monitor,
    repository_hash,
    serving_process,
    tritonserver_args,
)
from chatmodel_operator.render.paths import cache_paths
from chatmodel_operator.render.routing import (
    ENGINE_TYPE_LABEL,
    inference_pool_name,
    render_inference_pool,
)

__all__ = [
    "CHATMODEL_LABEL",
    "ENGINE_KEY_LABEL",
    "ENGINE_TYPE_LABEL",
    "FIELD_MANAGER",
    "FRONTEND_LABEL",
    "FRONTEND_REASON_ANNOTATION",
    "METRICS_PORTS",
    "TRITONSERVER",
    "TRITON_OPENAI_FRONTEND",
    "Children",
    "ServingProcess",
    "cache_paths",
    "cache_pvc_name",
    "configmap_name",
    "deployment_name",
    "endpoint",
    "inference_pool_name",
    "job_name",
    "labels",
    "network_policy_name",
    "openai_endpoint",
    "owner_reference",
    "render_build_job",
    "render_cache_pvc",
    "render_children",
    "render_configmap",
    "render_deployment",
    "render_hpa",
    "render_inference_pool",
    "render_network_policies",
    "render_pdb",
    "render_scaled_object",
    "render_service",
    "render_service_monitor",
    "selector_labels",
    "service_name",
    "serving_process",
    "tritonserver_args",
]


@dataclass(frozen=True)
class Children:
    """The desired children of one ChatModel, by role."""

    cache_pvc: dict[str, Any]
    build_job: dict[str, Any]
    serving: tuple[
        dict[str, Any], ...
    ]  # ConfigMap, Deployment, Service, PDB, InferencePool, HPA/ScaledObject, ServiceMonitor,
    # NetworkPolicies

    def all(self) -> list[dict[str, Any]]:
        return [self.cache_pvc, self.build_job, *self.serving]


def endpoint(*, name: str, namespace: str, spec: ChatModelSpec) -> str:
    return f"http://{service_name(name)}.{namespace}.svc:{spec.serving.http_port}"


def openai_endpoint(*, name: str, namespace: str, spec: ChatModelSpec, plan: Plan) -> str | None:
    """status.openaiEndpoint: the OpenAI-compatible API of pods that serve ``plan`` (the
    serving plan), None where they run plain tritonserver."""
    if not plan.openai_frontend:
        return None
    return f"http://{service_name(name)}.{namespace}.svc:{spec.serving.openai_port}/v1"


def render_children(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: ChatModelSpec,
    plan: Plan,
    repository: Mapping[PurePosixPath, str],
    serving_key: str | None = None,
    serving_plan: Plan | None = None,
    serving_repository: Mapping[PurePosixPath, str] | None = None,
) -> Children:
    """Everything for one ChatModel.

    ``serving_key``/``serving_plan``/``serving_repository`` describe the engine the pods run now;
    while a new engine (``plan.engine_key``) builds they are the old one's, so the Deployment
    keeps serving it. By default the pods serve the planned engine.
    """
    owner = owner_reference(name=name, uid=uid)
    key = serving_key or plan.engine_key
    splan = serving_plan or plan
    srepo = serving_repository if serving_repository is not None else repository
    a = spec.autoscaling
    digest = repository_hash(srepo)  # ~120 KiB of text: hash it once for both objects
    serving: list[dict[str, Any]] = [
        render_configmap(
            name=name,
            namespace=namespace,
            engine_key=key,
            repository=srepo,
            owner=owner,
            digest=digest,
        ),
        render_deployment(
            name=name,
            namespace=namespace,
            spec=spec,
            plan=splan,
            engine_key=key,
            repository=srepo,
            owner=owner,
            replicas=None if a.enabled else spec.serving.replicas,
            digest=digest,
        ),
        render_service(name=name, namespace=namespace, spec=spec, owner=owner),
        render_pdb(name=name, namespace=namespace, owner=owner),
    ]
    if spec.routing.inference_pool is not None:
        serving.append(
            render_inference_pool(name=name, namespace=namespace, spec=spec, owner=owner)
        )
    if a.enabled:
        render = render_scaled_object if a.engine == "keda" else render_hpa
        serving.append(render(name=name, namespace=namespace, spec=spec, owner=owner))
    if spec.serving.service_monitor:
        serving.append(render_service_monitor(name=name, namespace=namespace, owner=owner))
    if spec.serving.network_policy.enabled:
        # The build policy follows the planned key: that is the Job that may be running.
        serving += render_network_policies(
            name=name, namespace=namespace, spec=spec, engine_key=plan.engine_key, owner=owner
        )
    return Children(
        cache_pvc=render_cache_pvc(namespace=namespace, spec=spec, chatmodel=name, owner=owner),
        build_job=render_build_job(
            namespace=namespace,
            spec=spec,
            plan=plan,
            chatmodel=name,
            prequantized=plan.prequantized,
        ),
        serving=tuple(serving),
    )
