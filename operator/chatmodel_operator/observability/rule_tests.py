"""promtool unit tests for the recording and alerting rules, as data (pure).

``promtool test rules monitoring/rules.test.yaml`` evaluates the real rule expressions over
synthetic series. The numbers are worked out by hand in the comments, not computed from the
rules, so a wrong expression fails here.
"""

from __future__ import annotations

import re
from typing import Any

from chatmodel_operator.observability import rules

RULES_FILE = "rules.yaml"
# Triton pods are scraped every 5 s in production; 15 s keeps the tests short and still puts
# several samples in each irate range.
STEP = "15s"


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _pod(pod: str, model: str, chatmodel: str = "chat") -> dict[str, str]:
    return {"namespace": "ns", "pod": pod, "chatmodel": chatmodel, "model": model, "version": "1"}


def _expand(template: str, labels: dict[str, str], value: str) -> str:
    """Prometheus' template expansion for the two forms our annotations use."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return out.replace("{{ $value }}", value)


def _alert(name: str) -> dict[str, Any]:
    return next(r for r in rules.alerting_rules() if r["alert"] == name)


def _expected(name: str, labels: dict[str, str], value: str = "") -> dict[str, Any]:
    rule = _alert(name)
    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": {k: _expand(v, labels, value) for k, v in rule["annotations"].items()},
    }


def _signal_test() -> dict[str, Any]:
    # Pod a: two Triton models. Per 15 s the queue counters grow by 2 s + 1 s and the compute
    # counters by 0.5 s + 0.5 s, so queue/compute = 3 s / 1 s = 3. Pending 3 + 1 in Triton
    # plus 2 waiting in the engine = 6.
    # Pod b: counters flat: ratio 0 (the clamp keeps 0/0 out); pending 0 in Triton, 3 in the
    # engine = 3.
    # Pod c: loaded for the first minute (ratio 3), then flat: irate drops to 0 one scrape later.
    series = [
        _series("nv_inference_queue_duration_us", _pod("a", "tensorrt_llm"), "0+2000000x20"),
        _series("nv_inference_queue_duration_us", _pod("a", "postprocessing"), "0+1000000x20"),
        _series("nv_inference_compute_infer_duration_us", _pod("a", "tensorrt_llm"), "0+500000x20"),
        _series(
            "nv_inference_compute_infer_duration_us", _pod("a", "postprocessing"), "0+500000x20"
        ),
        _series("nv_inference_pending_request_count", _pod("a", "tensorrt_llm"), "3x20"),
        _series("nv_inference_pending_request_count", _pod("a", "postprocessing"), "1x20"),
        _series("nv_inference_queue_duration_us", _pod("b", "tensorrt_llm"), "0x20"),
        _series("nv_inference_compute_infer_duration_us", _pod("b", "tensorrt_llm"), "0x20"),
        _series("nv_inference_pending_request_count", _pod("b", "tensorrt_llm"), "0x20"),
        # Requests waiting inside the engine count as pending: the TensorRT-LLM C++ backend's
        # "waiting" (not "active") on pod a, our Python engine's same gauge on pod b, counted
        # once although it also exports chatmodel_engine_waiting_requests.
        _series(
            "nv_trt_llm_request_metrics",
            {**_pod("a", "tensorrt_llm"), "request_type": "waiting"},
            "2x20",
        ),
        _series(
            "nv_trt_llm_request_metrics",
            {**_pod("a", "tensorrt_llm"), "request_type": "active"},
            "5x20",
        ),
        _series(
            "nv_trt_llm_request_metrics",
            {**_pod("b", "tensorrt_llm"), "request_type": "waiting"},
            "3x20",
        ),
        _series("chatmodel_engine_waiting_requests", _pod("b", "tensorrt_llm"), "3x20"),
        _series(
            "nv_inference_queue_duration_us", _pod("c", "tensorrt_llm"), "0+3000000x4 12000000x16"
        ),
        _series(
            "nv_inference_compute_infer_duration_us",
            _pod("c", "tensorrt_llm"),
            "0+1000000x4 4000000x16",
        ),
        # TensorRT-LLM C++ backend: only the "fraction" block type is a utilization.
        _series(
            "nv_trt_llm_kv_cache_block_metrics",
            {**_pod("a", "tensorrt_llm"), "kv_cache_block_type": "fraction"},
            "0.5x20",
        ),
        _series(
            "nv_trt_llm_kv_cache_block_metrics",
            {**_pod("a", "tensorrt_llm"), "kv_cache_block_type": "used"},
            "100x20",
        ),
    ]

    def sample(record: str, pod: str, value: float) -> dict[str, Any]:
        return {
            "labels": f'{record}{{namespace="ns",pod="{pod}",chatmodel="chat"}}',
            "value": value,
        }

    ratio = "chatmodel:queue_to_compute_ratio"
    return {
        "name": "load signals per pod",
        "interval": STEP,
        "input_series": series,
        "promql_expr_test": [
            {
                "expr": ratio,
                "eval_time": "1m",
                "exp_samples": [
                    sample(ratio, "a", 3),
                    sample(ratio, "b", 0),
                    sample(ratio, "c", 3),
                ],
            },
            # Pod c's last increase was at 1m: one scrape later irate reads 0 (a 1-minute rate
            # would still read 3 here, which is why the signal uses irate).
            {
                "expr": ratio,
                "eval_time": "1m30s",
                "exp_samples": [
                    sample(ratio, "a", 3),
                    sample(ratio, "b", 0),
                    sample(ratio, "c", 0),
                ],
            },
            {
                "expr": "chatmodel:pending_requests",
                "eval_time": "2m",
                "exp_samples": [
                    sample("chatmodel:pending_requests", "a", 6),
                    sample("chatmodel:pending_requests", "b", 3),
                ],
            },
            {
                "expr": "chatmodel:kv_cache_utilization",
                "eval_time": "2m",
                "exp_samples": [sample("chatmodel:kv_cache_utilization", "a", 0.5)],
            },
        ],
    }


def _alert_test() -> dict[str, Any]:
    n = 200  # samples: 50 minutes at 15 s

    def model(name: str) -> dict[str, str]:
        return {"namespace": "ns", "chatmodel": name}

    series = [
        # "broken" never becomes Ready; "fine" is Ready.
        _series("chatmodel_ready", model("broken"), f"0x{n}"),
        _series("chatmodel_ready", model("fine"), f"1x{n}"),
        # One build fails 5 minutes in (the series exists at 0 from start-up).
        _series("chatmodel_engine_builds_total", {"result": "failed"}, f"0x20 1x{n - 20}"),
        _series("chatmodel_engine_builds_total", {"result": "succeeded"}, f"0x{n}"),
    ]
    # Three autoscaled ChatModels with one pod each: "hot" is at maxReplicas and over target
    # (ratio 3 > 1), "roomy" is over target but below maxReplicas (the HPA still has room),
    # "calm" is at maxReplicas but under target (ratio 0.5 < 1). Only "hot" saturates.
    for name, desired, ratio_compute in (
        ("hot", 4, 1_000_000),
        ("roomy", 2, 1_000_000),
        ("calm", 4, 6_000_000),
    ):
        pod = {
            "namespace": "ns",
            "pod": f"{name}-0",
            "chatmodel": name,
            "model": "m",
            "version": "1",
        }
        series += [
            _series("nv_inference_queue_duration_us", pod, f"0+3000000x{n}"),
            _series("nv_inference_compute_infer_duration_us", pod, f"0+{ratio_compute}x{n}"),
            _series("chatmodel_replicas_desired", model(name), f"{desired}x{n}"),
            _series("chatmodel_autoscaling_max_replicas", model(name), f"4x{n}"),
            _series(
                "chatmodel_autoscaling_target",
                {**model(name), "metric": "queue-to-compute-ratio"},
                f"1x{n}",
            ),
        ]
    return {
        "name": "alerts",
        "interval": STEP,
        "input_series": series,
        "alert_rule_test": [
            # Not Ready for 20 minutes: still pending (for: 30m).
            {"alertname": "ChatModelNotReady", "eval_time": "20m", "exp_alerts": []},
            {
                "alertname": "ChatModelNotReady",
                "eval_time": "40m",
                "exp_alerts": [_expected("ChatModelNotReady", model("broken"))],
            },
            {"alertname": "ChatModelEngineBuildFailed", "eval_time": "4m", "exp_alerts": []},
            {
                "alertname": "ChatModelEngineBuildFailed",
                "eval_time": "10m",
                "exp_alerts": [_expected("ChatModelEngineBuildFailed", {"result": "failed"})],
            },
            # 40 minutes after the failure it has left the 30-minute window.
            {"alertname": "ChatModelEngineBuildFailed", "eval_time": "45m", "exp_alerts": []},
            {"alertname": "ChatModelSaturatedAtMaxReplicas", "eval_time": "10m", "exp_alerts": []},
            {
                "alertname": "ChatModelSaturatedAtMaxReplicas",
                "eval_time": "20m",
                "exp_alerts": [
                    _expected("ChatModelSaturatedAtMaxReplicas", model("hot"), value="4")
                ],
            },
        ],
    }


def rule_unit_tests() -> dict[str, Any]:
    return {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "5s",
        "tests": [_signal_test(), _alert_test()],
    }
