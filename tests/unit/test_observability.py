"""Monitoring as code: committed files are fresh, names resolve, dashboards, rules, adapter, HPA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from chatmodel_operator import metrics, observability
from chatmodel_operator.observability import hpa, rules
from chatmodel_operator.observability.__main__ import main as generator_main
from chatmodel_operator.signals import SIGNALS

REPO = Path(__file__).resolve().parents[2]

# Metric families exported by something other than the operator, with who exports them.
TRITON = {  # Triton core, per model (SRV docs/user_guide/metrics.md)
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
    # opt-in: --metrics-config summary_latencies=true / histogram_latencies=true
    "nv_inference_request_summary_us",
    "nv_inference_first_response_histogram_ms_bucket",
}
TRTLLM = {  # TensorRT-LLM C++ backend custom metrics
    "nv_trt_llm_kv_cache_block_metrics",
    "nv_trt_llm_request_metrics",
    "nv_llm_output_token_len_sum",
}
# Our Python engine's custom metrics: checked against its source below.
PYTHON_ENGINE = {"chatmodel_engine_waiting_requests", "chatmodel_engine_generated_tokens_total"}
# Our models' latency histograms (postprocessing for the ensemble, the BLS), every layout:
# declared in the helpers module shipped next to them, checked below.
LATENCY = {"chatmodel_time_to_first_token_ms", "chatmodel_inter_token_latency_ms"}
RECORDED = {s.record for s in SIGNALS.values()}

NAME = re.compile(r"\b(nv_[a-z0-9_]+|chatmodel_[a-z0-9_]+|chatmodel:[a-z0-9_:]+)")


def operator_series_names() -> set[str]:
    metrics.reset_for_tests()
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    # Gauges that exist once a ChatModel is observed.
    names |= {
        "chatmodel_ready",
        "chatmodel_gpus_requested",
        "chatmodel_replicas_desired",
        "chatmodel_replicas_ready",
        "chatmodel_autoscaling_min_replicas",
        "chatmodel_autoscaling_max_replicas",
        "chatmodel_autoscaling_target",
        "chatmodel_reconcile_errors_total",
        "chatmodel_engine_build_failures_total",
    }
    return names


def all_expressions() -> list[tuple[str, str]]:
    found = []
    for board in observability.dashboards().values():
        found += observability.expressions(board)
    for group in observability.rule_groups():
        for rule in group["rules"]:
            found.append((rule.get("record") or rule["alert"], rule["expr"]))
    for s in SIGNALS.values():
        found.append(
            (f"adapter {s.hpa_metric}", observability.adapter_query(s, namespace="n", pods=["p"]))
        )
        found.append((f"keda {s.metric}", s.keda_query("n", "m")))
    return found


def test_committed_files_are_fresh() -> None:
    stale = [
        rel
        for rel, text in observability.generated_files().items()
        if not (REPO / rel).exists() or (REPO / rel).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `python -m chatmodel_operator.observability`"


def test_generator_writes_and_checks(tmp_path: Path) -> None:
    assert generator_main(["--root", str(tmp_path), "--check"]) == 1
    assert generator_main(["--root", str(tmp_path)]) == 0
    assert generator_main(["--root", str(tmp_path), "--check"]) == 0
    assert (tmp_path / "monitoring/dashboards/chatmodel-serving.json").exists()


def test_every_expression_names_an_exported_metric() -> None:
    known = operator_series_names() | TRITON | TRTLLM | PYTHON_ENGINE | RECORDED
    known |= {f"{name}_bucket" for name in LATENCY}
    unknown = {
        (where, name)
        for where, expr in all_expressions()
        for name in NAME.findall(expr)
        if name not in known
    }
    assert unknown == set()


def test_python_engine_exports_the_families_the_signals_read() -> None:
    source = (REPO / "model_repository/python_engine/1/model.py").read_text(encoding="utf-8")
    for name in PYTHON_ENGINE:
        assert f'"{name}"' in source, name


def test_our_models_declare_the_latency_histograms_the_dashboard_reads() -> None:
    helpers = (REPO / "model_repository/common/chatmodel_helpers.py").read_text(encoding="utf-8")
    for name in LATENCY:
        assert f'"{name}"' in helpers, name
    # A histogram's series, sent as counters (tests/unit/test_token_latency.py).
    assert '("_bucket", "_sum", "_count")' in helpers
    for model in ("postprocessing", "tensorrt_llm_bls"):
        source = (REPO / f"model_repository/{model}/1/model.py").read_text(encoding="utf-8")
        assert "chatmodel_helpers.TokenLatency(" in source, model


def test_serving_dashboard_has_every_panel_the_issue_asks_for() -> None:
    board = observability.dashboards()["chatmodel-serving.json"]
    titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
    assert titles == [
        "Request rate",
        "Request latency p50 / p95",
        "Time to first token p50 / p95",
        "Inter-token latency p50 / p95",
        "Output tokens per second",
        "Queue-to-compute ratio per replica",
        "Pending requests per replica",
        "KV-cache utilization per replica",
        "Replicas",
        "GPUs requested",
    ]
    exprs = " ".join(e for _, e in observability.expressions(board))
    assert "nv_inference_first_response_histogram_ms_bucket" in exprs
    # Triton's OpenAI frontend enables no histogram of Triton's own: ours, or vLLM's, instead.
    for name in (*LATENCY, "vllm:time_to_first_token_seconds"):
        assert f"(rate({name}_bucket{{" in exprs, name
    assert 'quantile="0.95"' in exprs
    for s in SIGNALS.values():
        assert s.record in exprs


def test_operator_dashboard_covers_reconciles_errors_durations_phases_builds() -> None:
    board = observability.dashboards()["chatmodel-operator.json"]
    exprs = " ".join(e for _, e in observability.expressions(board))
    for name in (
        "chatmodel_reconciles_total",
        "chatmodel_reconcile_errors_total",
        "chatmodel_reconcile_duration_seconds_bucket",
        "chatmodel_chatmodels",
        "chatmodel_engine_builds_total",
        "chatmodel_engine_build_failures_total",
        "chatmodel_engine_build_duration_seconds_bucket",
    ):
        assert name in exprs


@pytest.mark.parametrize("filename", ["chatmodel-serving.json", "chatmodel-operator.json"])
def test_dashboard_shape(filename: str) -> None:
    board = observability.dashboards()[filename]
    assert board["uid"] == filename.removesuffix(".json")
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["w"] <= 24


def test_dashboard_configmaps_for_the_grafana_sidecar() -> None:
    cms = observability.dashboard_configmaps(namespace="monitoring", labels={"release": "x"})
    assert [c["metadata"]["name"] for c in cms] == [
        "chatmodel-serving-dashboard",
        "chatmodel-operator-dashboard",
    ]
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["labels"]["release"] == "x"
        assert cm["metadata"]["namespace"] == "monitoring"
        ((key, text),) = cm["data"].items()
        assert json.loads(text)["uid"] == key.removesuffix(".json")
    # Fresh dicts each call: callers may mutate what they get.
    cms[0]["metadata"]["labels"]["x"] = "y"
    assert "x" not in observability.dashboard_configmaps()[0]["metadata"]["labels"]
    assert "namespace" not in observability.dashboard_configmaps()[0]["metadata"]


def test_prometheus_rule_object() -> None:
    obj = observability.build_prometheus_rule(namespace="monitoring")
    assert obj["kind"] == "PrometheusRule"
    groups = obj["spec"]["groups"]
    assert [g["name"] for g in groups] == [rules.SIGNALS_GROUP, rules.ALERTS_GROUP]
    assert [r["record"] for r in groups[0]["rules"]] == [s.record for s in SIGNALS.values()]
    assert [r["alert"] for r in groups[1]["rules"]] == [
        "ChatModelNotReady",
        "ChatModelEngineBuildFailed",
        "ChatModelSaturatedAtMaxReplicas",
    ]
    # The saturation alert covers every signal a ChatModel can scale on.
    saturation = groups[1]["rules"][2]["expr"]
    for s in SIGNALS.values():
        assert f'metric="{s.metric}"' in saturation
    # The committed YAML parses back to the same object.
    text = (REPO / "monitoring/prometheusrule.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text)["spec"] == obj["spec"]


def test_adapter_rules_serve_the_hpa_metric_names() -> None:
    values = observability.adapter_values()
    by_name = {r["name"]["as"]: r for r in values["rules"]["custom"]}
    assert set(by_name) == {s.hpa_metric for s in SIGNALS.values()}
    for s in SIGNALS.values():
        rule = by_name[s.hpa_metric]
        assert rule["seriesQuery"].startswith(s.record + "{")
        assert re.fullmatch(rule["name"]["matches"], s.record)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    s = SIGNALS["pending-requests"]
    assert observability.adapter_query(s, namespace="ns", pods=["a", "b"]) == (
        'max by (pod) (chatmodel:pending_requests{namespace="ns",pod=~"a|b"})'
    )


@pytest.mark.parametrize(
    ("current", "values", "target", "expected"),
    [
        (1, [0.0], 1.0, 1),  # idle: minReplicas
        (3, [0.0, 0.0, 0.0], 1.0, 1),  # idle at 3: back to min
        (1, [3.0], 1.0, 3),  # ratio 3 on one pod: ceil(1 * 3) = 3
        (2, [2.5, 1.5], 1.0, 4),  # average 2: ceil(2 * 2) = 4
        (2, [1.05, 1.05], 1.0, 2),  # within the 10% tolerance: no change
        (1, [9.0], 1.0, 4),  # clamped to maxReplicas
        (2, [6.0, 2.0], 4.0, 2),  # pending 4 per replica at target 4: stay
        (2, [0.9, 0.9], 0.8, 3),  # KV 90% vs 80%: 1.125 is past the tolerance, ceil(2.25)
        (2, [], 1.0, 2),  # no metrics: no change
    ],
    ids=["idle", "idle-at-3", "loaded", "average", "tolerance", "max", "pending", "kv", "none"],
)
def test_hpa_formula(current: int, values: list[float], target: float, expected: int) -> None:
    got = hpa.desired_replicas(
        current=current, per_pod_values=values, target=target, min_replicas=1, max_replicas=4
    )
    assert got == expected


def test_signal_panel_uses_the_same_average_as_keda() -> None:
    s = SIGNALS["queue-to-compute-ratio"]
    assert rules.signal_per_model(s).startswith("avg by (namespace, chatmodel)")
    assert s.keda_query("ns", "m").startswith("avg(")
