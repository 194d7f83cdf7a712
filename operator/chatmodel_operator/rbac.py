"""Every Kubernetes API use of the operator, declared once, and the ClusterRole built from it.

The chart renders ``cluster_role()``; the integration tests record every request the operator
makes and check it against ``API_USES`` both ways: no request outside the list, no use in the
list that no test exercised (see tests/cluster/test_rbac.py). Resources are spelled by the
``Kind`` constants the client uses for its request paths, so the rules cannot drift from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chatmodel_operator.adapters.kube import (
    CHATMODEL,
    CLUSTER_KOPF_PEERING,
    CONFIGMAP,
    CRD,
    DEPLOYMENT,
    EVENT,
    HPA,
    INFERENCE_POOL,
    JOB,
    KOPF_PEERING,
    NAMESPACE,
    NETWORK_POLICY,
    PDB,
    POD,
    PVC,
    SCALED_OBJECT,
    SERVICE,
    SERVICE_MONITOR,
    Kind,
)

ROLE_NAME = "chatmodel-operator"


@dataclass(frozen=True)
class ApiUse:
    kind: Kind
    verbs: tuple[str, ...]
    why: str
    subresource: str | None = None
    # The chart value under `rbac` that grants this use (auto/always/never) instead of always:
    # an optional API whose absence the operator reports in a condition.
    gate: str | None = None

    @property
    def resource(self) -> str:
        return f"{self.kind.plural}/{self.subresource}" if self.subresource else self.kind.plural


_WATCH = ("list", "watch")
# Server-side apply of an object that does not exist yet creates it, which the API server
# authorizes as both patch and create.
_APPLY = ("create", "patch")

API_USES: tuple[ApiUse, ...] = (
    ApiUse(
        CHATMODEL,
        (*_WATCH, "patch"),
        "watch ChatModels; kopf records the last handled spec in an annotation",
    ),
    ApiUse(CHATMODEL, ("patch",), "write status once per reconcile", subresource="status"),
    ApiUse(
        PVC,
        (*_WATCH, "create", "patch"),
        "the shared engine cache; owner references for deletePolicy Delete",
    ),
    ApiUse(
        JOB,
        (*_WATCH, "create", "delete"),
        "engine builds; a failed build is deleted before a retry",
    ),
    ApiUse(
        CONFIGMAP,
        (*_WATCH, *_APPLY, "delete"),
        "Triton model repository per engine key; old ones removed after a switch",
    ),
    ApiUse(DEPLOYMENT, (*_WATCH, *_APPLY), "Triton pods"),
    ApiUse(SERVICE, (*_WATCH, *_APPLY), "endpoint of the Triton pods"),
    ApiUse(PDB, (*_WATCH, *_APPLY), "disruption budget of the Triton pods"),
    ApiUse(
        HPA,
        (*_WATCH, *_APPLY, "delete"),
        "autoscaling on Triton load signals; deleted when autoscaling is turned off",
    ),
    ApiUse(SCALED_OBJECT, (*_WATCH, *_APPLY, "delete"), "KEDA autoscaling (optional CRD)"),
    ApiUse(
        INFERENCE_POOL,
        (*_WATCH, *_APPLY, "delete"),
        "routing.inferencePool: the pool of the serving pods, and its gateways' status "
        "(optional CRD)",
        gate="inferencePools",
    ),
    ApiUse(
        SERVICE_MONITOR,
        (*_WATCH, *_APPLY, "delete"),
        "Prometheus scraping of Triton (optional CRD)",
    ),
    ApiUse(
        NETWORK_POLICY,
        (*_WATCH, *_APPLY, "delete"),
        "serving.networkPolicy: who reaches the Triton pods, where the build Job connects",
    ),
    ApiUse(
        EVENT,
        ("create", "list"),
        "an Event for every phase transition and error; a stuck Job's FailedCreate is read",
    ),
    ApiUse(POD, _WATCH, "why our pods do not run: the scheduler's reason, shown in status"),
    ApiUse(NAMESPACE, _WATCH, "kopf follows namespaces to serve --namespace globs"),
    ApiUse(
        CRD,
        _WATCH,
        "kopf notices optional CRDs (ServiceMonitor, ScaledObject, InferencePool) installed later",
    ),
    ApiUse(
        CLUSTER_KOPF_PEERING,
        ("get", *_WATCH, "patch"),
        "leader election across replicas (cluster-wide)",
    ),
    ApiUse(
        KOPF_PEERING,
        ("get", *_WATCH, "patch"),
        "leader election across replicas (--namespace mode)",
    ),
)


def rules(uses: Iterable[ApiUse] = API_USES) -> list[dict[str, Any]]:
    """PolicyRules of the declared uses (by default every one, gated ones included: what the
    operator may need), one per API group, resources and verbs merged and sorted."""
    by_group: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    verbs_of: dict[tuple[str, str], set[str]] = {}
    for use in uses:
        verbs_of.setdefault((use.kind.group, use.resource), set()).update(use.verbs)
    for (group, resource), verbs in verbs_of.items():
        by_group.setdefault((group, tuple(sorted(verbs))), set()).add(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(by_group.items())
    ]


def cluster_role(name: str = ROLE_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "chatmodel-operator"}},
        "rules": rules(),
    }


def allows(group: str, resource: str, verb: str) -> bool:
    """Whether the declared uses grant ``verb`` on ``resource`` (plural[/subresource])."""
    return any(
        use.kind.group == group and use.resource == resource and verb in use.verbs
        for use in API_USES
    )
