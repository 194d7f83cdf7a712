"""prometheus-adapter rules that serve the recorded load signals to the HPA (pure).

One rule per signal: the per-pod recording rule ``chatmodel:<x>`` becomes the custom metric
``chatmodel_<x>`` on pods, which is the name the rendered HPA asks for (``hpa_metric``). Colons
are legal in Prometheus names but not in Kubernetes metric names, hence the rename.
"""

from __future__ import annotations

from typing import Any

from chatmodel_operator.signals import SIGNALS, LoadSignal

# One series per pod already (the recording rule groups by pod): max only picks it.
METRICS_QUERY = "max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"


def adapter_rule(signal: LoadSignal) -> dict[str, Any]:
    return {
        "seriesQuery": f'{signal.record}{{namespace!="",pod!=""}}',
        "resources": {
            "overrides": {
                "namespace": {"resource": "namespace"},
                "pod": {"resource": "pod"},
            }
        },
        "name": {"matches": f"^{signal.record}$", "as": signal.hpa_metric},
        "metricsQuery": METRICS_QUERY,
    }


def adapter_rules() -> list[dict[str, Any]]:
    return [adapter_rule(s) for s in SIGNALS.values()]


def adapter_values() -> dict[str, Any]:
    """The values snippet for the prometheus-community/prometheus-adapter chart.

    ``default`` stays as the chart has it (true): these rules are added next to the defaults.
    ``metricsRelistInterval`` is short so a new ChatModel's pods show up within a minute.
    """
    return {"metricsRelistInterval": "30s", "rules": {"custom": adapter_rules()}}


def adapter_query(signal: LoadSignal, *, namespace: str, pods: list[str]) -> str:
    """The PromQL prometheus-adapter sends for a ``Pods`` metric request (for tests and docs).

    The adapter fills the template with the resource label matchers and groups by pod.
    """
    pod_regex = "|".join(pods)
    return (
        METRICS_QUERY.replace("<<.GroupBy>>", "pod")
        .replace("<<.Series>>", signal.record)
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod_regex}"')
    )
