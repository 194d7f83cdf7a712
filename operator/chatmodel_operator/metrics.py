"""Every Prometheus metric the operator exports, in one registry (STYLE 10).

Pure code returns numbers (a reconcile result, a build duration, a ``ChatModelSample``); the
reconcile loop and the adapters call the ``record_*`` helpers below. Labels stay bounded:
results and phases are closed sets checked here, error reasons come from the error classes, and
per-ChatModel series carry only ``namespace`` and ``chatmodel`` of ChatModels that exist and are
removed by ``forget_chatmodel`` when one is deleted.

The load signals themselves are not here: Prometheus computes them per pod with recording rules
(``chatmodel:*``, see signals.py and observability/rules.py), so the operator never scrapes the
Triton pods. It exports what only it knows, which the alerts and dashboards join with them.

The ``namespace`` label clashes with the target label Prometheus adds when it scrapes the
operator's pod, so the operator's ServiceMonitor/PodMonitor sets ``honorLabels: true`` (as for
kube-state-metrics); otherwise the series would arrive as ``exported_namespace``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from typing import Final, Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# `_created` series double the series count and nothing here reads them.
disable_created_metrics()

# One registry for the whole operator, not prometheus-client's global default: tests and the
# generator read it without picking up whatever else a process registered.
REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Closed label sets. Kept as Literals so callers get type checking and the series exist at zero
# from start-up (rate() and dashboards need a series before the first event).
ReconcileResult = Literal["success", "temporary_error", "permanent_error"]
RECONCILE_RESULTS: Final[tuple[str, ...]] = get_args(ReconcileResult)

# Must equal ChatModelStatus.phase (a unit test checks it); kept literal here so this module
# does not import the API models.
Phase = Literal[
    "Pending",
    "Planning",
    "BuildingEngine",
    "Deploying",
    "Blocked",
    "Ready",
    "Idle",
    "Degraded",
    "Failed",
]
PHASES: Final[tuple[str, ...]] = get_args(Phase)

BuildResult = Literal["succeeded", "failed"]
BUILD_RESULTS: Final[tuple[str, ...]] = get_args(BuildResult)

# Error reasons are the ``reason`` class attributes of errors.py (CamelCase, a finite set);
# anything else is folded into "Other" so a stray message can never become a label value.
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
OTHER_REASON: Final = "Other"

# Reconciles take milliseconds (planning, rendering) to tens of seconds (slow API server).
_RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Engine builds take minutes (small models) to an hour or more (70B with TP).
_BUILD_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)

_PER_MODEL = ("namespace", "chatmodel")

RECONCILES: Final = Counter(
    "chatmodel_reconciles",
    "Reconcile passes, by result.",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS: Final = Counter(
    "chatmodel_reconcile_errors",
    "Reconcile passes that ended in an error, by the error's reason.",
    ["reason"],
    registry=REGISTRY,
)
RECONCILE_DURATION: Final = Histogram(
    "chatmodel_reconcile_duration_seconds",
    "Wall time of one reconcile pass, by result.",
    ["result"],
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)
CHATMODELS: Final = Gauge(
    "chatmodel_chatmodels",
    "ChatModels the operator knows, by status.phase.",
    ["phase"],
    registry=REGISTRY,
)
ENGINE_BUILDS: Final = Counter(
    "chatmodel_engine_builds",
    "Engine build Jobs that finished, by result.",
    ["result"],
    registry=REGISTRY,
)
ENGINE_BUILD_FAILURES: Final = Counter(
    "chatmodel_engine_build_failures",
    "Engine build Jobs that failed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
ENGINE_BUILD_DURATION: Final = Histogram(
    "chatmodel_engine_build_duration_seconds",
    "Wall time of an engine build Job from start to completion, by result.",
    ["result"],
    buckets=_BUILD_BUCKETS,
    registry=REGISTRY,
)

# Per-ChatModel state, one series per existing ChatModel (removed on deletion).
READY: Final = Gauge(
    "chatmodel_ready",
    "1 when the ChatModel's Ready condition is True, else 0.",
    _PER_MODEL,
    registry=REGISTRY,
)
GPUS_REQUESTED: Final = Gauge(
    "chatmodel_gpus_requested",
    "GPUs requested by the ChatModel's pods (serving replicas times GPUs per replica, plus a "
    "running engine build).",
    _PER_MODEL,
    registry=REGISTRY,
)
REPLICAS_DESIRED: Final = Gauge(
    "chatmodel_replicas_desired",
    "Replicas the serving Deployment asks for (set by the HPA when autoscaling).",
    _PER_MODEL,
    registry=REGISTRY,
)
REPLICAS_READY: Final = Gauge(
    "chatmodel_replicas_ready",
    "Serving replicas that are Ready.",
    _PER_MODEL,
    registry=REGISTRY,
)
MIN_REPLICAS: Final = Gauge(
    "chatmodel_autoscaling_min_replicas",
    "spec.autoscaling.minReplicas (only while autoscaling is enabled).",
    _PER_MODEL,
    registry=REGISTRY,
)
MAX_REPLICAS: Final = Gauge(
    "chatmodel_autoscaling_max_replicas",
    "spec.autoscaling.maxReplicas (only while autoscaling is enabled).",
    _PER_MODEL,
    registry=REGISTRY,
)
AUTOSCALING_TARGET: Final = Gauge(
    "chatmodel_autoscaling_target",
    "Average value per replica the autoscaler holds the chosen load signal at.",
    (*_PER_MODEL, "metric"),
    registry=REGISTRY,
)

_PER_MODEL_GAUGES: Final = (READY, GPUS_REQUESTED, REPLICAS_DESIRED, REPLICAS_READY)
_AUTOSCALING_GAUGES: Final = (MIN_REPLICAS, MAX_REPLICAS)
_PER_METRIC_GAUGES: Final = (AUTOSCALING_TARGET,)


@dataclass(frozen=True)
class ChatModelSample:
    """What one reconcile pass knows about a ChatModel, as numbers (built by pure code)."""

    namespace: str
    name: str
    phase: Phase
    ready: bool
    gpus_requested: int
    replicas_desired: int
    replicas_ready: int
    # Set only when spec.autoscaling.enabled; the saturation alert needs all three.
    autoscaling_metric: str | None = None
    autoscaling_target: float | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None


class _State:
    """Which phase each ChatModel is in, so the by-phase gauge is a count, not a running sum
    that drifts when a pass is retried or an event is missed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase_of: dict[tuple[str, str], str] = {}
        self.metric_of: dict[tuple[str, str], set[str]] = {}


_state = _State()


def _init_zero_series() -> None:
    for result in RECONCILE_RESULTS:
        RECONCILES.labels(result=result)
        RECONCILE_DURATION.labels(result=result)
    for result in BUILD_RESULTS:
        ENGINE_BUILDS.labels(result=result)
        ENGINE_BUILD_DURATION.labels(result=result)
    for phase in PHASES:
        CHATMODELS.labels(phase=phase).set(0)


_init_zero_series()


def error_reason(reason: str | None) -> str:
    """The label value for an error reason: the class's CamelCase reason, else ``Other``."""
    if reason and _REASON.match(reason):
        return reason
    return OTHER_REASON


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def record_reconcile(*, result: ReconcileResult, seconds: float, reason: str | None = None) -> None:
    """One reconcile pass ended; ``reason`` is the error's ``reason`` when it failed."""
    _check(result, RECONCILE_RESULTS, "reconcile result")
    RECONCILES.labels(result=result).inc()
    RECONCILE_DURATION.labels(result=result).observe(max(seconds, 0.0))
    if result != "success":
        RECONCILE_ERRORS.labels(reason=error_reason(reason)).inc()


def record_engine_build(
    *, result: BuildResult, seconds: float | None, reason: str | None = None
) -> None:
    """An engine build Job finished (record once, when the operator first sees it complete).

    ``seconds`` is the Job's completionTime minus startTime, or None when unknown (a Job that
    failed before starting still counts, without a duration).
    """
    _check(result, BUILD_RESULTS, "build result")
    ENGINE_BUILDS.labels(result=result).inc()
    if seconds is not None:
        ENGINE_BUILD_DURATION.labels(result=result).observe(max(seconds, 0.0))
    if result == "failed":
        ENGINE_BUILD_FAILURES.labels(reason=error_reason(reason)).inc()


def observe_chatmodel(sample: ChatModelSample) -> None:
    """Set every per-ChatModel series from one pass's sample (idempotent)."""
    _check(sample.phase, PHASES, "phase")
    key = (sample.namespace, sample.name)
    labels = {"namespace": sample.namespace, "chatmodel": sample.name}
    READY.labels(**labels).set(1 if sample.ready else 0)
    GPUS_REQUESTED.labels(**labels).set(sample.gpus_requested)
    REPLICAS_DESIRED.labels(**labels).set(sample.replicas_desired)
    REPLICAS_READY.labels(**labels).set(sample.replicas_ready)
    autoscaling = (
        sample.autoscaling_metric is not None
        and sample.autoscaling_target is not None
        and sample.min_replicas is not None
        and sample.max_replicas is not None
    )
    with _state.lock:
        _state.phase_of[key] = sample.phase
        _recount_phases()
        # A changed metric or disabled autoscaling must not leave a stale target behind.
        for metric in _state.metric_of.pop(key, set()):
            if not autoscaling or metric != sample.autoscaling_metric:
                _remove(AUTOSCALING_TARGET, (*key, metric))
        if autoscaling:
            assert sample.autoscaling_metric is not None  # narrowed above, for mypy
            assert sample.autoscaling_target is not None
            MIN_REPLICAS.labels(**labels).set(sample.min_replicas or 0)
            MAX_REPLICAS.labels(**labels).set(sample.max_replicas or 0)
            AUTOSCALING_TARGET.labels(**labels, metric=sample.autoscaling_metric).set(
                sample.autoscaling_target
            )
            _state.metric_of[key] = {sample.autoscaling_metric}
        else:
            for gauge in _AUTOSCALING_GAUGES:
                _remove(gauge, key)


def forget_chatmodel(namespace: str, name: str) -> None:
    """The ChatModel is gone: drop its series so label cardinality follows the live objects."""
    key = (namespace, name)
    with _state.lock:
        _state.phase_of.pop(key, None)
        _state.metric_of.pop(key, None)
        _recount_phases()
    for gauge in (*_PER_MODEL_GAUGES, *_AUTOSCALING_GAUGES):
        _remove(gauge, key)
    for gauge in _PER_METRIC_GAUGES:
        # Label values of a labelled metric, without reaching into private attributes.
        for metric_family in gauge.collect():
            for s in metric_family.samples:
                if (s.labels.get("namespace"), s.labels.get("chatmodel")) == key:
                    _remove(gauge, (*key, s.labels["metric"]))


def _recount_phases() -> None:
    counts = dict.fromkeys(PHASES, 0)
    for phase in _state.phase_of.values():
        counts[phase] += 1
    for phase, n in counts.items():
        CHATMODELS.labels(phase=phase).set(n)


def _remove(gauge: Gauge, labelvalues: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        gauge.remove(*labelvalues)


def reset_for_tests() -> None:
    """Forget every ChatModel and zero the counters' children (tests share the registry)."""
    with _state.lock:
        _state.phase_of.clear()
        _state.metric_of.clear()
        _recount_phases()
    for metric in (
        *_PER_MODEL_GAUGES,
        *_AUTOSCALING_GAUGES,
        *_PER_METRIC_GAUGES,
        RECONCILES,
        RECONCILE_ERRORS,
        RECONCILE_DURATION,
        ENGINE_BUILDS,
        ENGINE_BUILD_FAILURES,
        ENGINE_BUILD_DURATION,
    ):
        metric.clear()
    _init_zero_series()


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """Serve REGISTRY on http://addr:port/metrics in a daemon thread; returns (server, thread).

    Port 0 picks a free port (tests): read it from ``server.server_port``.
    """
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server, thread
