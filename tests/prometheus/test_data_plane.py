"""The load signals on the data plane itself: a real Prometheus scraping `chatmodel serve`'s Triton.

A tiny trained checkpoint is served the way `chatmodel serve` does (the repository the
operator renders for ``backend: python``: ensemble, preprocessing, our in-flight batching
engine, postprocessing) and loaded with more streaming clients than it has batch slots. The
engine takes every request off Triton's queue at once, so the pending-requests signal must count
the engine's own waiting requests; the HPA formula on it must ask for more replicas under load
and minReplicas at idle, and every panel of the serving dashboard that the pods feed must
return data with Triton started as Triton's OpenAI frontend starts it (the examples' default):
without --metrics-config, so no latency summaries and no first-response histogram of Triton's
own. Time to first token and inter-token latency then come from our models' histograms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.prometheus.promharness import (
    GenerateLoad,
    Prometheus,
    ScrapeJob,
    prometheus_binary,
    tiny_data_plane,
)

from chatmodel_operator import observability
from chatmodel_operator.api.spec import DEFAULT_TARGETS
from chatmodel_operator.observability import hpa
from chatmodel_operator.signals import SIGNALS

NAMESPACE, POD, CHATMODEL = "dp", "tiny-0", "tiny"
POD_LABELS = {"namespace": NAMESPACE, "pod": POD, "chatmodel": CHATMODEL}
BATCH_SLOTS = 2
CLIENTS = 10  # about 8 wait for a slot: over the default target of 4 pending per replica
# Panels a serving pod feeds; a panel has data when any of its queries has. KV-cache use comes
# from our Python engine's nv_trt_llm_* gauges. Not here: the Replicas and GPUs panels, which
# read the operator's own metrics, not the pods'.
PANELS = (
    "Request rate",
    "Request latency p50 / p95",
    "Time to first token p50 / p95",
    "Inter-token latency p50 / p95",
    "Output tokens per second",
    "Queue-to-compute ratio per replica",
    "Pending requests per replica",
    "KV-cache utilization per replica",
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="prometheus not installed: `apt-get install prometheus` (make system-deps)",
    ),
]


@dataclass
class DataPlane:
    loaded: dict[str, list[float]] = field(default_factory=dict)
    idle: dict[str, list[float]] = field(default_factory=dict)
    panels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    completed: int = 0
    errors: int = 0


def per_pod(prom: Prometheus, signal: str) -> list[float]:
    query = observability.adapter_query(SIGNALS[signal], namespace=NAMESPACE, pods=[POD])
    return [float(r["value"][1]) for r in prom.query(query)]


def panel_queries() -> dict[str, list[str]]:
    """Each panel's queries, by panel title, as Grafana would send them here."""
    board = observability.dashboards()["chatmodel-serving.json"]
    out: dict[str, list[str]] = {}
    for where, expr in observability.expressions(board):
        # "<dashboard> / <panel> / <refId>", and panel titles may hold " / " themselves
        title = where.removeprefix(f"{board['title']} / ").rsplit(" / ", 1)[0]
        if title in PANELS:
            out.setdefault(title, []).append(
                expr.replace("$namespace", NAMESPACE)
                .replace("$chatmodel", ".*")
                .replace("$__rate_interval", "10s")
            )
    return out


@pytest.fixture(scope="module")
def data_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    try:
        from chatmodel_operator.runtime.server import ServerError, find_tritonserver

        find_tritonserver()
    except (ImportError, ServerError) as exc:
        pytest.skip(f"the data plane cannot serve here: {exc}")
    work = tmp_path_factory.mktemp("data-plane")
    server = tiny_data_plane(work, CHATMODEL, batch_slots=BATCH_SLOTS)
    # As Triton's OpenAI frontend runs Triton: without the opt-in metrics plain pods ask for.
    command = server.triton.command
    server.triton.command = lambda: [  # type: ignore[method-assign]
        a for a in command() if not a.startswith("--metrics-config")
    ]
    prom = Prometheus(
        work / "prometheus",
        jobs=[ScrapeJob("triton", server.triton.ports.metrics, POD_LABELS)],
        rule_groups=observability.rule_groups(signals_interval="1s", alerts_interval="1s"),
    )
    out = DataPlane()
    try:
        server.start(timeout_s=120)
        prom.start()
        prom.wait_until("idle signal", lambda: per_pod(prom, "pending-requests") == [0.0], 25)
        target = DEFAULT_TARGETS["pending-requests"]
        # Streamed, as chat clients ask: inter-token latency exists only between responses.
        load = GenerateLoad(
            server.triton.http_url,
            concurrency=CLIENTS,
            max_tokens=64,
            max_seconds=40,
            stream=True,
        )
        with load:
            prom.wait_until(
                "pending over target",
                lambda: any(v > target for v in per_pod(prom, "pending-requests")),
                25,
            )
            time.sleep(2)  # fill the panels' rate windows with loaded samples
            out.loaded = {
                s: per_pod(prom, s) for s in ("pending-requests", "queue-to-compute-ratio")
            }
            out.panels = {
                title: [r for expr in exprs for r in prom.query(expr)]
                for title, exprs in panel_queries().items()
            }
        out.completed, out.errors = load.stats.completed, load.stats.errors
        prom.wait_until("back to idle", lambda: per_pod(prom, "pending-requests") == [0.0], 15)
        out.idle = {s: per_pod(prom, s) for s in ("pending-requests", "queue-to-compute-ratio")}
        yield out
    finally:
        prom.stop()
        server.stop()


def test_load_was_served(data_plane: DataPlane) -> None:
    assert data_plane.completed > 0
    assert data_plane.errors == 0


def test_pending_counts_requests_waiting_in_the_engine(data_plane: DataPlane) -> None:
    # Triton's own pending count stays 0 here; only the engine's waiting requests can lift it.
    assert data_plane.loaded["pending-requests"][0] > DEFAULT_TARGETS["pending-requests"]
    assert data_plane.idle["pending-requests"] == [0.0]


def test_hpa_scales_on_the_data_plane(data_plane: DataPlane) -> None:
    def desired(values: list[float], current: int) -> int:
        return hpa.desired_replicas(
            current=current,
            per_pod_values=values,
            target=DEFAULT_TARGETS["pending-requests"],
            min_replicas=1,
            max_replicas=10,
        )

    assert desired(data_plane.loaded["pending-requests"], current=1) > 1
    assert desired(data_plane.idle["pending-requests"], current=3) == 1


def test_every_panel_the_pods_feed_returns_data_without_tritons_opt_in_metrics(
    data_plane: DataPlane,
) -> None:
    assert sorted(data_plane.panels) == sorted(PANELS)
    empty = [
        title
        for title, result in data_plane.panels.items()
        if not any(math.isfinite(float(r["value"][1])) for r in result)
    ]
    assert empty == []


def test_ratio_is_recorded(data_plane: DataPlane) -> None:
    # Recorded and finite; its size under engine-side queueing is a finding, not asserted.
    assert all(math.isfinite(v) for v in data_plane.loaded["queue-to-compute-ratio"])
    target = DEFAULT_TARGETS["queue-to-compute-ratio"]
    assert all(v < target for v in data_plane.idle["queue-to-compute-ratio"])
