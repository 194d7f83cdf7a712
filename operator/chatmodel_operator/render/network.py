"""The NetworkPolicies of one ChatModel (pure), when ``spec.serving.networkPolicy.enabled``.

Two policies, both owned by the ChatModel:
- ``<name>-serving`` selects the serving pods: the serving ports (HTTP, gRPC, OpenAI) only from
  the listed namespaces and pods, the metrics from the monitoring namespace, nothing else.
- ``<name>-build`` selects the build Job's pods of the planned engine: no ingress; egress to
  DNS and to HTTPS (443) in ``buildEgressCIDRs``, where the hub, S3 or GCS answer.

docs/security.md says what else a default-deny namespace needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.render.labels import (
    ENGINE_KEY_LABEL,
    labels,
    network_policy_name,
    selector_labels,
)

# The container ports clients use (named as in the Deployment, so the numbers follow the spec)
# and those Prometheus scrapes: tritonserver serves /metrics on `metrics`, Triton's OpenAI
# frontend on `openai` (render.objects.METRICS_PORTS).
SERVING_PORTS = ("http", "grpc", "openai")
SCRAPED_PORTS = ("metrics", "openai")
# The label every namespace carries with its own name (Kubernetes 1.22+).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _ports(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": name} for name in names]


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def render_network_policies(
    *,
    name: str,
    namespace: str,
    spec: ChatModelSpec,
    engine_key: str,
    owner: Mapping[str, Any],
    router_peers: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The serving and the build policy. ``router_peers`` are NetworkPolicyPeers that may reach
    the serving ports besides the listed clients: the hook for a router in front of the pods
    (spec.routing, when it exists, passes its pods here)."""
    np = spec.serving.network_policy
    clients: list[dict[str, Any]] = [_namespace(ns) for ns in np.from_namespaces]
    if np.from_pod_labels:
        clients.append({"podSelector": {"matchLabels": dict(sorted(np.from_pod_labels.items()))}})
    clients += [dict(p) for p in router_peers]
    ingress: list[dict[str, Any]] = []
    if clients:
        ingress.append({"from": clients, "ports": _ports(SERVING_PORTS)})
    if np.monitoring_namespace:
        ingress.append(
            {"from": [_namespace(np.monitoring_namespace)], "ports": _ports(SCRAPED_PORTS)}
        )
    serving = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(name, "serving"),
            "namespace": namespace,
            "labels": labels(name, "server"),
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
    build = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(name, "build"),
            "namespace": namespace,
            "labels": labels(name, "engine-build", engine_key),
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "engine-build",
                    ENGINE_KEY_LABEL: engine_key,
                }
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                # DNS wherever the pod's resolver is: kube-dns, or a node-local cache on a
                # link-local address that no namespace selector matches.
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {
                    "to": [{"ipBlock": {"cidr": cidr}} for cidr in np.build_egress_cidrs],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
            ],
        },
    }
    return serving, build
