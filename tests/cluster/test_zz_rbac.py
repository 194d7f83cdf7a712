"""The operator's RBAC, from the API server's audit log of the whole cluster tier (this module
runs last): every request the operator made under the chart's ServiceAccount was authorized,
each is a declared use (rbac.API_USES), every declared use was exercised by some test (or is
listed below with the reason no test here can), and the ClusterRole the chart installed is the
declared list."""

from __future__ import annotations

import pytest
from admin import Admin

from chatmodel_operator import rbac
from conftest import ALL_CALLS, RELEASE, RESTART_CALLS, SYSTEM_NS

pytestmark = pytest.mark.cluster

CLUSTER_ROLES = ("rbac.authorization.k8s.io", "v1", "clusterroles")

# Declared uses no test of this tier exercises, and why.
_KEDA = "KEDA's CRDs are not installed in this tier (the KEDA tier runs ScaledObjects)"
_CLUSTER_PEERING = (
    "leader election of a cluster-wide install with replicas > 1; the operators here watch "
    "their test's namespace (namespaced peering is exercised)"
)
_GATED = (
    "gated by the chart's rbac.inferencePools: auto leaves it out on a cluster without the "
    "InferencePool API, as here (the KEDA tier installs with always)"
)
NOT_EXERCISED: dict[tuple[str, str, str], str] = {
    **{
        (use.kind.group, use.resource, verb): _GATED
        for use in rbac.API_USES
        if use.gate
        for verb in use.verbs
    },
    ("serving.chatmodel.io", "chatmodels", "patch"): (
        "kopf writes its retry annotation only when a handler raises; the reconcile turns "
        "every error into a condition instead"
    ),
    **{
        ("keda.sh", "scaledobjects", v): _KEDA
        for v in ("list", "watch", "create", "patch", "delete")
    },
    **{
        ("kopf.dev", "clusterkopfpeerings", v): _CLUSTER_PEERING
        for v in ("get", "list", "watch", "patch")
    },
}


def uses(calls: list) -> set[tuple[str, str, str]]:
    out = set()
    for c in calls:
        resource = f"{c.resource}/{c.subresource}" if c.subresource else c.resource
        if resource:
            out.add((c.group, resource, c.verb))
            if c.verb == "patch" and c.code == 201:
                # A server-side apply that created the object: the audit says patch, the
                # authorizer also checked create.
                out.add((c.group, resource, "create"))
    return out


def test_the_operator_was_never_refused_by_rbac() -> None:
    assert ALL_CALLS, "no operator request was recorded: the cluster tier did not run"
    refused = [c for c in ALL_CALLS if c.decision == "forbid"]
    assert refused == [], refused[:10]


def test_every_request_is_a_declared_use() -> None:
    undeclared = sorted(u for u in uses(ALL_CALLS + RESTART_CALLS) if not rbac.allows(*u))
    assert undeclared == []


def test_every_declared_use_was_exercised(request: pytest.FixtureRequest) -> None:
    here = [i for i in request.session.items if "tests/cluster/" in str(i.fspath)]
    if len(here) < 30 or request.config.option.keyword or request.config.option.markexpr:
        pytest.skip("needs the whole cluster tier (run without -k/-m)")
    every = ALL_CALLS + RESTART_CALLS
    declared = {(use.kind.group, use.resource, verb) for use in rbac.API_USES for verb in use.verbs}
    missing = sorted(declared - uses(every) - set(NOT_EXERCISED))
    assert missing == [], f"declared but never used by any test: {missing}"
    now_used = sorted(set(NOT_EXERCISED) & uses(every))
    assert now_used == [], f"exercised now: remove from NOT_EXERCISED: {now_used}"


def test_the_chart_installed_the_declared_cluster_role(admin: Admin) -> None:
    role = admin.get(CLUSTER_ROLES, None, RELEASE)
    assert role is not None, f"ClusterRole {RELEASE} (release in {SYSTEM_NS})"
    # The chart's default (rbac.inferencePools: auto) on a cluster without that API.
    assert role["rules"] == rbac.rules(u for u in rbac.API_USES if not u.gate)
