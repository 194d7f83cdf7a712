"""Load signals that drive autoscaling, declared once (pure).

Prometheus computes them with recording rules from the Triton pods' own metrics (see
docs/metrics.md: why recording rules rather than operator scraping); prometheus-adapter exposes
the per-pod series to the HPA under ``hpa_metric``, and KEDA queries ``keda_query`` directly. The
PrometheusRule, the adapter rules, the HPA and the dashboards are all built from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

# The pods carry this label, so every series can be grouped per ChatModel.
CHATMODEL_LABEL = "chatmodel"


@dataclass(frozen=True)
class LoadSignal:
    metric: str  # spec.autoscaling.metric value
    record: str  # recording rule name (per pod)
    expr: str  # PromQL over Triton's metrics, per pod
    hpa_metric: str  # name under the custom metrics API
    description: str
    needs: tuple[str, ...]  # Triton metric families the expression reads

    def keda_query(self, namespace: str, chatmodel: str) -> str:
        """Average over a ChatModel's pods, which is what an AverageValue target compares."""
        return f'avg({self.record}{{namespace="{namespace}",{CHATMODEL_LABEL}="{chatmodel}"}})'


# The llm-d router's (EPP's) own gauge of requests held in its flow-control queue, labelled
# with the InferencePool it serves (llm-d-router docs/metrics.md; the KEDA signal of llm-d's
# workload-autoscaling guide). It is the only load signal left at zero replicas.
ROUTER_QUEUE_METRIC = "llm_d_epp_flow_control_queue_size"


def router_queue_query(pool: str) -> str:
    """Requests the router holds for ``pool``, summed over priorities and router replicas.
    The series exists only while the router has queued something for the pool (and not at
    all with no pods behind it), so the query falls back to 0 instead of going absent: KEDA
    reads an absent result as an error or its fallback, never as "idle"."""
    return f'sum({ROUTER_QUEUE_METRIC}{{inference_pool="{pool}"}}) or vector(0)'


_BY = f"namespace, pod, {CHATMODEL_LABEL}"
# irate (the last two scrapes) rather than NVIDIA's rate(...[1m]): a 1-minute rate keeps the
# ratio high for a minute after the load stops, whereas irate follows a step within about two
# scrape intervals each way (bench/autoscale.py measures it). Its noise is absorbed by the HPA's
# scale-down stabilization window; the range only bounds how far back the two samples may lie.
_WINDOW = "1m"
# Our Python and llmapi engines export nv_trt_llm_request_metrics{request_type="waiting"} as the
# C++ backend does (for the llm-d router), so the Python engine's own
# chatmodel_engine_waiting_requests is not added again.
_PENDING_FAMILIES = (
    "nv_inference_pending_request_count",
    "nv_trt_llm_request_metrics",
)

SIGNALS: dict[str, LoadSignal] = {
    s.metric: s
    for s in (
        LoadSignal(
            metric="queue-to-compute-ratio",
            record="chatmodel:queue_to_compute_ratio",
            expr=(
                f"sum by ({_BY}) (irate(nv_inference_queue_duration_us[{_WINDOW}])) / clamp_min("
                f"sum by ({_BY}) (irate(nv_inference_compute_infer_duration_us[{_WINDOW}])), 1)"
            ),
            hpa_metric="chatmodel_queue_to_compute_ratio",
            description="time requests wait in Triton's queues over time spent computing",
            needs=("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"),
        ),
        LoadSignal(
            metric="pending-requests",
            record="chatmodel:pending_requests",
            # In-flight batching engines take every request off Triton's queue at once and
            # queue it themselves, so Triton's pending count stays 0 under load: add the
            # engine's own waiting requests (request_type="waiting", from the TensorRT-LLM C++
            # backend and our Python and llmapi engines alike). The empty alternative in
            # request_type=~"|waiting" keeps Triton's family, which has no such label.
            expr=(
                f"sum by ({_BY}) ({{__name__=~"
                f'"{"|".join(_PENDING_FAMILIES)}", request_type=~"|waiting"}})'
            ),
            hpa_metric="chatmodel_pending_requests",
            description=(
                "requests received but not yet started: in Triton's queues or in the engine's"
            ),
            needs=_PENDING_FAMILIES,
        ),
        LoadSignal(
            metric="kv-cache-utilization",
            record="chatmodel:kv_cache_utilization",
            expr=(
                f"max by ({_BY}) "
                '(nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"})'
            ),
            hpa_metric="chatmodel_kv_cache_utilization",
            description=(
                "fraction of the paged KV cache in use (TensorRT-LLM's C++ backend, and our "
                "Python and llmapi engines)"
            ),
            needs=("nv_trt_llm_kv_cache_block_metrics",),
        ),
    )
}
