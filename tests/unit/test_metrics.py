"""The operator's metrics module: names, bounded labels, recording helpers, the HTTP endpoint."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import get_args

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatmodel_operator import metrics
from chatmodel_operator.api.spec import ChatModelStatus
from chatmodel_operator.metrics import REGISTRY, ChatModelSample

# Every label name an operator metric may carry: closed sets or namespace/name of live objects.
BOUNDED_LABELS = {"result", "reason", "phase", "namespace", "chatmodel", "metric", "le"}


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def sample(name: str = "m", namespace: str = "ns", /, **kw: object) -> ChatModelSample:
    base: dict[str, object] = {
        "namespace": namespace,
        "name": name,
        "phase": "Ready",
        "ready": True,
        "gpus_requested": 2,
        "replicas_desired": 2,
        "replicas_ready": 1,
    }
    base.update(kw)
    return ChatModelSample(**base)  # type: ignore[arg-type]


def chatmodel_families() -> list[tuple[str, set[str]]]:
    out = []
    for family in REGISTRY.collect():
        if family.name.startswith(("chatmodel", "python_", "process_")):
            labels = {k for s in family.samples for k in s.labels}
            out.append((family.name, labels))
    return out


def test_phases_match_the_status_model() -> None:
    annotation = ChatModelStatus.model_fields["phase"].annotation
    assert get_args(annotation) == metrics.PHASES


def test_names_are_prefixed_and_labels_bounded() -> None:
    metrics.observe_chatmodel(
        sample(
            autoscaling_metric="pending-requests",
            autoscaling_target=4.0,
            min_replicas=1,
            max_replicas=3,
        )
    )
    metrics.record_reconcile(result="permanent_error", seconds=0.1, reason="DoesNotFit")
    metrics.record_engine_build(result="failed", seconds=60, reason="EngineBuildFailed")
    families = chatmodel_families()
    ours = [(n, labels) for n, labels in families if not n.startswith(("python_", "process_"))]
    assert {n for n, _ in ours} == {
        "chatmodel_reconciles",
        "chatmodel_reconcile_errors",
        "chatmodel_reconcile_duration_seconds",
        "chatmodel_chatmodels",
        "chatmodel_engine_builds",
        "chatmodel_engine_build_failures",
        "chatmodel_engine_build_duration_seconds",
        "chatmodel_ready",
        "chatmodel_gpus_requested",
        "chatmodel_replicas_desired",
        "chatmodel_replicas_ready",
        "chatmodel_autoscaling_min_replicas",
        "chatmodel_autoscaling_max_replicas",
        "chatmodel_autoscaling_target",
    }
    for name, labels in ours:
        assert name.startswith("chatmodel_"), name
        assert labels <= BOUNDED_LABELS, (name, labels - BOUNDED_LABELS)


def test_zero_series_exist_before_any_event() -> None:
    # rate() and increase() need a series before the first event, and alerts read the zeros.
    for result in metrics.RECONCILE_RESULTS:
        assert value("chatmodel_reconciles_total", result=result) == 0
    for result in metrics.BUILD_RESULTS:
        assert value("chatmodel_engine_builds_total", result=result) == 0
    for phase in metrics.PHASES:
        assert value("chatmodel_chatmodels", phase=phase) == 0


def test_reconcile_results_and_errors() -> None:
    metrics.record_reconcile(result="success", seconds=0.02)
    metrics.record_reconcile(result="temporary_error", seconds=0.3, reason="ApiUnavailable")
    metrics.record_reconcile(result="permanent_error", seconds=0.1, reason="not a reason!")
    assert value("chatmodel_reconciles_total", result="success") == 1
    assert value("chatmodel_reconcile_errors_total", reason="ApiUnavailable") == 1
    assert value("chatmodel_reconcile_errors_total", reason="Other") == 1
    assert value("chatmodel_reconcile_duration_seconds_count", result="success") == 1
    assert value("chatmodel_reconcile_duration_seconds_bucket", result="success", le="0.025") == 1
    with pytest.raises(ValueError, match="reconcile result"):
        metrics.record_reconcile(result="ok", seconds=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("DoesNotFit", "DoesNotFit"),
        ("InvalidSpec", "InvalidSpec"),
        (None, "Other"),
        ("", "Other"),
        ("lowercase", "Other"),
        ("Has space", "Other"),
        ("X" * 65, "Other"),
    ],
    ids=["class-reason", "spec", "none", "empty", "lowercase", "space", "too-long"],
)
def test_error_reason_is_bounded(reason: str | None, label: str) -> None:
    assert metrics.error_reason(reason) == label


def test_engine_builds() -> None:
    metrics.record_engine_build(result="succeeded", seconds=600)
    metrics.record_engine_build(result="failed", seconds=None, reason="EngineBuildFailed")
    assert value("chatmodel_engine_builds_total", result="succeeded") == 1
    assert value("chatmodel_engine_builds_total", result="failed") == 1
    assert value("chatmodel_engine_build_failures_total", reason="EngineBuildFailed") == 1
    assert value("chatmodel_engine_build_duration_seconds_sum", result="succeeded") == 600
    # A Job that never started counts as a failure but has no duration.
    assert value("chatmodel_engine_build_duration_seconds_count", result="failed") == 0


def test_phase_counts_follow_the_objects() -> None:
    metrics.observe_chatmodel(sample("a", phase="BuildingEngine", ready=False))
    metrics.observe_chatmodel(sample("b", phase="Ready"))
    metrics.observe_chatmodel(sample("a", phase="BuildingEngine", ready=False))  # retried pass
    assert value("chatmodel_chatmodels", phase="BuildingEngine") == 1
    assert value("chatmodel_chatmodels", phase="Ready") == 1
    metrics.observe_chatmodel(sample("a", phase="Ready"))
    assert value("chatmodel_chatmodels", phase="BuildingEngine") == 0
    assert value("chatmodel_chatmodels", phase="Ready") == 2
    metrics.forget_chatmodel("ns", "b")
    assert value("chatmodel_chatmodels", phase="Ready") == 1


def test_per_chatmodel_series_and_deletion() -> None:
    metrics.observe_chatmodel(
        sample(
            ready=False,
            gpus_requested=4,
            replicas_desired=2,
            replicas_ready=1,
            autoscaling_metric="queue-to-compute-ratio",
            autoscaling_target=1.0,
            min_replicas=1,
            max_replicas=2,
        )
    )
    ids = {"namespace": "ns", "chatmodel": "m"}
    assert value("chatmodel_ready", **ids) == 0
    assert value("chatmodel_gpus_requested", **ids) == 4
    assert value("chatmodel_replicas_desired", **ids) == 2
    assert value("chatmodel_replicas_ready", **ids) == 1
    assert value("chatmodel_autoscaling_max_replicas", **ids) == 2
    assert value("chatmodel_autoscaling_target", **ids, metric="queue-to-compute-ratio") == 1.0
    metrics.forget_chatmodel("ns", "m")
    left = [
        s
        for family in REGISTRY.collect()
        for s in family.samples
        if s.labels.get("chatmodel") == "m"
    ]
    assert left == []
    metrics.forget_chatmodel("ns", "m")  # idempotent


def test_autoscaling_changes_leave_no_stale_target() -> None:
    ids = {"namespace": "ns", "chatmodel": "m"}
    scaled: dict[str, object] = {"min_replicas": 1, "max_replicas": 4, "autoscaling_target": 4.0}
    metrics.observe_chatmodel(sample(autoscaling_metric="pending-requests", **scaled))
    metrics.observe_chatmodel(sample(autoscaling_metric="queue-to-compute-ratio", **scaled))
    assert value("chatmodel_autoscaling_target", **ids, metric="pending-requests") is None
    assert value("chatmodel_autoscaling_target", **ids, metric="queue-to-compute-ratio") == 4.0
    metrics.observe_chatmodel(sample())  # autoscaling disabled
    assert value("chatmodel_autoscaling_target", **ids, metric="queue-to-compute-ratio") is None
    assert value("chatmodel_autoscaling_max_replicas", **ids) is None


def test_metrics_endpoint_serves_the_registry() -> None:
    metrics.record_reconcile(result="success", seconds=0.01)
    server, _thread = metrics.start_metrics_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"chatmodel_reconciles", "chatmodel_chatmodels", "process_cpu_seconds"} <= names
    assert 'chatmodel_reconciles_total{result="success"} 1.0' in text
    assert "_created" not in text
