"""Covers RBAC: every request the operator made anywhere in this tier is allowed by the one
declared list of API uses (rbac.API_USES, from which the chart's ClusterRole is built), and no
declared use went unexercised. Runs last in the tier (alphabetical), over all its requests."""

from __future__ import annotations

import pytest

from chatmodel_operator import rbac
from conftest import ALL_CALLS

pytestmark = pytest.mark.cluster

AGENTS = ("chatmodel-operator", "kopf/")


def _used() -> set[tuple[str, str, str]]:
    used: set[tuple[str, str, str]] = set()
    for c in ALL_CALLS:
        if not c.user_agent.startswith(AGENTS) or c.verb == "discovery":
            continue
        used.add((c.group or "", c.resource, c.verb))
        if c.verb == "patch" and c.created:  # server-side apply that created the object
            used.add((c.group or "", c.resource, "create"))
    return used


def test_every_request_is_allowed_by_the_declared_uses() -> None:
    if not ALL_CALLS:
        pytest.skip("needs the requests of the whole cluster tier: run tests/cluster")
    outside = sorted(u for u in _used() if not rbac.allows(*u))
    assert outside == []


def test_every_declared_use_was_exercised() -> None:
    if not ALL_CALLS:
        pytest.skip("needs the requests of the whole cluster tier: run tests/cluster")
    declared = {(u.kind.group, u.resource, verb) for u in rbac.API_USES for verb in u.verbs}
    unused = sorted(declared - _used())
    assert unused == [], "\n".join(map(str, unused))


def test_the_cluster_role_grants_exactly_the_declared_uses() -> None:
    role = rbac.cluster_role()
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {(u.kind.group, u.resource, v) for u in rbac.API_USES for v in u.verbs}
