"""Names and labels of every child object, in one place."""

from __future__ import annotations

import hashlib

from chatmodel_operator.api.spec import GROUP

MANAGED_BY = "chatmodel-operator"
ENGINE_KEY_LABEL = f"{GROUP}/engine-key"
# What the serving container runs: triton-openai-frontend or tritonserver (render.objects).
FRONTEND_LABEL = f"{GROUP}/frontend"
CHATMODEL_LABEL = "chatmodel"  # short label the load signals group by (see signals.py)
FIELD_MANAGER = "chatmodel-operator"


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select one ChatModel's serving pods (stable across engine switches)."""
    return {
        "app.kubernetes.io/name": "chatmodel",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "server",
    }


def labels(name: str, component: str, engine_key: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "chatmodel",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "chatmodel-operator",
        CHATMODEL_LABEL: name,
    }
    if engine_key:
        out[ENGINE_KEY_LABEL] = engine_key
    return out


def deployment_name(name: str) -> str:
    return f"{name}-triton"


def service_name(name: str) -> str:
    return name


def configmap_name(name: str, engine_key: str) -> str:
    # One repository per engine key: pods of the old engine keep theirs during a switch.
    return f"{name}-repo-{engine_key[:10]}"


def network_policy_name(name: str, role: str) -> str:
    """``role``: serving or build (render.network)."""
    return f"{name}-{role}"


def job_name(engine_key: str) -> str:
    # Named by the key alone, so ChatModels that want the same engine share one build.
    return f"chatmodel-build-{engine_key}"


def cache_pvc_name(storage_class: str | None, access_mode: str) -> str:
    """One cache volume per namespace and storage class, shared by the ChatModels using it."""
    if storage_class is None and access_mode == "ReadWriteMany":
        return "chatmodel-cache"
    digest = hashlib.sha256(f"{storage_class}/{access_mode}".encode()).hexdigest()[:8]
    return f"chatmodel-cache-{digest}"


def source_dir_name(source: str) -> str:
    """Cache directory of a downloaded checkpoint: the source URI's hash."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]
