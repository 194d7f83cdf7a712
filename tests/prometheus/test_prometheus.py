"""A real Prometheus scraping a real CPU Triton under load and the operator's metrics endpoint.

Covers: every PromQL expression of the dashboards, the recording and alerting rules, the
prometheus-adapter rules and the KEDA query returns data; the rules evaluate without errors and
the alerts reach the expected state; ``promtool check rules`` and ``promtool test rules``; the
HPA's replica formula applied to the measured signals gives more replicas under load and
minReplicas at idle.

Series that only the GPU / TensorRT-LLM C++ backend or a newer Triton export (KV-cache blocks,
time to first token) come from ``FakeTritonExporter`` in the documented format, fed with what
the load measures against the real Triton. Needs Debian's ``prometheus`` package.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.prometheus.promharness import (
    FakeTritonExporter,
    Load,
    Prometheus,
    ScrapeJob,
    TritonServer,
    following_in_flight,
    prometheus_binary,
    promtool_binary,
)

from chatmodel_operator import metrics, observability
from chatmodel_operator.api.spec import DEFAULT_TARGETS
from chatmodel_operator.observability import hpa
from chatmodel_operator.signals import SIGNALS

REPO = Path(__file__).resolve().parents[2]
NAMESPACE, POD, CHATMODEL = "test", "chat-0", "chat"
# What the operator's ServiceMonitor (targetLabels: chatmodel) puts on every Triton series.
POD_LABELS = {"namespace": NAMESPACE, "pod": POD, "chatmodel": CHATMODEL}
# Grafana's $__rate_interval is at least four scrape intervals; the tier scrapes every second.
RATE_INTERVAL = "10s"
CONCURRENCY = 8  # one Triton model instance: about 7 requests wait while one computes
MAX_REPLICAS = 10
ALL = ".*"  # the dashboards' "All" value of $chatmodel

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        prometheus_binary() is None or promtool_binary() is None,
        reason="prometheus/promtool not installed: `apt-get install prometheus` (make system-deps)",
    ),
]


@dataclass
class Observed:
    idle_before: dict[str, float | None] = field(default_factory=dict)
    loaded: dict[str, list[float]] = field(default_factory=dict)  # signal -> per-pod values
    idle_after: dict[str, list[float]] = field(default_factory=dict)
    results: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    rule_health: list[tuple[str, str, str]] = field(default_factory=list)
    alerts: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # name -> (who, state)
    completed: int = 0
    errors: int = 0
    down_seconds: float = 0.0


def dashboard_exprs() -> list[tuple[str, str]]:
    """Dashboard queries with Grafana's variables filled in as Grafana would."""
    out = []
    for board in observability.dashboards().values():
        for where, expr in observability.expressions(board):
            label_values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr)
            if label_values:  # a variable: the series it lists must exist and carry the label
                expr = f"count by ({label_values[2]}) ({label_values[1]})"
            expr = (
                expr.replace("$namespace", NAMESPACE)
                .replace("$chatmodel", ALL)
                .replace("$__rate_interval", RATE_INTERVAL)
            )
            out.append((where, expr))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for group in observability.rule_groups():
        for rule in group["rules"]:
            out.append((f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]))
    for s in SIGNALS.values():
        out.append((f"recorded {s.record}", s.record))
        query = observability.adapter_query(s, namespace=NAMESPACE, pods=[POD])
        out.append((f"adapter {s.hpa_metric}", query))
        out.append((f"keda {s.metric}", s.keda_query(NAMESPACE, CHATMODEL)))
    return out


def record_operator_scenario() -> None:
    """What a running operator would have recorded: one autoscaled ChatModel at maxReplicas,
    one that failed; a few reconciles of each result; one engine build of each result."""
    metrics.observe_chatmodel(
        metrics.ChatModelSample(
            namespace=NAMESPACE,
            name=CHATMODEL,
            phase="Ready",
            ready=True,
            gpus_requested=1,
            replicas_desired=1,
            replicas_ready=1,
            autoscaling_metric="queue-to-compute-ratio",
            autoscaling_target=DEFAULT_TARGETS["queue-to-compute-ratio"],
            min_replicas=1,
            max_replicas=1,
        )
    )
    # Two more autoscaled ChatModels (no pods) so each signal panel has its target line.
    for metric in ("pending-requests", "kv-cache-utilization"):
        metrics.observe_chatmodel(
            metrics.ChatModelSample(
                namespace=NAMESPACE,
                name=f"scaled-on-{metric}",
                phase="Deploying",
                ready=True,
                gpus_requested=2,
                replicas_desired=2,
                replicas_ready=2,
                autoscaling_metric=metric,
                autoscaling_target=DEFAULT_TARGETS[metric],
                min_replicas=1,
                max_replicas=4,
            )
        )
    metrics.observe_chatmodel(
        metrics.ChatModelSample(
            namespace=NAMESPACE,
            name="broken",
            phase="Failed",
            ready=False,
            gpus_requested=0,
            replicas_desired=0,
            replicas_ready=0,
        )
    )


def record_operator_events() -> None:
    # After Prometheus has seen the zero series, so rate() and increase() see the change.
    for _ in range(3):
        metrics.record_reconcile(result="success", seconds=0.02)
    metrics.record_reconcile(result="temporary_error", seconds=0.5, reason="ApiUnavailable")
    metrics.record_reconcile(result="permanent_error", seconds=0.05, reason="DoesNotFit")
    metrics.record_engine_build(result="succeeded", seconds=640)
    metrics.record_engine_build(result="failed", seconds=95, reason="EngineBuildFailed")


def per_pod(prom: Prometheus, signal: str) -> list[float]:
    s = SIGNALS[signal]
    query = observability.adapter_query(s, namespace=NAMESPACE, pods=[POD])
    return [float(r["value"][1]) for r in prom.query(query)]


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("prometheus-tier")
    obs = Observed()
    metrics.reset_for_tests()
    record_operator_scenario()
    op_server, _ = metrics.start_metrics_server(0, addr="127.0.0.1")
    triton = TritonServer(work / "triton", token_seconds=0.01)
    fake = FakeTritonExporter()
    prom = Prometheus(
        work / "prometheus",
        jobs=[
            ScrapeJob("triton", triton.metrics_port, POD_LABELS),
            ScrapeJob("trtllm-backend", fake.port, POD_LABELS),
            ScrapeJob("chatmodel-operator", op_server.server_port, honor_labels=True),
        ],
        rule_groups=observability.rule_groups(signals_interval="1s", alerts_interval="1s"),
    )
    try:
        triton.start()
        prom.start()
        # Prometheus hands new targets to the scraper after up to 5 s; then two scrapes.
        prom.wait_until(
            "all targets up",
            lambda: all(prom.targets_up().values()) and len(prom.targets_up()) == 3,
            20,
        )
        prom.wait_until(
            "idle signals recorded",
            lambda: prom.value("chatmodel:queue_to_compute_ratio") is not None,
            15,
        )
        obs.idle_before = {s.metric: prom.value(s.record) for s in SIGNALS.values()}
        record_operator_events()

        ratio_target = DEFAULT_TARGETS["queue-to-compute-ratio"]
        load = Load(
            triton.grpc_port,
            concurrency=CONCURRENCY,
            max_requests=3000,
            max_seconds=40,
            on_first_token=fake.observe_first_token,
        )
        with load, following_in_flight(fake, load):
            prom.wait_until(
                "signals over target under load",
                lambda: (
                    all(v > ratio_target for v in per_pod(prom, "queue-to-compute-ratio"))
                    and all(v > 4 for v in per_pod(prom, "pending-requests"))
                ),
                20,
            )
            # Let every rate window of the dashboards fill with loaded samples.
            time.sleep(3)
            obs.loaded = {s: per_pod(prom, s) for s in SIGNALS}
            for where, expr in [*dashboard_exprs(), *rule_exprs()]:
                obs.results[where] = (expr, prom.query(expr))
            prom.wait_until(
                "alerts evaluated",
                lambda: any(
                    g["rules"][0].get("lastEvaluation", "").startswith("2") for g in prom.rules()
                ),
                10,
            )
            for group in prom.rules():
                for rule in group["rules"]:
                    obs.rule_health.append(
                        (rule["name"], rule["health"], rule.get("lastError", ""))
                    )
                    if rule["type"] == "alerting":
                        obs.alerts[rule["name"]] = {
                            (
                                a["labels"].get("chatmodel", a["labels"].get("result", "")),
                                a["state"],
                            )
                            for a in rule.get("alerts", [])
                        }
        stats = load.stats
        obs.completed, obs.errors = stats.completed, stats.errors
        stopped = time.monotonic()
        prom.wait_until(
            "signals back to idle",
            lambda: (
                per_pod(prom, "queue-to-compute-ratio") == [0.0]
                and per_pod(prom, "pending-requests") == [0.0]
            ),
            15,
        )
        obs.down_seconds = time.monotonic() - stopped
        obs.idle_after = {s: per_pod(prom, s) for s in SIGNALS}
        yield obs
    finally:
        prom.stop()
        triton.stop()
        fake.stop()
        op_server.shutdown()
        metrics.reset_for_tests()


def _has_data(results: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in results)


def test_load_ran_against_real_triton(observed: Observed) -> None:
    assert observed.completed > 50
    assert observed.errors == 0


def test_every_dashboard_expression_returns_data(observed: Observed) -> None:
    empty = {
        where: expr
        for where, expr in dashboard_exprs()
        if not _has_data(observed.results[where][1])
    }
    assert empty == {}


def test_every_rule_adapter_and_keda_expression_returns_data(observed: Observed) -> None:
    empty = {
        where: expr for where, expr in rule_exprs() if not _has_data(observed.results[where][1])
    }
    assert empty == {}


def test_rules_evaluate_without_errors(observed: Observed) -> None:
    names = {name for name, _, _ in observed.rule_health}
    assert names == {
        *(s.record for s in SIGNALS.values()),
        *(r["alert"] for r in observability.alerting_rules()),
    }
    bad = [(n, h, e) for n, h, e in observed.rule_health if h != "ok" or e]
    assert bad == []


def test_alerts_reach_the_expected_state(observed: Observed) -> None:
    # for: 0 -> firing at once; the others wait out their `for` (30m, 15m) in pending.
    assert observed.alerts["ChatModelEngineBuildFailed"] == {("failed", "firing")}
    assert observed.alerts["ChatModelNotReady"] == {("broken", "pending")}
    # "chat" is at maxReplicas (1) with the queue-to-compute ratio above its target.
    assert observed.alerts["ChatModelSaturatedAtMaxReplicas"] == {(CHATMODEL, "pending")}


def test_signals_follow_the_load(observed: Observed) -> None:
    assert observed.idle_before["queue-to-compute-ratio"] == 0
    assert observed.idle_before["pending-requests"] == 0
    # One instance and 8 clients: about 7 requests queue behind the one computing.
    assert observed.loaded["queue-to-compute-ratio"][0] > 3
    assert observed.loaded["pending-requests"][0] >= 5
    assert 0 < observed.loaded["kv-cache-utilization"][0] <= 1
    assert observed.idle_after["queue-to-compute-ratio"] == [0.0]
    assert observed.idle_after["pending-requests"] == [0.0]
    assert observed.down_seconds < 10


@pytest.mark.parametrize("signal", ["queue-to-compute-ratio", "pending-requests"])
def test_hpa_formula_on_measured_signal(observed: Observed, signal: str) -> None:
    target = DEFAULT_TARGETS[signal]

    def desired(values: list[float], current: int) -> int:
        return hpa.desired_replicas(
            current=current,
            per_pod_values=values,
            target=target,
            min_replicas=1,
            max_replicas=MAX_REPLICAS,
        )

    loaded = desired(observed.loaded[signal], current=1)
    assert loaded > 1, (signal, observed.loaded[signal])
    assert loaded == min(MAX_REPLICAS, math.ceil(observed.loaded[signal][0] / target))
    assert desired(observed.idle_after[signal], current=1) == 1
    assert desired(observed.idle_after[signal], current=loaded) == 1


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = promtool_binary()
    assert binary is not None
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", "rules.yaml", cwd=REPO / "monitoring")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SIGNALS) + 3} rules found" in result.stdout


def test_promtool_check_prometheusrule_spec(tmp_path: Path) -> None:
    obj = yaml.safe_load((REPO / "monitoring/prometheusrule.yaml").read_text(encoding="utf-8"))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(obj["spec"]))
    result = _promtool("check", "rules", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "rules.test.yaml", cwd=REPO / "monitoring")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
