"""The scale-to-zero trigger against a real Prometheus: the ScaledObject's router-queue query,
as rendered, reads the queue a router holds for this ChatModel's pool alone, and reads 0 (not
no data) while the router exports nothing for it, so KEDA sees "idle", never its fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.prometheus.fake_router import QUEUE_SIZE, FakeRouter
from tests.prometheus.promharness import Prometheus, ScrapeJob, prometheus_binary

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.render import render_children

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="prometheus not installed: `apt-get install prometheus` (make system-deps)",
    ),
]
NAME = "chat"


def router_trigger() -> dict[str, Any]:
    """The router trigger of the ScaledObject a scale-to-zero ChatModel gets."""
    spec = parse_spec(
        {
            "model": {"source": "hf://01-ai/Yi-34B-Chat"},
            "resources": {"gpu": {"memoryGiB": 80}},
            "routing": {"inferencePool": {}},
            "autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0},
        }
    )
    plan = plan_spec(spec, resolve_model(spec.model))
    children = render_children(
        name=NAME, namespace="ns", uid="u", spec=spec, plan=plan, repository={}
    )
    scaled = next(o for o in children.serving if o["kind"] == "ScaledObject")
    routers = [t for t in scaled["spec"]["triggers"] if QUEUE_SIZE in t["metadata"]["query"]]
    assert len(routers) == 1
    return routers[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeRouter, Prometheus]]:
    with FakeRouter() as router:
        prom = Prometheus(
            Path(tmp_path_factory.mktemp("router-prom")),
            jobs=[ScrapeJob("llm-d-router", router.port, {"namespace": "ns"})],
            rule_groups=[],
        )
        try:
            prom.start()
            prom.wait_until(
                "router scraped", lambda: prom.targets_up().get("llm-d-router", False), 30
            )
            yield router, prom
        finally:
            prom.stop()


def test_router_queue_wakes_only_its_pool_and_never_goes_absent(
    stack: tuple[FakeRouter, Prometheus],
) -> None:
    router, prom = stack
    trigger = router_trigger()
    query = trigger["metadata"]["query"]
    activation = float(trigger["metadata"]["activationThreshold"])
    raw = f'sum({QUEUE_SIZE}{{inference_pool="{NAME}"}})'

    # Nothing queued anywhere: the raw sum has no data (the trap); the trigger reads 0.
    assert prom.query(raw) == []
    assert prom.value(query) == 0.0
    assert not prom.value(query) > activation  # KEDA: not active, stays at zero

    # Another pool's queue does not wake this one.
    router.hold("other", 7)
    prom.wait_until("other pool scraped", lambda: prom.query(f"{QUEUE_SIZE}") != [], 15)
    assert prom.value(query) == 0.0

    # Requests held for this pool, in two priority bands: their sum wakes the Deployment.
    router.hold(NAME, 3, priority=0)
    router.hold(NAME, 2, priority=1)
    prom.wait_until("queue seen", lambda: prom.value(query) == 5.0, 15)
    assert prom.value(query) > activation
    assert prom.value(raw) == 5.0

    # The router drains and drops the pool's series: back to 0, not to no data.
    router.forget(NAME)
    prom.wait_until("queue gone", lambda: prom.query(raw) == [], 15)
    assert prom.value(query) == 0.0
