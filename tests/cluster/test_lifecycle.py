"""Covers a ChatModel's life against the emulated cluster with the real kopf operator: create to
Ready, the no-op resync, serving-only and engine updates, shared engines, and deletion."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from emulator import ApiServer, Controllers

from chatmodel_operator import metrics
from chatmodel_operator.render import ENGINE_KEY_LABEL
from conftest import (
    CM,
    NS,
    SMALL_SPEC,
    Operator,
    chatmodel,
    condition,
    events_for,
    phase_of,
    phase_steps,
    status_of,
    validate_writes,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]

CHILDREN = {
    "configmaps": ("", "v1"),
    "deployments": ("apps", "v1"),
    "services": ("", "v1"),
    "poddisruptionbudgets": ("policy", "v1"),
}


def get(
    api: ApiServer, plural: str, name: str, group_version: tuple[str, str] | None = None
) -> dict[str, Any] | None:
    group, version = (
        group_version
        or {
            **CHILDREN,
            "jobs": ("batch", "v1"),
            "persistentvolumeclaims": ("", "v1"),
            "horizontalpodautoscalers": ("autoscaling", "v2"),
            "servicemonitors": ("monitoring.coreos.com", "v1"),
            "networkpolicies": ("networking.k8s.io", "v1"),
        }[plural]
    )
    return api.get(group, version, plural, NS, name)


def names(api: ApiServer, plural: str) -> set[str]:
    group, version = {
        **CHILDREN,
        "jobs": ("batch", "v1"),
        "horizontalpodautoscalers": ("autoscaling", "v2"),
        "persistentvolumeclaims": ("", "v1"),
        "networkpolicies": ("networking.k8s.io", "v1"),
    }[plural]
    return {
        o["metadata"]["name"]
        for o in api.items(group, version, plural)
        if o["metadata"].get("namespace") == NS
    }


def operator_writes(api: ApiServer, since: int = 0) -> list[Any]:
    return [
        c
        for c in api.calls[since:]
        if c.is_write and c.user_agent.startswith(("chatmodel-operator", "kopf/"))
    ]


async def ready(api: ApiServer, name: str, timeout: float = 15) -> dict[str, Any]:
    await wait_for(lambda: phase_of(api, name) == "Ready", timeout)
    return status_of(api, name)


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SMALL_SPEC)
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return spec


def set_deployment_status(api: ApiServer, name: str, status: dict[str, Any]) -> None:
    """As the Deployment controller reports replicas (the tests play it)."""
    api.patch_status("apps", "v1", "deployments", NS, name, status)


def update_spec(api: ApiServer, name: str, spec: Any) -> None:
    """As `kubectl apply` of an edited file: the whole spec replaced in one write."""
    api.patch_object(*CM, NS, name, [{"op": "replace", "path": "/spec", "value": spec}])


async def test_create_to_ready(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    st = await ready(api, "xverse")
    uid = api.get(*CM, NS, "xverse")["metadata"]["uid"]

    assert st["observedGeneration"] == 1
    assert st["replicas"] == st["readyReplicas"] == 2 and st["gpus"] == 2
    assert st["endpoint"] == "http://xverse.models.svc:8000"
    assert (
        st["selector"]
        == "app.kubernetes.io/component=server,app.kubernetes.io/instance=xverse,app.kubernetes.io/name=chatmodel"
    )
    assert st["engine"]["ready"] is True and st["engine"]["key"] == st["plan"]["engineKey"]
    for type_ in ("Validated", "Planned", "EngineReady", "Available", "Ready"):
        assert condition(api, "xverse", type_)["status"] == "True", type_
    assert condition(api, "xverse", "EngineBuildFailed")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])

    # Every transition told once, in order (the Event follows its status write); steps that
    # passed within the settle window are named in the Event of the phase written.
    await wait_for(lambda: any(e["reason"] == "Ready" for e in events_for(api, "xverse")))
    await asyncio.sleep(0.2)
    assert phase_steps(events_for(api, "xverse")) == ["BuildingEngine", "Deploying", "Ready"]

    # Serving children carry an ownerReference to the ChatModel; the shared ones do not.
    for plural in CHILDREN:
        for name in names(api, plural):
            refs = get(api, plural, name)["metadata"]["ownerReferences"]
            assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
                ("ChatModel", uid, True)
            ]
    job = get(api, "jobs", "chatmodel-build-" + st["engine"]["key"])
    assert "ownerReferences" not in job["metadata"]  # shared by key, survives the ChatModel
    assert (
        "ownerReferences" not in get(api, "persistentvolumeclaims", "chatmodel-cache")["metadata"]
    )

    checked = validate_writes(api).checked
    assert {
        "Job",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Event",
        "ChatModel/status",
    } <= set(checked)


@pytest.mark.operator_config(resync_seconds=0.5)
async def test_resync_with_nothing_changed_writes_nothing(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    api.put(
        *CM, chatmodel("broken", {"model": {"source": "hf://xverse/XVERSE-7B-Chat"}, "bogus": 1})
    )
    await ready(api, "xverse")
    await wait_for(lambda: phase_of(api, "broken") == "Failed")
    await asyncio.sleep(0.3)
    before, passes = len(api.calls), _passes()
    await wait_for(lambda: _passes() >= passes + 6, 10)  # three resyncs of both ChatModels
    assert operator_writes(api, before) == []
    assert [
        c for c in api.calls[before:] if c.verb in ("get", "list")
    ] == []  # reads come from watches


async def test_restart_with_nothing_changed_writes_nothing(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse")
    await asyncio.sleep(0.3)
    await operator.stop()
    before, passes = len(api.calls), _passes()
    await operator.start(api)
    await wait_for(lambda: _passes() > passes)  # the resume handler ran
    await asyncio.sleep(0.3)
    assert operator_writes(api, before) == []


def _passes() -> float:
    return sum(
        s.value
        for m in metrics.RECONCILES.collect()
        for s in m.samples
        if s.name == "chatmodel_reconciles_total"
    )


async def test_serving_only_update_never_rebuilds_and_rolls_only_on_template_change(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    st = await ready(api, "xverse")
    key = st["engine"]["key"]
    template = get(api, "deployments", "xverse-triton")["spec"]["template"]
    jobs_before = [c for c in api.calls if c.plural == "jobs" and c.is_write]

    # Replicas: the Deployment scales, its pod template (so its pods) stays as it was.
    update_spec(api, "xverse", spec_with(serving__replicas=3))
    await wait_for(lambda: status_of(api, "xverse").get("observedGeneration") == 2)
    await wait_for(lambda: status_of(api, "xverse").get("readyReplicas") == 3)
    dep = get(api, "deployments", "xverse-triton")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"] == template
    assert phase_of(api, "xverse") == "Ready"

    # Autoscaling on: an HPA appears and the Deployment leaves replicas to it; off: it goes.
    update_spec(
        api, "xverse", spec_with(autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 5})
    )
    await wait_for(lambda: get(api, "horizontalpodautoscalers", "xverse") is not None)
    await wait_for(lambda: status_of(api, "xverse").get("observedGeneration") == 3)
    assert get(api, "horizontalpodautoscalers", "xverse")["spec"]["maxReplicas"] == 5
    assert "replicas" not in get(api, "deployments", "xverse-triton")["spec"]
    update_spec(api, "xverse", spec_with())
    await wait_for(lambda: get(api, "horizontalpodautoscalers", "xverse") is None)

    # A service type change touches the Service alone.
    deployment_writes = len([c for c in api.calls if c.plural == "deployments" and c.is_write])
    update_spec(api, "xverse", spec_with(serving__serviceType="NodePort"))
    await wait_for(lambda: get(api, "services", "xverse")["spec"]["type"] == "NodePort")
    await wait_for(lambda: status_of(api, "xverse").get("observedGeneration") == 5)
    assert (
        len([c for c in api.calls if c.plural == "deployments" and c.is_write]) == deployment_writes
    )

    assert [c for c in api.calls if c.plural == "jobs" and c.is_write] == jobs_before
    assert status_of(api, "xverse")["engine"]["key"] == key
    assert get(api, "deployments", "xverse-triton")["spec"]["template"] == template


async def test_network_policies_follow_the_spec_and_leave_the_pods_alone(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    st = await ready(api, "xverse")
    template = get(api, "deployments", "xverse-triton")["spec"]["template"]
    assert names(api, "networkpolicies") == set()

    policy = {"enabled": True, "fromNamespaces": ["apps"], "monitoringNamespace": "monitoring"}
    update_spec(api, "xverse", spec_with(serving__networkPolicy=policy))
    await wait_for(lambda: names(api, "networkpolicies") == {"xverse-serving", "xverse-build"})
    await wait_for(lambda: status_of(api, "xverse").get("observedGeneration") == 2)
    serving = get(api, "networkpolicies", "xverse-serving")
    assert serving["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "xverse"
    build = get(api, "networkpolicies", "xverse-build")
    key = st["engine"]["key"]
    assert build["spec"]["podSelector"]["matchLabels"]["serving.chatmodel.io/engine-key"] == key
    # Both stay on the next pass (they share a kind), and the pods did not roll.
    api.patch_object(*CM, NS, "xverse", [{"op": "add", "path": "/metadata/labels", "value": {}}])
    await wait_for(lambda: status_of(api, "xverse").get("phase") == "Ready")
    assert names(api, "networkpolicies") == {"xverse-serving", "xverse-build"}
    assert get(api, "deployments", "xverse-triton")["spec"]["template"] == template

    update_spec(api, "xverse", spec_with())
    await wait_for(lambda: names(api, "networkpolicies") == set())
    assert phase_of(api, "xverse") == "Ready"


async def test_engine_update_keeps_old_pods_serving_until_the_new_engine_is_ready(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    spec = {
        "model": {"source": "hf://SUSTech/SUS-Chat-34B"},
        "engine": {"maxOutputLength": 1024},  # TensorRT-LLM engine mode: lengths are built in
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
        "serving": {"replicas": 2},
    }
    api.put(*CM, chatmodel("xverse", spec))
    old_key = (await ready(api, "xverse"))["engine"]["key"]
    old_cm = f"xverse-repo-{old_key[:10]}"
    controllers.job_outcome = "hold"

    spec["engine"]["maxOutputLength"] = 2048  # an engine input: a new key
    update_spec(api, "xverse", spec)
    await wait_for(lambda: status_of(api, "xverse").get("observedGeneration") == 2)
    st = status_of(api, "xverse")
    new_key = st["engine"]["key"]
    assert new_key != old_key
    assert f"chatmodel-build-{new_key}" in names(api, "jobs")
    await asyncio.sleep(0.3)
    # While it builds, the old engine keeps serving, untouched.
    dep = get(api, "deployments", "xverse-triton")
    assert dep["spec"]["template"]["metadata"]["labels"][ENGINE_KEY_LABEL] == old_key
    assert old_cm in names(api, "configmaps")
    assert phase_of(api, "xverse") == "BuildingEngine"
    assert condition(api, "xverse", "Available")["status"] == "True"
    assert condition(api, "xverse", "Ready")["status"] == "True"
    assert status_of(api, "xverse")["readyReplicas"] == 2

    # The new engine is built: the Deployment switches, rolls, and the old repository goes.
    controllers.finish_job(NS, f"chatmodel-build-{new_key}", "complete")
    await wait_for(
        lambda: (
            get(api, "deployments", "xverse-triton")["spec"]["template"]["metadata"]["labels"][
                ENGINE_KEY_LABEL
            ]
            == new_key
        )
    )
    await ready(api, "xverse")
    await wait_for(lambda: old_cm not in names(api, "configmaps"))
    assert f"xverse-repo-{new_key[:10]}" in names(api, "configmaps")
    await wait_for(
        lambda: (
            phase_steps(events_for(api, "xverse"))[-3:] == ["BuildingEngine", "Deploying", "Ready"]
        )
    )


async def test_equal_engines_are_built_once_and_shared(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    controllers.job_outcome = "hold"
    api.put(*CM, chatmodel("first", SMALL_SPEC))
    api.put(*CM, chatmodel("second", spec_with(serving__replicas=1)))  # serving differs, engine not
    await wait_for(lambda: phase_of(api, "first") == phase_of(api, "second") == "BuildingEngine")
    key = status_of(api, "first")["engine"]["key"]
    assert status_of(api, "second")["engine"]["key"] == key
    job = f"chatmodel-build-{key}"
    assert [c.name for c in api.calls if c.plural == "jobs" and c.verb == "create"] == [job]

    controllers.finish_job(NS, job, "complete")
    await ready(api, "first")
    await ready(api, "second")
    # A third one later reuses the cached engine: no build, straight to Deploying.
    api.put(*CM, chatmodel("third", SMALL_SPEC))
    await ready(api, "third")
    assert [c.name for c in api.calls if c.plural == "jobs" and c.verb == "create"] == [job]
    await wait_for(lambda: phase_steps(events_for(api, "third")) == ["Deploying", "Ready"])


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_deletion_removes_owned_children_and_the_cache_only_when_asked(
    api: ApiServer, controllers: Controllers, operator: Operator, policy: str
) -> None:
    api.put(*CM, chatmodel("xverse", spec_with(cache={"deletePolicy": policy})))
    await ready(api, "xverse")
    # the last Event follows Ready
    await wait_for(lambda: phase_steps(events_for(api, "xverse"))[-1:] == ["Ready"])
    assert not api.get(*CM, NS, "xverse")["metadata"].get(
        "finalizers"
    )  # deletion never waits for us
    key = status_of(api, "xverse")["engine"]["key"]

    before = len(api.calls)
    api.remove(*CM, NS, "xverse")  # the garbage collector follows the ownerReferences
    for plural in CHILDREN:
        assert names(api, plural) == set(), plural
    assert names(api, "jobs") == {f"chatmodel-build-{key}"}
    assert (get(api, "persistentvolumeclaims", "chatmodel-cache") is None) == (policy == "Delete")
    await asyncio.sleep(1.5)  # past the delayed pokes of the children's deletion events
    assert operator_writes(api, before) == []  # nothing re-created, no status for the dead


async def test_lost_replicas_degrade_and_recover(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse")
    controllers.deployments = "hold"
    dep = get(api, "deployments", "xverse-triton")
    gen = dep["metadata"]["generation"]
    set_deployment_status(
        api,
        "xverse-triton",
        {"readyReplicas": 1, "availableReplicas": 1, "observedGeneration": gen},
    )
    await wait_for(lambda: phase_of(api, "xverse") == "Degraded")
    assert condition(api, "xverse", "Available")["status"] == "True"  # one still serves
    assert status_of(api, "xverse")["readyReplicas"] == 1
    await wait_for(
        lambda: any(
            e["reason"] == "Degraded" and e["type"] == "Warning" for e in events_for(api, "xverse")
        )
    )

    set_deployment_status(api, "xverse-triton", {"readyReplicas": 0, "availableReplicas": 0})
    await wait_for(lambda: condition(api, "xverse", "Ready").get("status") == "False")
    assert phase_of(api, "xverse") == "Degraded"
    set_deployment_status(api, "xverse-triton", {"readyReplicas": 2, "availableReplicas": 2})
    await ready(api, "xverse")


async def test_metrics_follow_the_chatmodels(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse")

    def sample(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, labels)

    await wait_for(lambda: sample("chatmodel_chatmodels", phase="Ready") == 1)
    assert sample("chatmodel_gpus_requested", namespace=NS, chatmodel="xverse") == 2
    assert sample("chatmodel_ready", namespace=NS, chatmodel="xverse") == 1
    assert sample("chatmodel_engine_builds_total", result="succeeded") == 1
    assert (sample("chatmodel_reconciles_total", result="success") or 0) >= 3
    ids = {"namespace": NS, "chatmodel": "xverse"}
    assert sample("chatmodel_autoscaling_max_replicas", **ids) is None  # not autoscaled

    # Autoscaled: the bounds and the target the saturation alert compares with.
    scaled = {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "target": 3}
    update_spec(api, "xverse", spec_with(autoscaling=scaled))
    await wait_for(lambda: sample("chatmodel_autoscaling_max_replicas", **ids) == 6)
    assert sample("chatmodel_autoscaling_min_replicas", **ids) == 2
    assert sample("chatmodel_autoscaling_target", **ids, metric="pending-requests") == 3
    update_spec(
        api,
        "xverse",
        spec_with(autoscaling={**scaled, "metric": "queue-to-compute-ratio", "target": 0.8}),
    )
    await wait_for(
        lambda: (
            sample("chatmodel_autoscaling_target", **ids, metric="queue-to-compute-ratio") == 0.8
        )
    )
    assert sample("chatmodel_autoscaling_target", **ids, metric="pending-requests") is None
    api.remove(*CM, NS, "xverse")
    await wait_for(lambda: sample("chatmodel_chatmodels", phase="Ready") == 0)
    assert sample("chatmodel_ready", namespace=NS, chatmodel="xverse") is None


async def test_every_example_is_served(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    from pathlib import Path

    import yaml

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    assert examples
    docs = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in examples]
    for doc in docs:  # as `kubectl apply -f examples/`
        api.put(*CM, doc)
    for doc in docs:
        meta = doc["metadata"]
        await wait_for(
            lambda meta=meta: phase_of(api, meta["name"], meta["namespace"]) == "Ready", 20
        )


def _read_slowly(source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint outside the catalog, read as slowly as a hub far away."""
    import time

    from chatmodel_operator.catalog import find_known

    time.sleep(0.5)
    config = dict(find_known("01-ai/Yi-34B-Chat").config)
    return config, {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}


@pytest.mark.operator_config(model_files=_read_slowly)
async def test_a_checkpoint_outside_the_catalog_is_read_while_planning(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    spec = {
        "model": {"source": "hf://acme/yi-finetune"},
        "resources": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3", "count": 2}},
    }
    api.put(*CM, chatmodel("acme", spec))
    await wait_for(lambda: phase_of(api, "acme") == "Planning")
    assert condition(api, "acme", "Planned")["reason"] == "ReadingCheckpoint"
    st = await ready(api, "acme")
    assert st["plan"]["architecture"] == "LlamaForCausalLM" and st["plan"]["gpusPerReplica"] == 2
    await wait_for(
        lambda: phase_steps(events_for(api, "acme"))[:2] == ["Planning", "BuildingEngine"]
    )
