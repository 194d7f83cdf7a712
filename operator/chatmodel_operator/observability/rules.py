"""Recording and alerting rules, as data (pure).

The recording rules are the load signals of ``signals.SIGNALS``, evaluated per pod so that
prometheus-adapter can serve them to a ``Pods`` HPA metric and KEDA can average them. The alerts
read the operator's own ``chatmodel_*`` metrics (metrics.py) and the recorded signals.
"""

from __future__ import annotations

from typing import Any

from chatmodel_operator.signals import CHATMODEL_LABEL, SIGNALS, LoadSignal

SIGNALS_GROUP = "chatmodel-signals"
ALERTS_GROUP = "chatmodel-alerts"
# The signals are evaluated every second although Triton is scraped every 5 s: the evaluation
# interval adds straight to the lag between a load step and the HPA seeing it (bench/autoscale.py:
# 1.3 scrape intervals up at 5 s, 1.1 at 1 s), and three rules over a few series per pod cost
# next to nothing (about 1.5 MB of TSDB per pod and day).
SIGNALS_INTERVAL = "1s"
ALERTS_INTERVAL = "30s"

NOT_READY_FOR = "30m"
BUILD_FAILURE_WINDOW = "30m"
SATURATED_FOR = "15m"

_PER_MODEL = f"namespace, {CHATMODEL_LABEL}"


def signal_per_model(signal: LoadSignal, selector: str = "") -> str:
    """The signal averaged over a ChatModel's pods: what an AverageValue target compares."""
    return f"avg by ({_PER_MODEL}) ({signal.record}{selector})"


def _saturation_expr() -> str:
    # At maxReplicas and still over target on the signal the ChatModel scales on. Each signal
    # is compared with the target the operator exports for that metric, so only the chosen
    # signal can match (chatmodel_autoscaling_target has one metric per ChatModel).
    over_target = "\n  or\n".join(
        f"  {signal_per_model(s)}\n"
        f"  > on ({_PER_MODEL})\n"
        f'  max by ({_PER_MODEL}) (chatmodel_autoscaling_target{{metric="{s.metric}"}})'
        for s in SIGNALS.values()
    )
    return (
        f"max by ({_PER_MODEL}) (chatmodel_replicas_desired)\n"
        f">= on ({_PER_MODEL})\n"
        f"max by ({_PER_MODEL}) (chatmodel_autoscaling_max_replicas)\n"
        f"and on ({_PER_MODEL})\n"
        f"(\n{over_target}\n)"
    )


def recording_rules() -> list[dict[str, Any]]:
    return [
        {
            "record": s.record,
            "expr": s.expr,
        }
        for s in SIGNALS.values()
    ]


def alerting_rules() -> list[dict[str, Any]]:
    return [
        {
            "alert": "ChatModelNotReady",
            "expr": "chatmodel_ready == 0",
            # Long enough for a first engine build of a mid-size model; a failed build shows
            # up sooner through ChatModelEngineBuildFailed.
            "for": NOT_READY_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "ChatModel {{ $labels.namespace }}/{{ $labels.chatmodel }} is not Ready",
                "description": (
                    "The Ready condition of ChatModel {{ $labels.namespace }}/"
                    "{{ $labels.chatmodel }} has been False for more than "
                    f"{NOT_READY_FOR}. See `kubectl describe chatmodel -n "
                    "{{ $labels.namespace }} {{ $labels.chatmodel }}` for the condition "
                    "messages and Events."
                ),
            },
        },
        {
            "alert": "ChatModelEngineBuildFailed",
            # The by-result counter, not the by-reason one: its series exist at zero from
            # start-up, so increase() sees the first failure (a new label value would start
            # at 1 and increase() would read 0).
            "expr": (
                f'increase(chatmodel_engine_builds_total{{result="failed"}}[{BUILD_FAILURE_WINDOW}])'
                " > 0"
            ),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Engine builds are failing",
                "description": (
                    f"Engine build Jobs failed in the last {BUILD_FAILURE_WINDOW}. "
                    "chatmodel_engine_build_failures_total has the reasons; the failing "
                    "ChatModel's EngineReady condition and Events have the message."
                ),
            },
        },
        {
            "alert": "ChatModelSaturatedAtMaxReplicas",
            "expr": _saturation_expr(),
            "for": SATURATED_FOR,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "ChatModel {{ $labels.namespace }}/{{ $labels.chatmodel }} is saturated "
                    "at maxReplicas"
                ),
                "description": (
                    "ChatModel {{ $labels.namespace }}/{{ $labels.chatmodel }} runs "
                    "{{ $value }} replicas, its autoscaling.maxReplicas, and its load signal "
                    f"has stayed above the target for {SATURATED_FOR}: raise maxReplicas or "
                    "add GPUs."
                ),
            },
        },
    ]


def rule_groups(
    *, signals_interval: str = SIGNALS_INTERVAL, alerts_interval: str = ALERTS_INTERVAL
) -> list[dict[str, Any]]:
    """Rule groups in Prometheus' own format (also the PrometheusRule spec).

    The intervals are parameters only so tests can run a Prometheus at a faster clock.
    """
    return [
        {"name": SIGNALS_GROUP, "interval": signals_interval, "rules": recording_rules()},
        {"name": ALERTS_GROUP, "interval": alerts_interval, "rules": alerting_rules()},
    ]


def build_prometheus_rule(
    *, name: str = "chatmodel", namespace: str | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The PrometheusRule object the chart ships (prometheus-operator)."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "chatmodel-operator",
            "app.kubernetes.io/component": "monitoring",
            **(labels or {}),
        },
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": rule_groups()},
    }
