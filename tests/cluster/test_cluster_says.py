"""Covers what a real cluster says that an emulator never did, each shown on the ChatModel within
a minute with the cluster's own message and one Warning Event: optional APIs absent at start and
installed later, an unbound cache claim, pods the scheduler cannot place, pods admission forbids
(Pod Security `restricted`), an autoscaler that must wait for its Deployment, and invalid specs
refused by the API server itself, each field once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from admin import CRDS, DEPLOYMENTS, HPAS, JOBS, NAMESPACES, PODS, Admin, iter_events, wait_until

from chatmodel_operator.api.spec import PLURAL
from conftest import (
    SMALL_SPEC,
    ControlPlane,
    Models,
    Operator,
    chatmodel,
    dump,
)

pytestmark = pytest.mark.cluster

CRD_DIR = Path(__file__).parent / "crds"
MINUTE = 60.0


def warnings(models: Models, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in models.events(name) if e["reason"] == reason and e["type"] == "Warning"]


def blocked(models: Models, name: str, condition: str, reason: str) -> dict[str, Any]:
    """Wait for the phase and condition the cluster's refusal leads to; return the condition."""
    try:
        wait_until(
            lambda: models.condition(name, condition).get("reason") == reason,
            MINUTE,
            what=f"{condition} reason {reason}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {dump(models.status(name))}") from None
    cond = models.condition(name, condition)
    assert cond["status"] == "False"
    ready = models.condition(name, "Ready")
    assert ready["reason"] == reason and ready["message"] == cond["message"]
    assert models.phase(name) == "Blocked"
    wait_until(lambda: warnings(models, name, reason), 30, what=f"a Warning Event {reason}")
    (event,) = warnings(models, name, reason)
    assert event["message"] == cond["message"]
    return cond


def test_an_unbound_cache_claim_is_named_with_the_schedulers_reason(
    models: Models, operator: Operator
) -> None:
    spec = {**SMALL_SPEC, "cache": {"storageClassName": "no-such-class"}}
    models.create("xverse", spec)
    cond = blocked(models, "xverse", "EngineReady", "CacheUnbound")
    msg = cond["message"]
    assert "is Pending" in msg and "unbound immediate PersistentVolumeClaims" in msg, msg
    assert "fix: set spec.cache.storageClassName" in msg


def test_a_gpu_the_cluster_lacks_leaves_the_build_unschedulable_with_the_reason(
    models: Models, operator: Operator
) -> None:
    # An H100 node pool the cluster does not have: the scheduler says why for every node.
    # SUS-Chat builds a TensorRT-LLM engine, on the GPU it will serve on (XVERSE's vLLM
    # build only downloads, on any node).
    spec = {
        **SMALL_SPEC,
        "model": {"source": "hf://SUSTech/SUS-Chat-34B"},
        "resources": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
    }
    models.create("xverse", spec)
    cond = blocked(models, "xverse", "EngineReady", "BuildPodsUnschedulable")
    assert "0/" in cond["message"] and "nodes are available" in cond["message"]
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in cond["message"]


def test_serving_pods_the_scheduler_cannot_place_show_its_reason(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    """The engine builds, then the GPU nodes are cordoned: the pods cannot be placed."""
    control_plane.cluster.set_builds(hold=[ns])
    nodes = ["gpu-l4-0"]
    spec = {**SMALL_SPEC, "resources": {"gpu": {"product": "NVIDIA-L4"}}}
    try:
        models.create("xverse", spec)
        wait_until(lambda: admin.items(PODS, ns, labelSelector="job-name"), MINUTE)
        for node in nodes:
            admin.kubectl("cordon", node)
        control_plane.cluster.set_builds()
        for pod in admin.items(PODS, ns, labelSelector="job-name"):
            admin.merge_patch(
                PODS, ns, pod["metadata"]["name"], {"metadata": {"annotations": {"nudge": "1"}}}
            )
        cond = blocked(models, "xverse", "Available", "PodsUnschedulable")
        assert "node(s) were unschedulable" in cond["message"], cond["message"]
    finally:
        control_plane.cluster.set_builds()
        for node in nodes:
            admin.kubectl("uncordon", node)
    # The cluster can place them again: it moves on by itself.
    models.wait_phase("xverse", "Ready", 90)


@pytest.mark.namespace_labels(**{"pod-security.kubernetes.io/enforce": "restricted"})
def test_hardened_pods_are_admitted_where_restricted_is_enforced(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    assert len(admin.items(PODS, ns)) >= 2


@pytest.mark.namespace_labels(**{"pod-security.kubernetes.io/enforce": "restricted"})
def test_an_opt_out_refused_by_admission_is_reported_for_the_build(
    models: Models, operator: Operator
) -> None:
    spec = {
        **SMALL_SPEC,
        "serving": {
            **SMALL_SPEC["serving"],
            "securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"},
        },
    }
    models.create("xverse", spec)
    cond = blocked(models, "xverse", "EngineReady", "BuildPodsForbidden")
    assert 'violates PodSecurity "restricted:latest"' in cond["message"], cond["message"]
    assert "runAsNonRoot" in cond["message"] or "runAsUser" in cond["message"]


def test_an_opt_out_refused_by_admission_is_reported_for_the_serving_pods(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    """Serving, then the namespace enforces restricted and the spec opts out: the old pods
    keep serving, the new ones are forbidden, and the ChatModel says so."""
    models.create("xverse", SMALL_SPEC)
    models.wait_phase("xverse", "Ready")
    admin.merge_patch(
        NAMESPACES,
        None,
        ns,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    spec = {
        **SMALL_SPEC,
        "serving": {
            **SMALL_SPEC["serving"],
            "securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"},
        },
    }
    models.replace_spec("xverse", spec)
    wait_until(
        lambda: models.condition("xverse", "Ready").get("reason") == "PodsForbidden",
        MINUTE,
        what="Ready reason PodsForbidden",
    )
    assert models.phase("xverse") == "Degraded"  # the old pods still serve
    assert models.condition("xverse", "Available")["status"] == "True"
    ready = models.condition("xverse", "Ready")
    assert "violates PodSecurity" in ready["message"], ready["message"]
    wait_until(lambda: warnings(models, "xverse", "PodsForbidden"), 30)


def test_the_hpa_waits_for_its_deployment(
    control_plane: ControlPlane, admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    control_plane.cluster.set_builds(hold=[ns])
    spec = {**SMALL_SPEC, "autoscaling": {"enabled": True, "engine": "hpa"}}
    try:
        models.create("xverse", spec)
        models.wait_phase("xverse", "BuildingEngine")
        wait_until(lambda: admin.items(JOBS, ns), MINUTE)
        assert admin.items(HPAS, ns) == []
    finally:
        control_plane.cluster.set_builds()
    for pod in admin.items(PODS, ns, labelSelector="job-name"):
        admin.merge_patch(
            PODS, ns, pod["metadata"]["name"], {"metadata": {"annotations": {"nudge": "1"}}}
        )
    wait_until(lambda: admin.items(HPAS, ns), MINUTE, what="the HPA")
    (hpa,) = admin.items(HPAS, ns)
    assert admin.get(DEPLOYMENTS, ns, hpa["spec"]["scaleTargetRef"]["name"]) is not None
    hpa_events = list(iter_events(admin, ns, hpa["metadata"]["name"], "HorizontalPodAutoscaler"))
    assert not [e for e in hpa_events if e["reason"] == "FailedGetScale"]


def test_an_optional_api_installed_later_is_picked_up(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    """The operator started on a cluster without the Prometheus operator; its CRD arrives."""
    spec = {**SMALL_SPEC, "serving": {**SMALL_SPEC["serving"], "serviceMonitor": True}}
    models.create("xverse", spec)
    models.wait_phase("xverse", "Ready")
    wait_until(lambda: warnings(models, "xverse", "MissingCRD"), 30, what="MissingCRD")
    crd = yaml.safe_load((CRD_DIR / "servicemonitor.yaml").read_text())
    admin.create(CRDS, None, crd)
    try:
        monitors = ("monitoring.coreos.com", "v1", "servicemonitors")
        wait_until(lambda: admin.items(monitors, ns), MINUTE, what="the ServiceMonitor")
    finally:
        admin.delete(CRDS, None, crd["metadata"]["name"])


INVALID = [
    pytest.param({"serving": {"replicas": -3}}, ["spec.serving.replicas"], id="negative-replicas"),
    pytest.param(
        {"serving": {"replicaz": 2}}, ['unknown field "spec.serving.replicaz"'], id="typo"
    ),
    pytest.param(
        {"engine": {"backend": "tensorrt"}}, ["spec.engine.backend: Unsupported value"], id="enum"
    ),
    pytest.param(
        {"serving": {"httpPort": 9000}},
        ["httpPort, grpcPort, metricsPort and openaiPort must all differ"],
        id="cel",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True, "minReplicas": 0}, "routing": {"inferencePool": {}}},
        ["spec.autoscaling.minReplicas", "set engine to keda"],
        id="zero-with-hpa",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0}},
        ["spec.autoscaling.minReplicas", "add routing.inferencePool"],
        id="zero-without-router",
    ),
    pytest.param(
        {"routing": {"inferencePool": {"endpointPickerRef": {"name": "epp"}}}},
        ["spec.routing.inferencePool.endpointPickerRef.port", "set port.number"],
        id="picker-without-port",
    ),
]


@pytest.mark.parametrize(("change", "messages"), INVALID)
def test_the_api_server_refuses_what_the_crd_catches_each_field_once(
    admin: Admin, ns: str, change: dict[str, Any], messages: list[str]
) -> None:
    spec = {**SMALL_SPEC, **{k: {**SMALL_SPEC.get(k, {}), **v} for k, v in change.items()}}
    proc = admin.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(chatmodel("bad", spec, ns)), check=False
    )
    assert proc.returncode != 0
    for m in messages:
        assert m in proc.stderr, proc.stderr
    # One line per problem: the same field is never reported twice.
    fields = [line.split(":")[0] for line in proc.stderr.splitlines() if line.startswith("* ")]
    assert len(fields) == len(set(f.lstrip("* .") for f in fields)), proc.stderr
    assert admin.get(("serving.chatmodel.io", "v1alpha1", PLURAL), ns, "bad") is None
