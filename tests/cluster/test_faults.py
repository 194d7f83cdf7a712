"""Faults a real cluster has, on the real control plane: a build that fails and recovers,
kube-apiserver restarted during a reconcile and during a build, a user's `kubectl edit` of the
Deployment the operator owns, and a namespace deleted under a ChatModel. Nothing is lost and
nothing is duplicated: one Job per engine key, one Deployment, one Event per transition."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from admin import DEPLOYMENTS, JOBS, NAMESPACES, Admin, wait_until

from conftest import OPERATOR_USER, SMALL_SPEC, ControlPlane, Models, Operator

pytestmark = pytest.mark.cluster

SUS = {**SMALL_SPEC, "model": {"source": "hf://SUSTech/SUS-Chat-34B"}}


def jobs(admin: Admin, ns: str) -> list[str]:
    return sorted(admin.names(JOBS, ns))


def transitions(models: Models, name: str) -> Counter[str]:
    return Counter(e["reason"] for e in models.events(name) if e["type"] == "Normal")


def test_a_failed_build_is_retried_and_recovers(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    control_plane.cluster.set_builds(fail=[ns])
    try:
        models.create("sus", SUS)
        wait_until(
            lambda: models.condition("sus", "EngineBuildFailed").get("status") == "True",
            120,
            what="the first attempt to fail (the Job's own pod retries first)",
        )
        failed = models.condition("sus", "EngineBuildFailed")
        assert "attempt 1 of 3 failed" in failed["message"], failed
        assert models.phase("sus") != "Ready"
    finally:
        control_plane.cluster.set_builds()
    status = models.wait_phase("sus", "Ready", timeout=120)
    key = status["engine"]["key"]
    assert status["engine"]["attempts"] == 2
    assert models.condition("sus", "EngineBuildFailed")["status"] == "False"
    # The failed Job was replaced, not duplicated.
    assert jobs(admin, ns) == [f"chatmodel-build-{key}"]
    assert admin.get(JOBS, ns, f"chatmodel-build-{key}")["status"].get("succeeded") == 1


@pytest.mark.restarts_apiserver
def test_apiserver_restarted_during_a_build(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    cluster = control_plane.cluster
    cluster.set_builds(hold=[ns])
    try:
        models.create("sus", SUS)
        key = models.wait_phase("sus", "BuildingEngine")["engine"]["key"]
        wait_until(lambda: jobs(admin, ns) == [f"chatmodel-build-{key}"])
        cluster.restart_component("kube-apiserver", down_seconds=3)
    finally:
        cluster.set_builds()
    # The held pod is let go: kwok completes it once nudged.
    admin.kubectl("annotate", "pods", "-n", ns, "-l", f"job-name=chatmodel-build-{key}", "t/n=1")
    status = models.wait_phase("sus", "Ready", timeout=120)
    assert status["engine"] == {**status["engine"], "key": key, "ready": True, "attempts": 1}
    assert jobs(admin, ns) == [f"chatmodel-build-{key}"]
    assert admin.names(DEPLOYMENTS, ns) == {"sus-triton"}
    counts = transitions(models, "sus")
    assert counts["BuildingEngine"] == 1 and counts["Ready"] == 1, counts
    assert operator.thread is not None and operator.thread.is_alive() and operator.error is None


@pytest.mark.restarts_apiserver
def test_apiserver_restarted_during_a_reconcile(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    # Down while the first pass writes its children (the plan is immediate for the catalog).
    control_plane.cluster.restart_component("kube-apiserver", down_seconds=4)
    status = models.wait_phase("xverse", "Ready", timeout=120)
    assert status["replicas"] == status["readyReplicas"] == 2
    assert admin.names(DEPLOYMENTS, ns) == {"xverse-triton"}
    assert len(jobs(admin, ns)) == 1
    assert transitions(models, "xverse")["Ready"] == 1
    assert operator.error is None


def test_a_users_kubectl_edit_of_the_deployment(
    admin: Admin, ns: str, models: Models, operator: Operator, tmp_path: Path
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    # A real `kubectl edit` (its own field manager, an update with the resourceVersion it
    # read): the user scales the Deployment by hand and adds a label of their own.
    editor = tmp_path / "edit.py"
    editor.write_text(
        "import sys, yaml\n"
        "p = sys.argv[-1]\n"
        "d = yaml.safe_load(open(p))\n"
        "d['spec']['replicas'] = 5\n"
        "d['metadata'].setdefault('labels', {})['team'] = 'blue'\n"
        "yaml.safe_dump(d, open(p, 'w'))\n"
    )
    env = {**os.environ, "KUBE_EDITOR": f"{sys.executable} {editor}"}
    edited = admin.kubectl("edit", "deployment", "xverse-triton", "-n", ns, env=env)
    assert edited.returncode == 0, edited.stderr
    assert "deployment.apps/xverse-triton edited" in edited.stdout

    # The operator owns replicas (the ChatModel says 2) and takes them back; the user's label,
    # a field the operator never set, stays. Still one Deployment.
    def deployment() -> dict[str, Any]:
        return admin.get(DEPLOYMENTS, ns, "xverse-triton") or {}

    wait_until(
        lambda: deployment()["spec"]["replicas"] == 2,
        60,
        what=f"the operator to restore replicas (is {deployment()['spec']['replicas']})",
    )
    assert deployment()["metadata"]["labels"]["team"] == "blue"
    assert admin.names(DEPLOYMENTS, ns) == {"xverse-triton"}
    managers = {m["manager"] for m in deployment()["metadata"]["managedFields"]}
    assert "kubectl-edit" in managers
    models.wait_phase("xverse", "Ready")


def test_the_namespace_deleted_under_a_chatmodel(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    operator.audit.mark()
    admin.delete(NAMESPACES, None, ns)
    # The operator adds no finalizer: the namespace controller and the garbage collector
    # finish, and the operator neither blocks them nor recreates anything in it.
    wait_until(lambda: admin.get(NAMESPACES, None, ns) is None, 120, what=f"{ns} to be gone")
    during = operator.audit.calls(user=OPERATOR_USER)
    recreated = [c for c in during if c.verb == "create" and c.namespace == ns and c.code < 400]
    assert recreated == []
    operator.audit.mark()
    time.sleep(3)  # a window in which nothing should happen: no retry loop on the gone namespace
    after = [c for c in operator.audit.calls(user=OPERATOR_USER) if c.namespace == ns]
    # Only the peering poll goes on (at its period, a read that answers 404), no writes.
    assert [(c.verb, c.resource) for c in after if c.verb != "watch"] in (
        [],
        [("get", "kopfpeerings")] * len([c for c in after if c.verb == "get"]),
    )
    reads = [c for c in after if c.verb != "watch"]
    assert len(reads) <= 3 / 0.5 + 2  # the poll period is 0.5 s here (FAST): no retry storm
    assert operator.thread is not None and operator.thread.is_alive() and operator.error is None
