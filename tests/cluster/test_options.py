"""Optional children follow the spec on the real API server: NetworkPolicies (created,
changed, removed, and what the API server stores of them), the HPA when autoscaling is turned
off, the ServiceMonitor when it is no longer asked for, and the cache claim's owner reference
for cache.deletePolicy Delete, collected with the ChatModel by the garbage collector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from admin import HPAS, PVCS, Admin, Resource, wait_until

from conftest import SMALL_SPEC, ControlPlane, Models, Operator

pytestmark = pytest.mark.cluster

NETWORK_POLICIES: Resource = ("networking.k8s.io", "v1", "networkpolicies")
SERVICE_MONITORS: Resource = ("monitoring.coreos.com", "v1", "servicemonitors")
CRD_DIR = Path(__file__).parent / "crds"


def test_network_policies_follow_the_spec(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    policy = {"enabled": True, "fromNamespaces": ["gateway"], "buildEgressCIDRs": ["10.0.0.0/8"]}
    spec: dict[str, Any] = {
        **SMALL_SPEC,
        "serving": {**SMALL_SPEC["serving"], "networkPolicy": policy},
    }
    models.create("xverse", spec)
    models.wait_phase("xverse", "Ready")
    names = admin.names(NETWORK_POLICIES, ns)
    assert len(names) == 2, names
    stored = {n: admin.get(NETWORK_POLICIES, ns, n) for n in names}
    serving = next(p for n, p in stored.items() if n.endswith("serving"))
    build = next(p for n, p in stored.items() if n.endswith("build"))
    peers = serving["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}
    } in peers
    assert build["spec"]["policyTypes"] == ["Ingress", "Egress"]  # nothing may reach it
    assert any(
        {"ipBlock": {"cidr": "10.0.0.0/8"}} in rule.get("to", [])
        for rule in build["spec"]["egress"]
    ), build["spec"]["egress"]

    # Another namespace may reach the pods: the serving policy is changed in place.
    policy["fromNamespaces"] = ["gateway", "apps"]
    models.replace_spec("xverse", spec)
    wait_until(
        lambda: (
            len(
                admin.get(NETWORK_POLICIES, ns, serving["metadata"]["name"])["spec"]["ingress"][0][
                    "from"
                ]
            )
            == len(peers) + 1
        ),
        what="the serving NetworkPolicy to let the second namespace in",
    )
    # Turned off: both go.
    spec["serving"] = dict(SMALL_SPEC["serving"])
    models.replace_spec("xverse", spec)
    wait_until(lambda: not admin.names(NETWORK_POLICIES, ns), what="the NetworkPolicies to go")
    models.wait_phase("xverse", "Ready")


def test_autoscaler_and_service_monitor_go_when_no_longer_asked_for(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    control_plane.cluster.kubectl("apply", "-f", str(CRD_DIR / "servicemonitor.yaml"))
    control_plane.cluster.wait_established("servicemonitors.monitoring.coreos.com")
    spec: dict[str, Any] = {
        **SMALL_SPEC,
        "serving": {"serviceMonitor": True},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
    }
    models.create("xverse", spec)
    wait_until(
        lambda: admin.names(HPAS, ns) == {"xverse"} and admin.names(SERVICE_MONITORS, ns),
        90,
        what="the HPA and the ServiceMonitor",
    )
    models.replace_spec("xverse", {**SMALL_SPEC, "serving": {"replicas": 1}})
    wait_until(
        lambda: not admin.names(HPAS, ns) and not admin.names(SERVICE_MONITORS, ns),
        60,
        what="the HPA and the ServiceMonitor to be deleted",
    )
    models.wait_phase("xverse", "Ready")


def test_a_cache_with_delete_policy_delete_goes_with_its_chatmodel(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    uid = models.get("xverse")["metadata"]["uid"]
    assert "ownerReferences" not in admin.get(PVCS, ns, "chatmodel-cache")["metadata"]
    # Switched to Delete afterwards: the existing claim gets the ChatModel as its owner.
    models.replace_spec("xverse", {**SMALL_SPEC, "cache": {"deletePolicy": "Delete"}})
    wait_until(
        lambda: (
            uid
            in [
                r["uid"]
                for r in admin.get(PVCS, ns, "chatmodel-cache")["metadata"].get(
                    "ownerReferences", []
                )
            ]
        ),
        60,
        what="the cache claim's owner reference",
    )
    admin.kubectl("delete", "chatmodel", "xverse", "-n", ns, "--wait=true")
    wait_until(
        lambda: (
            (admin.get(PVCS, ns, "chatmodel-cache") or {})
            .get("metadata", {})
            .get("deletionTimestamp")
            or admin.get(PVCS, ns, "chatmodel-cache") is None
        ),
        90,
        what="the garbage collector to delete the cache claim",
    )
