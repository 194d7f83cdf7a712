"""Grafana dashboards built in code with grafana-foundation-sdk (pure).

Two dashboards: "ChatModel serving" (per ChatModel traffic, latency, load signals, capacity)
and "chatmodel-operator" (the operator's own health). Every query is PromQL over series that
something exports: Triton (nv_*), the TensorRT-LLM C++ backend (nv_trt_llm_*, nv_llm_*), the
recording rules (chatmodel:*) and the operator (chatmodel_*). The Prometheus tests run each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from chatmodel_operator.observability.rules import signal_per_model
from chatmodel_operator.signals import CHATMODEL_LABEL, SIGNALS

SERVING_UID = "chatmodel-serving"
OPERATOR_UID = "chatmodel-operator"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Per-ChatModel selector used by every serving panel (dashboard variables below).
SEL = f'namespace=~"$namespace", {CHATMODEL_LABEL}=~"$chatmodel"'
BY_MODEL = f"namespace, {CHATMODEL_LABEL}"
# Triton serves several models per ChatModel (an ensemble and its steps, or a BLS model), so
# request-level series keep the Triton model label instead of adding them up twice.
BY_TRITON_MODEL = f"namespace, {CHATMODEL_LABEL}, model"
RATE = "$__rate_interval"
# Engine builds are rare events: a long window shows them at all.
BUILD_WINDOW = "6h"

_LEGEND_MODEL = "{{namespace}}/{{chatmodel}}"
_LEGEND_TRITON = "{{namespace}}/{{chatmodel}} {{model}}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _target(q: Query, ref: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(q.expr)
        .legend_format(q.legend)
        .ref_id(ref)
        .datasource(DATASOURCE)
        .range()
    )


def _legend() -> VizLegendOptions:
    return (
        VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
    )


def _series(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    width: int = 12,
    stack: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
        .legend(_legend())
        .line_width(1)
        .fill_opacity(10)
    )
    if stack:
        panel = panel.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    for i, q in enumerate(queries):
        panel = panel.with_target(_target(q, chr(ord("A") + i)))
    return panel


def _stat(title: str, description: str, unit: str, q: Query, width: int = 6) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
        .with_target(_target(q, "A"))
    )


def _datasource_var() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _query_var(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _quantile_summary(q: float) -> Query:
    # Triton's opt-in summary (--metrics-config summary_latencies=true) carries its own
    # quantiles per pod; the worst pod is the honest aggregate for a quantile.
    return Query(
        f"max by ({BY_TRITON_MODEL}) "
        f'(nv_inference_request_summary_us{{{SEL}, quantile="{q}"}}) / 1000',
        f"p{round(q * 100)} {_LEGEND_TRITON}",
    )


def _mean_latency() -> Query:
    # Counters every Triton exports, whatever its metrics config: the mean over the rate window
    # (no data while idle rather than a made-up zero).
    return Query(
        f"sum by ({BY_TRITON_MODEL}) (rate(nv_inference_request_duration_us{{{SEL}}}[{RATE}]))"
        f" / sum by ({BY_TRITON_MODEL}) "
        f"(rate(nv_inference_request_success{{{SEL}}}[{RATE}])) / 1000",
        f"mean {_LEGEND_TRITON}",
    )


# Histograms of time to first token and inter-token latency, in the order a panel prefers
# them: Triton's own (plain tritonserver pods with histogram_latencies), ours (our Python
# models time every layout's ensemble and BLS, on either frontend), vLLM's (seconds).
TTFT_HISTOGRAMS = (
    ("nv_inference_first_response_histogram_ms", 1),
    ("chatmodel_time_to_first_token_ms", 1),
    ("vllm:time_to_first_token_seconds", 1000),
)
ITL_HISTOGRAMS = (
    ("chatmodel_inter_token_latency_ms", 1),
    ("vllm:time_per_output_token_seconds", 1000),
)


def _quantile_of(q: float, histograms: tuple[tuple[str, int], ...]) -> Query:
    """One quantile from whichever of ``histograms`` a pod exports (PromQL ``or`` keeps the
    first for a model that has several), in milliseconds."""
    parts = []
    for name, scale in histograms:
        expr = (
            f"histogram_quantile({q}, sum by (le, {BY_TRITON_MODEL}) "
            f"(rate({name}_bucket{{{SEL}}}[{RATE}])))"
        )
        parts.append(expr if scale == 1 else f"{expr} * {scale}")
    return Query("\nor ".join(parts), f"p{round(q * 100)} {_LEGEND_TRITON}")


def _quantile_ttft(q: float) -> Query:
    return _quantile_of(q, TTFT_HISTOGRAMS)


def _quantile_itl(q: float) -> Query:
    return _quantile_of(q, ITL_HISTOGRAMS)


def _signal_panels() -> list[timeseries.Panel]:
    looks = {  # metric -> (panel title, unit)
        "queue-to-compute-ratio": ("Queue-to-compute ratio", "none"),
        "pending-requests": ("Pending requests", "short"),
        "kv-cache-utilization": ("KV-cache utilization", "percentunit"),
    }
    panels = []
    for s in SIGNALS.values():
        title, unit = looks.get(s.metric, (s.metric, "none"))
        panels.append(
            _series(
                f"{title} per replica",
                f"{s.description.capitalize()}; recorded as {s.record}, averaged over the "
                "ChatModel's pods as the HPA does, with the autoscaling target when the "
                "ChatModel scales on it.",
                unit,
                Query(signal_per_model(s, f"{{{SEL}}}"), _LEGEND_MODEL),
                Query(
                    f"max by ({BY_MODEL}) "
                    f'(chatmodel_autoscaling_target{{{SEL}, metric="{s.metric}"}})',
                    f"target {_LEGEND_MODEL}",
                ),
                width=8,
            )
        )
    return panels


def serving_dashboard() -> model.Dashboard:
    builder = (
        dash.Dashboard("ChatModel serving")
        .uid(SERVING_UID)
        .tags(["chatmodel", "triton", "llm"])
        .description(
            "Per ChatModel: traffic, latency, time to first token, tokens per second, the "
            "autoscaling load signals and capacity. Built by chatmodel_operator.observability."
        )
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_var())
        .with_variable(
            _query_var("namespace", "Namespace", "label_values(chatmodel_ready, namespace)")
        )
        .with_variable(
            _query_var(
                "chatmodel",
                "ChatModel",
                f'label_values(chatmodel_ready{{namespace=~"$namespace"}}, {CHATMODEL_LABEL})',
            )
        )
        .with_row(dash.Row("Traffic and latency"))
        .with_panel(
            _series(
                "Request rate",
                "Successful and failed requests per second per Triton model.",
                "reqps",
                Query(
                    f"sum by ({BY_TRITON_MODEL}) "
                    f"(rate(nv_inference_request_success{{{SEL}}}[{RATE}]))",
                    f"ok {_LEGEND_TRITON}",
                ),
                Query(
                    f"sum by ({BY_TRITON_MODEL}, reason) "
                    f"(rate(nv_inference_request_failure{{{SEL}}}[{RATE}]))",
                    "failed {{reason}} " + _LEGEND_TRITON,
                ),
            )
        )
        .with_panel(
            _series(
                "Request latency p50 / p95",
                "End-to-end request duration: p50 and p95 from Triton's latency summary "
                "(needs --metrics-config summary_latencies=true, which plain tritonserver "
                "pods set and Triton's OpenAI frontend does not), and the mean from Triton's "
                "always-on duration counters.",
                "ms",
                _quantile_summary(0.5),
                _quantile_summary(0.95),
                _mean_latency(),
            )
        )
        .with_panel(
            _series(
                "Time to first token p50 / p95",
                "Request to first generated token: Triton's "
                "nv_inference_first_response_histogram_ms where it is on (plain tritonserver "
                "pods, --metrics-config histogram_latencies=true), else "
                "chatmodel_time_to_first_token_ms from our models (every layout, both "
                "frontends), else vLLM's vllm:time_to_first_token_seconds.",
                "ms",
                _quantile_ttft(0.5),
                _quantile_ttft(0.95),
            )
        )
        .with_panel(
            _series(
                "Inter-token latency p50 / p95",
                "Time between a request's generated tokens after the first: "
                "chatmodel_inter_token_latency_ms from our models, else vLLM's "
                "vllm:time_per_output_token_seconds.",
                "ms",
                _quantile_itl(0.5),
                _quantile_itl(0.95),
            )
        )
        .with_panel(
            _series(
                "Output tokens per second",
                "Generated tokens per second: nv_llm_output_token_len from the TensorRT-LLM "
                "C++ backend, or chatmodel_engine_generated_tokens_total from our Python engine.",
                "short",
                Query(
                    f"sum by ({BY_MODEL}) (rate(nv_llm_output_token_len_sum"
                    f'{{{SEL}, response_metric_type="total_output_tokens"}}[{RATE}]))\n'
                    f"or sum by ({BY_MODEL}) "
                    f"(rate(chatmodel_engine_generated_tokens_total{{{SEL}}}[{RATE}]))",
                    _LEGEND_MODEL,
                ),
            )
        )
        .with_row(dash.Row("Load signals (autoscaling)"))
    )
    for panel in _signal_panels():
        builder = builder.with_panel(panel)
    builder = (
        builder.with_row(dash.Row("Capacity"))
        .with_panel(
            _series(
                "Replicas",
                "Replicas the Deployment asks for, those Ready, and autoscaling.maxReplicas.",
                "short",
                Query(
                    f"max by ({BY_MODEL}) (chatmodel_replicas_desired{{{SEL}}})",
                    "desired " + _LEGEND_MODEL,
                ),
                Query(
                    f"max by ({BY_MODEL}) (chatmodel_replicas_ready{{{SEL}}})",
                    "ready " + _LEGEND_MODEL,
                ),
                Query(
                    f"max by ({BY_MODEL}) (chatmodel_autoscaling_max_replicas{{{SEL}}})",
                    "max " + _LEGEND_MODEL,
                ),
            )
        )
        .with_panel(
            _series(
                "GPUs requested",
                "GPUs requested by each ChatModel's pods (replicas times GPUs per replica, plus "
                "a running engine build).",
                "short",
                Query(f"sum by ({BY_MODEL}) (chatmodel_gpus_requested{{{SEL}}})", _LEGEND_MODEL),
                stack=True,
            )
        )
    )
    return builder.build()


def operator_dashboard() -> model.Dashboard:
    by_result = "sum by (result) "
    return (
        dash.Dashboard("chatmodel-operator")
        .uid(OPERATOR_UID)
        .tags(["chatmodel", "operator"])
        .description(
            "The chatmodel-operator itself: reconciles, errors, durations, ChatModels by phase "
            "and engine builds. Built by chatmodel_operator.observability."
        )
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_var())
        .with_row(dash.Row("Overview"))
        .with_panel(
            _stat(
                "ChatModels",
                "ChatModels the operator knows.",
                "short",
                Query("sum(chatmodel_chatmodels)", "ChatModels"),
            )
        )
        .with_panel(
            _stat(
                "Not Ready",
                "ChatModels whose Ready condition is False.",
                "short",
                Query("sum(1 - chatmodel_ready)", "not Ready"),
            )
        )
        .with_panel(
            _stat(
                "GPUs requested",
                "GPUs requested by all ChatModels' pods.",
                "short",
                Query("sum(chatmodel_gpus_requested)", "GPUs"),
            )
        )
        .with_panel(
            _stat(
                "Failed builds (6h)",
                "Engine build Jobs that failed in the last 6 hours.",
                "short",
                Query(
                    f'sum(increase(chatmodel_engine_builds_total{{result="failed"}}[{BUILD_WINDOW}]))',
                    "failed",
                ),
            )
        )
        .with_row(dash.Row("Reconciles"))
        .with_panel(
            _series(
                "Reconciles",
                "Reconcile passes per second by result.",
                "ops",
                Query(f"{by_result}(rate(chatmodel_reconciles_total[{RATE}]))", "{{result}}"),
                width=8,
            )
        )
        .with_panel(
            _series(
                "Reconcile errors",
                "Failed reconcile passes per second by the error's reason.",
                "ops",
                Query(
                    f"sum by (reason) (rate(chatmodel_reconcile_errors_total[{RATE}]))",
                    "{{reason}}",
                ),
                width=8,
            )
        )
        .with_panel(
            _series(
                "Reconcile duration p50 / p95",
                "Wall time of a reconcile pass by result.",
                "s",
                Query(
                    "histogram_quantile(0.5, sum by (le, result) "
                    f"(rate(chatmodel_reconcile_duration_seconds_bucket[{RATE}])))",
                    "p50 {{result}}",
                ),
                Query(
                    "histogram_quantile(0.95, sum by (le, result) "
                    f"(rate(chatmodel_reconcile_duration_seconds_bucket[{RATE}])))",
                    "p95 {{result}}",
                ),
                width=8,
            )
        )
        .with_row(dash.Row("ChatModels and engine builds"))
        .with_panel(
            _series(
                "ChatModels by phase",
                "ChatModels by status.phase.",
                "short",
                Query("sum by (phase) (chatmodel_chatmodels)", "{{phase}}"),
                width=8,
                stack=True,
            )
        )
        .with_panel(
            _series(
                "Engine builds",
                f"Engine build Jobs finished in the last {BUILD_WINDOW} by result, and failures "
                "by reason.",
                "short",
                Query(
                    f"{by_result}(increase(chatmodel_engine_builds_total[{BUILD_WINDOW}]))",
                    "{{result}}",
                ),
                Query(
                    "sum by (reason) "
                    f"(increase(chatmodel_engine_build_failures_total[{BUILD_WINDOW}]))",
                    "failed: {{reason}}",
                ),
                width=8,
            )
        )
        .with_panel(
            _series(
                "Engine build duration p50 / p95",
                f"Wall time of engine build Jobs finished in the last {BUILD_WINDOW}.",
                "s",
                Query(
                    "histogram_quantile(0.5, sum by (le, result) "
                    f"(increase(chatmodel_engine_build_duration_seconds_bucket[{BUILD_WINDOW}])))",
                    "p50 {{result}}",
                ),
                Query(
                    "histogram_quantile(0.95, sum by (le, result) "
                    f"(increase(chatmodel_engine_build_duration_seconds_bucket[{BUILD_WINDOW}])))",
                    "p95 {{result}}",
                ),
                width=8,
            )
        )
        .build()
    )


def to_json(d: model.Dashboard) -> str:
    """Deterministic JSON: sorted keys, so the committed files diff cleanly."""
    obj = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(d))
    # Stable panel ids (the SDK leaves them unset or 0): Grafana links and alerts refer to them.
    for i, panel in enumerate(obj.get("panels", []), start=1):
        panel["id"] = i
    return json.dumps(obj, sort_keys=True, indent=2) + "\n"


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON object."""
    return {
        "chatmodel-serving.json": json.loads(to_json(serving_dashboard())),
        "chatmodel-operator.json": json.loads(to_json(operator_dashboard())),
    }


def expressions(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Every PromQL expression in a dashboard JSON: (where, expr), panels and variables."""
    found: list[tuple[str, str]] = []
    for panel in d.get("panels", []):
        for target in panel.get("targets", []) or []:
            if "expr" in target:
                found.append(
                    (f"{d['title']} / {panel.get('title')} / {target['refId']}", target["expr"])
                )
    for var in d.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            text = query if isinstance(query, str) else query.get("query", "")
            found.append((f"{d['title']} / ${var['name']}", text))
    return found
