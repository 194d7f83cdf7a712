"""The HorizontalPodAutoscaler's replica arithmetic for a ``Pods`` AverageValue metric (pure).

Kubernetes computes ``desired = ceil(current * currentAverage / target)``, skips the change
while ``|currentAverage / target - 1|`` is within its tolerance (0.1 by default), and clamps to
``[minReplicas, maxReplicas]``. Tests and bench/autoscale.py apply it to measured signals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_TOLERANCE = 0.1


def desired_replicas(
    *,
    current: int,
    per_pod_values: Sequence[float],
    target: float,
    min_replicas: int,
    max_replicas: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """Replicas the HPA asks for, given the metric value of each current pod."""
    if target <= 0:
        raise ValueError("target must be positive")
    if not per_pod_values:
        # No metrics for any pod: the HPA does not scale (it reports FailedGetPodsMetric).
        return min(max(current, min_replicas), max_replicas)
    average = sum(per_pod_values) / len(per_pod_values)
    ratio = average / target
    desired = current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio)
    return min(max(desired, min_replicas), max_replicas)
