"""Covers how the operator runs and what it optionally creates, against the emulated cluster:
standalone vs. elected (kopf peering), namespaced with globs, KEDA and ServiceMonitor children,
and a cache volume shared by ChatModels that ask for it to be deleted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from emulator import ApiServer, Controllers
from test_lifecycle import ready, spec_with, update_spec

from chatmodel_operator.handlers import PEERING_NAME
from conftest import (
    CM,
    KEDA,
    MONITORING,
    NS,
    PEERING,
    SMALL_SPEC,
    Operator,
    chatmodel,
    fast_config,
    phase_of,
    status_of,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]


@pytest.mark.crds(MONITORING, KEDA, *PEERING)
async def test_with_a_peering_object_one_replica_is_elected(
    api: ApiServer, controllers: Controllers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api.put("kopf.dev", "v1", "clusterkopfpeerings", {"metadata": {"name": PEERING_NAME}})
    op = Operator(fast_config())
    await op.start(api)
    try:
        api.put(*CM, chatmodel("xverse", SMALL_SPEC))
        await ready(api, "xverse")
        peers = await wait_for(
            lambda: (
                api.get("kopf.dev", "v1", "clusterkopfpeerings", None, PEERING_NAME) or {}
            ).get("status")
        )
        assert len(peers) == 1  # this operator announced itself
        assert "one replica is elected" in caplog.text and "standalone" not in caplog.text
    finally:
        await op.stop()


@pytest.mark.crds(MONITORING, KEDA, *PEERING)
async def test_peering_crd_without_its_object_runs_standalone_with_one_warning(
    api: ApiServer, controllers: Controllers, operator: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse")
    records = caplog.get_records("setup") + caplog.get_records("call")
    warnings = [r for r in records if "running standalone" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


@pytest.mark.crds(MONITORING, KEDA, *PEERING)
async def test_namespaced_with_a_glob_serves_only_matching_namespaces(
    api: ApiServer, controllers: Controllers
) -> None:
    for ns in (NS, "other"):
        api.put("", "v1", "namespaces", {"metadata": {"name": ns}})
    api.put("kopf.dev", "v1", "kopfpeerings", {"metadata": {"name": PEERING_NAME, "namespace": NS}})
    op = Operator(fast_config(clusterwide=False), namespaces=("mod*",))
    await op.start(api)
    try:
        api.put(*CM, chatmodel("xverse", SMALL_SPEC))
        api.put(*CM, chatmodel("elsewhere", SMALL_SPEC, namespace="other"))
        await ready(api, "xverse")
        await asyncio.sleep(0.5)
        assert phase_of(api, "elsewhere", "other") is None  # not ours to serve
        assert any(c.plural == "kopfpeerings" and c.verb == "patch" for c in api.calls)
        await wait_for(
            lambda: any(c.plural == "kopfpeerings" and c.verb == "get" for c in api.calls)
        )
    finally:
        await op.stop()


async def test_keda_and_service_monitor_children_follow_the_spec(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    keda = {"enabled": True, "engine": "keda", "minReplicas": 1, "maxReplicas": 3}
    spec = spec_with(autoscaling=keda, serving={"replicas": 1, "serviceMonitor": True})
    api.put(*CM, chatmodel("xverse", spec))
    await ready(api, "xverse")
    so = api.get("keda.sh", "v1alpha1", "scaledobjects", NS, "xverse")
    assert so["spec"]["maxReplicaCount"] == 3
    assert api.get("monitoring.coreos.com", "v1", "servicemonitors", NS, "xverse")

    update_spec(
        api,
        "xverse",
        spec_with(
            autoscaling={**keda, "maxReplicas": 6}, serving={"replicas": 1, "serviceMonitor": True}
        ),
    )
    await wait_for(
        lambda: (
            api.get("keda.sh", "v1alpha1", "scaledobjects", NS, "xverse")["spec"]["maxReplicaCount"]
            == 6
        )
    )

    update_spec(api, "xverse", spec_with(serving={"replicas": 1}))  # both turned off
    await wait_for(lambda: api.get("keda.sh", "v1alpha1", "scaledobjects", NS, "xverse") is None)
    await wait_for(
        lambda: api.get("monitoring.coreos.com", "v1", "servicemonitors", NS, "xverse") is None
    )
    await ready(api, "xverse")


async def test_a_shared_cache_goes_with_the_last_chatmodel_that_asked_for_delete(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    delete = {"deletePolicy": "Delete"}
    api.put(*CM, chatmodel("first", spec_with(cache=delete)))
    await ready(api, "first")
    api.put(*CM, chatmodel("second", spec_with(cache=delete, serving__replicas=1)))
    await ready(api, "second")

    def owners() -> list[str]:
        pvc = api.get("", "v1", "persistentvolumeclaims", NS, "chatmodel-cache")
        return sorted(r["name"] for r in pvc["metadata"].get("ownerReferences", [])) if pvc else []

    await wait_for(lambda: owners() == ["first", "second"])
    api.remove(*CM, NS, "first")
    assert owners() == ["second"]  # still used: it stays
    api.remove(*CM, NS, "second")
    assert api.get("", "v1", "persistentvolumeclaims", NS, "chatmodel-cache") is None

    # Retain again after Delete: the ChatModel stops owning the volume.
    api.put(*CM, chatmodel("third", spec_with(cache=delete)))
    await ready(api, "third")
    await wait_for(lambda: owners() == ["third"])
    update_spec(api, "third", spec_with(cache={"deletePolicy": "Retain"}))
    await wait_for(lambda: owners() == [])


@pytest.mark.crds(MONITORING, KEDA, *PEERING)
async def test_two_replicas_elect_one_and_the_other_stands_by(
    api: ApiServer, controllers: Controllers
) -> None:
    api.put("kopf.dev", "v1", "clusterkopfpeerings", {"metadata": {"name": PEERING_NAME}})
    first, second = (
        Operator(fast_config(resync_seconds=0.5)),
        Operator(fast_config(resync_seconds=0.5)),
    )
    await first.start(api)
    await second.start(api, watching=False)  # it may see the first and pause at once
    try:
        await wait_for(
            lambda: (
                len(
                    (
                        api.get("kopf.dev", "v1", "clusterkopfpeerings", None, PEERING_NAME) or {}
                    ).get("status")
                    or {}
                )
                == 2
            )
        )
        await wait_for(
            lambda: bool(first.ctx.standby) != bool(second.ctx.standby)
        )  # each saw the other
        leader, standby = (first, second) if second.ctx.standby else (second, first)
        await asyncio.sleep(1.0)  # kopf pauses the standby's watch processing
        writes_before = standby.ctx.client.stats.by_verb.get(
            "PATCH", 0
        ) + standby.ctx.client.stats.by_verb.get("POST", 0)
        api.put(*CM, chatmodel("xverse", SMALL_SPEC))
        await ready(api, "xverse")
        await asyncio.sleep(1.5)  # resyncs of both come round
        stats = standby.ctx.client.stats.by_verb
        assert (
            stats.get("PATCH", 0) + stats.get("POST", 0) == writes_before
        )  # only the leader wrote
        assert leader.ctx.client.stats.by_verb.get("PATCH", 0) > 0

        await leader.stop()  # the leader goes away and says so: the standby takes over
        await wait_for(lambda: not standby.ctx.standby)
        update_spec(api, "xverse", spec_with(serving__replicas=3))
        await wait_for(lambda: status_of(api, "xverse").get("readyReplicas") == 3, 20)
        assert status_of(api, "xverse")["observedGeneration"] == 2
    finally:
        await first.stop()
        await second.stop()
