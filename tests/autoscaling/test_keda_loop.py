"""The autoscaling loop run for real with KEDA, down to zero and back (scenario.py on the parts
of stack.py): a ChatModel with autoscaling engine keda, minReplicas 0 and an InferencePool sits
at zero replicas (phase Idle) while the router's queue is empty; a request held by the router
wakes it (KEDA activates the Deployment, kwok makes the pod Ready, phase Ready); load on the
Triton stand-in scales it up through KEDA's HPA and the kube-controller-manager; when both
drain, the HPA scales down and KEDA takes it back to zero after cooldownSeconds (phase Idle).
Prints the replica timeline beside the signals and KEDA's and the HPA's own events, and asserts
on their order, on each step's bound and on what KEDA, the HPA and the operator say."""

from __future__ import annotations

import pytest
from tests.autoscaling.scenario import (
    COOLDOWN,
    TRITON_TARGET,
    new_run,
    print_report,
    run,
)
from tests.autoscaling.stack import NAME, Loop
from tests.cluster.admin import conditions

pytestmark = [pytest.mark.autoscaling, pytest.mark.timeout(1200)]


def test_scale_from_zero_on_the_router_queue_up_on_triton_load_and_back_to_zero(
    loop: Loop,
) -> None:
    out = new_run(loop)
    try:
        run(loop, out)
    finally:
        print_report(out, loop)
    t, seen = out.t, out.seen

    # Idle at zero: KEDA accepted the operator's ScaledObject and made its HPA (1..max), the
    # InferencePool selects the Deployment's pods, and `kubectl get chm` says Idle.
    assert seen["replicas at Idle"] == 0
    assert conditions(seen["scaledobject"])["Ready"]["status"] == "True"
    hpa = seen["hpa"]
    assert hpa is not None, "KEDA made no HPA"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    pods = seen["deployment"]["spec"]["selector"]["matchLabels"]
    assert seen["pool"]["spec"]["selector"]["matchLabels"] == pods
    header, row = seen["kubectl get chm"].splitlines()[:2]
    assert "PHASE" in header and " Idle " in f" {row} ", seen["kubectl get chm"]

    # Nothing queued: the router trigger reads 0 through KEDA's metrics API (not absent, so no
    # fallback), and a whole KEDA polling interval passes without a wake-up.
    assert seen["router metric at 0"] == 0.0
    assert seen["replicas while idle"] == {0}, out.timeline.table()
    assert seen["router metric at 1"] == 1.0
    assert seen["triton metric at 2"] >= TRITON_TARGET

    # Order: idle, held, woken, ready, loaded, scaled up, drained, down to zero, idle again.
    order = ["idle", "hold", "one", "ready_pod", "ready", "load", "two", "drain", "zero"]
    times = [t[k] for k in order]
    assert times == sorted(times), dict(zip(order, times, strict=True))
    assert t["idle_again"] >= t["zero"]
    assert seen["replicas after drain"] <= {0, 1, 2}
    # The cool-down is honoured: KEDA scaled to zero no sooner than cooldownSeconds after the
    # last poll that saw a trigger active (timestamps to the second).
    assert t["zero"] - t["last_active"] >= COOLDOWN - 1, t

    # KEDA's and the HPA's own accounts agree, and name the trigger that acted.
    evs = out.events
    said = {(obj, reason) for _, obj, reason, _, _ in evs}
    assert (f"ScaledObject/{NAME}", "KEDAScaleTargetDeactivated") in said
    woke = [m for _, _, reason, m, _ in evs if reason == "KEDAScaleTargetActivated"]
    assert woke and "from 0 to 1" in woke[0] and "s1-prometheus" in woke[0], woke
    assert not [e for e in evs if e[2] in ("KEDAScalerFailed", "FailedGetExternalMetric")], evs
    rescales = [m for _, _, reason, m, _ in evs if reason == "SuccessfulRescale"]
    assert any("New size: 2" in m and "s0-prometheus" in m for m in rescales), rescales
