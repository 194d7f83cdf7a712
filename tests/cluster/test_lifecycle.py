"""Covers a ChatModel's life on the real control plane with the real kopf operator and the real
controllers: create to Ready, the no-op resync, an engine change with the old pods serving
until the new engine is ready, shared engines, scaling, and deletion by the garbage collector."""

from __future__ import annotations

import time
from typing import Any

import pytest
from admin import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JOBS,
    PDBS,
    PODS,
    PVCS,
    SERVICES,
    Admin,
    Audit,
    wait_until,
)

from chatmodel_operator.render import ENGINE_KEY_LABEL
from conftest import OPERATOR_USER, SMALL_SPEC, ControlPlane, Models, Operator

pytestmark = pytest.mark.cluster

SERVING = (CONFIGMAPS, DEPLOYMENTS, SERVICES, PDBS)


def child_writes(audit: Audit) -> list[Any]:
    return [
        c
        for c in audit.calls(user=OPERATOR_USER)
        if c.is_write and c.resource not in ("events", "chatmodels")
    ]


def test_create_to_ready(admin: Admin, ns: str, models: Models, operator: Operator) -> None:
    models.create("xverse", SMALL_SPEC)
    st = models.wait_phase("xverse", "Ready")
    uid = models.get("xverse")["metadata"]["uid"]

    assert st["observedGeneration"] == 1
    assert st["replicas"] == st["readyReplicas"] == 2 and st["gpus"] == 2
    assert st["endpoint"] == f"http://xverse.{ns}.svc:8000"
    assert st["engine"]["ready"] is True and st["engine"]["key"] == st["plan"]["engineKey"]
    for type_ in ("Validated", "Planned", "EngineReady", "Available", "Ready"):
        assert models.condition("xverse", type_)["status"] == "True", type_

    # The real controllers did their part: the Job's pod completed, the Deployment's pods
    # were scheduled onto the GPU nodes the plan selects and went Ready.
    key = st["engine"]["key"]
    job = admin.get(JOBS, ns, f"chatmodel-build-{key}")
    assert job is not None and job["status"].get("succeeded") == 1
    pods = [
        p for p in admin.items(PODS, ns) if p["metadata"]["labels"].get(ENGINE_KEY_LABEL) == key
    ]
    serving = [p for p in pods if "job-name" not in p["metadata"]["labels"]]
    assert len(serving) == 2
    assert all(p["spec"]["nodeName"].startswith("gpu-a100-sxm4-80gb") for p in serving)

    # Serving children carry an ownerReference to the ChatModel; the shared ones do not.
    for res in SERVING:
        for name in admin.names(res, ns):
            if res == CONFIGMAPS and name == "kube-root-ca.crt":
                continue
            refs = admin.get(res, ns, name)["metadata"]["ownerReferences"]
            assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
                ("ChatModel", uid, True)
            ]
    assert "ownerReferences" not in job["metadata"]
    assert "ownerReferences" not in admin.get(PVCS, ns, "chatmodel-cache")["metadata"]

    # Every transition was told by an Event, in order.
    wait_until(lambda: any(e["reason"] == "Ready" for e in models.events("xverse")))
    time.sleep(1)
    events = models.events("xverse")
    assert [e["reason"] for e in events][-1] == "Ready", [
        (e["reason"], e["message"]) for e in events
    ]


@pytest.mark.operator_config(resync_seconds=1.0)
def test_resync_with_nothing_changed_writes_nothing(
    models: Models, operator: Operator, audit: Audit
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    time.sleep(2)  # let the last writes' watch events arrive
    audit.mark()
    time.sleep(4)  # several resync periods
    assert [c for c in audit.calls(user=OPERATOR_USER) if c.is_write] == []


def test_scaling_follows_the_spec_and_kubectl_scale(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    admin.kubectl("scale", "chatmodel", "xverse", "-n", ns, "--replicas=3")
    wait_until(
        lambda: models.status("xverse").get("readyReplicas") == 3, 90, what="3 ready replicas"
    )
    dep = admin.get(DEPLOYMENTS, ns, "xverse-triton")
    assert dep["spec"]["replicas"] == 3
    assert models.phase("xverse") == "Ready"


def test_engine_update_keeps_old_pods_serving_until_the_new_engine_is_ready(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    # SUS-Chat builds a TensorRT-LLM engine, keyed by what changes it (XVERSE runs on vLLM).
    sus = {**SMALL_SPEC, "model": {"source": "hf://SUSTech/SUS-Chat-34B"}}
    models.create("xverse", sus)
    old_key = models.wait_phase("xverse", "Ready")["engine"]["key"]

    control_plane.cluster.set_builds(hold=[ns])
    try:
        models.replace_spec("xverse", {**sus, "engine": {"maxBatchSize": 8}})
        wait_until(
            lambda: models.status("xverse").get("engine", {}).get("key") not in (None, old_key)
        )
        new_key = models.status("xverse")["engine"]["key"]
        wait_until(lambda: admin.get(JOBS, ns, f"chatmodel-build-{new_key}"))
        # While the new engine builds, the old pods keep serving the old engine untouched.
        time.sleep(2)
        dep = admin.get(DEPLOYMENTS, ns, "xverse-triton")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels[ENGINE_KEY_LABEL] == old_key
        assert dep["status"].get("availableReplicas") == 2
        assert models.condition("xverse", "Available")["status"] == "True"
    finally:
        control_plane.cluster.set_builds()
    # Let the held build pod go: kwok completes it once nudged.
    for pod in admin.items(PODS, ns, labelSelector=f"job-name=chatmodel-build-{new_key}"):
        admin.merge_patch(
            PODS, ns, pod["metadata"]["name"], {"metadata": {"annotations": {"test/nudge": "1"}}}
        )
    wait_until(
        lambda: (
            models.phase("xverse") == "Ready"
            and models.status("xverse")["engine"]["key"] == new_key
            and admin.get(DEPLOYMENTS, ns, "xverse-triton")["spec"]["template"]["metadata"][
                "labels"
            ][ENGINE_KEY_LABEL]
            == new_key
        ),
        120,
        what="the rollout to the new engine",
    )


def test_deletion_leaves_dependents_to_the_garbage_collector_and_keeps_the_cache(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    admin.kubectl("delete", "chatmodel", "xverse", "-n", ns, "--wait=true")
    wait_until(
        lambda: (
            not admin.names(DEPLOYMENTS, ns)
            and not admin.names(SERVICES, ns)
            and not admin.names(PDBS, ns)
        ),
        90,
        what="the garbage collector to remove the serving children",
    )
    assert admin.get(PVCS, ns, "chatmodel-cache") is not None  # Retain: the cache stays
