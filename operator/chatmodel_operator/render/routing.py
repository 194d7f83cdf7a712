"""Routing through a Gateway API Inference Extension gateway (pure): the InferencePool of one
ChatModel, the engine-type label the llm-d router reads from each pod, and what the pool's
status says, summarised for the ChatModel's ``InferencePoolReady`` condition.

The pool's API is ``inference.networking.k8s.io/v1`` (GA since GIE v1.0; ``endpointPickerRef``
optional since v1.6). The router scrapes each pod at ``<targetPort>/metrics`` and reads the
metric names that ``llm-d.ai/engine-type`` maps: for ``triton-tensorrt-llm`` the gauges
``nv_trt_llm_request_metrics{request_type=waiting|scheduled}`` and
``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction|tokens_per|max}``, which the
C++ backend exports itself and our llmapi and Python engines export under the same names
(model_repository/python_engine, model_repository/llmapi_engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.render.labels import labels, selector_labels

INFERENCE_POOL_API_VERSION: Final = "inference.networking.k8s.io/v1"
ENGINE_TYPE_LABEL: Final = "llm-d.ai/engine-type"
# The router's names (llm-d-router's metric mappings) for what a pod runs, by planned route.
# The Python engine is not TensorRT-LLM, but it exports TensorRT-LLM's gauges with the same
# meaning, and the label names the metrics the router reads, not the engine.
ENGINE_TYPES: Final[dict[str, str]] = {
    "tensorrt-llm/engine": "triton-tensorrt-llm",
    "tensorrt-llm/llmapi": "triton-tensorrt-llm",
    "python": "triton-tensorrt-llm",
    # Triton's vLLM backend exports vLLM's own vllm:* names, the router's default mapping.
    "vllm": "vllm",
}
# The pool's parent conditions the ChatModel reports.
POOL_CONDITIONS: Final = ("Accepted", "ResolvedRefs")


def engine_type(route: str) -> str:
    """The ``llm-d.ai/engine-type`` value of pods serving ``route`` (Plan.route)."""
    return ENGINE_TYPES[route]


def inference_pool_name(name: str) -> str:
    return name


def render_inference_pool(
    *, name: str, namespace: str, spec: ChatModelSpec, owner: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The InferencePool that puts exactly this ChatModel's serving pods behind a gateway: the
    Deployment's own selector (build pods and other ChatModels' pods never match), their OpenAI
    port over HTTP/1.1, and the user's endpoint picker when given."""
    pool = spec.routing.inference_pool
    if pool is None:
        raise ValueError("spec.routing.inferencePool is not set")
    out_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "targetPorts": [{"number": spec.serving.openai_port}],
        "appProtocol": "http",
    }
    ref = pool.endpoint_picker_ref
    if ref is not None:
        picker: dict[str, Any] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
        if ref.port is not None:
            picker["port"] = {"number": ref.port.number}
        picker["failureMode"] = ref.failure_mode
        out_spec["endpointPickerRef"] = picker
    meta: dict[str, Any] = {
        "name": inference_pool_name(name),
        "namespace": namespace,
        "labels": labels(name, "server"),
    }
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": INFERENCE_POOL_API_VERSION,
        "kind": "InferencePool",
        "metadata": meta,
        "spec": out_spec,
    }


# --- the pool's status, for the ChatModel --------------------------------------------------


@dataclass(frozen=True)
class ParentState:
    """One gateway's view of the pool: its name and the conditions it set."""

    parent: str  # namespace/name, or the name alone
    conditions: tuple[tuple[str, str, str, str], ...]  # (type, status, reason, message)


@dataclass(frozen=True)
class PoolReadiness:
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


def parent_states(status: Mapping[str, Any]) -> tuple[ParentState, ...]:
    """``status.parents`` of an InferencePool, reduced to what the ChatModel reports."""
    out: list[ParentState] = []
    for entry in status.get("parents") or ():
        if not isinstance(entry, Mapping):
            continue
        ref = entry.get("parentRef") or {}
        parent = str(ref.get("name") or "?")
        if ref.get("namespace"):
            parent = f"{ref['namespace']}/{parent}"
        conds = tuple(
            (
                str(c.get("type") or ""),
                str(c.get("status") or "Unknown"),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
            for c in entry.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") in POOL_CONDITIONS
        )
        out.append(ParentState(parent, conds))
    return tuple(out)


def pool_readiness(pool: str, parents: Iterable[ParentState]) -> PoolReadiness:
    """``InferencePoolReady``: True when every gateway that took up the pool has Accepted it
    and resolved its references; False, with the gateway's own reason and message, when one
    refused either; Unknown while no gateway has reported on it yet."""
    parents = tuple(parents)
    if not parents:
        return PoolReadiness(
            "Unknown",
            "NoGateway",
            f"no gateway reports on InferencePool {pool} yet; fix: reference it from an "
            "HTTPRoute backendRef (group inference.networking.k8s.io, kind InferencePool) "
            "attached to a Gateway that supports InferencePool backends",
        )
    pending: list[str] = []
    for p in parents:
        by_type = {c[0]: c for c in p.conditions}
        for type_ in POOL_CONDITIONS:
            cond = by_type.get(type_)
            if cond is None or cond[1] == "Unknown":
                pending.append(f"{p.parent}: {type_} not reported")
            elif cond[1] == "False":
                reason = cond[2] or f"Not{type_}"
                detail = f": {cond[3]}" if cond[3] else ""
                fix = (
                    "check that the Gateway's class supports InferencePool backends and that "
                    "the HTTPRoute referring to the pool is accepted"
                    if type_ == "Accepted"
                    else "check spec.routing.inferencePool.endpointPickerRef: the picker "
                    "must exist in this namespace, with that kind and port"
                )
                return PoolReadiness(
                    "False",
                    reason,
                    f"gateway {p.parent} set {type_} False on InferencePool {pool} "
                    f"({reason}{detail}); fix: {fix}",
                )
    if pending:
        return PoolReadiness("Unknown", "Pending", f"InferencePool {pool}: " + "; ".join(pending))
    names = ", ".join(p.parent for p in parents)
    return PoolReadiness(
        "True", "Accepted", f"InferencePool {pool} accepted, references resolved, by {names}"
    )
