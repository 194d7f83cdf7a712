"""The autoscaling loop's scenario, run on the parts of stack.py, for the autoscaling tier
(which asserts on what it records) and bench/autoscale.py --keda (which reports its figures).

A ChatModel with autoscaling engine keda, minReplicas 0 and an InferencePool: idle at zero; the
router holds a request and KEDA wakes the Deployment; load on the Triton stand-in makes KEDA's
HPA (kube-controller-manager) add a replica; both drain, the HPA scales down and KEDA takes it
to zero after cooldownSeconds. Every change is recorded with its time beside the signals, and
KEDA's, the HPA's and the Deployment controller's own events are collected."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from tests.autoscaling.stack import NAME, NS, Loop
from tests.cluster.admin import CM, DEPLOYMENTS, EVENTS, HPAS, Admin, conditions, wait_until
from tests.prometheus.fake_router import QUEUE_SIZE
from tests.prometheus.promharness import Load, Prometheus

from chatmodel_operator.api.spec import API_VERSION
from chatmodel_operator.render.labels import deployment_name
from chatmodel_operator.render.routing import inference_pool_name
from chatmodel_operator.signals import SIGNALS

SCALED_OBJECTS = ("keda.sh", "v1alpha1", "scaledobjects")
INFERENCE_POOLS = ("inference.networking.k8s.io", "v1", "inferencepools")
POLL = 30  # KEDA's pollingInterval (the rendered ScaledObject leaves KEDA's default)
HPA_SYNC = 15  # kube-controller-manager's --horizontal-pod-autoscaler-sync-period default
COOLDOWN = 45  # spec.autoscaling.cooldownSeconds
STABILIZATION = 10  # spec.autoscaling.scaleDownStabilizationSeconds
# Slack for a busy two-core machine: each bound is the mechanism's own worst case plus this.
SLACK = 45
TRITON_TARGET = 4  # pending-requests' default target per replica
CONCURRENCY = 12  # one-slot stand-in model: about 11 requests pending


def spec(prometheus: str) -> dict[str, Any]:
    return {
        "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
        "routing": {"inferencePool": {}},
        "autoscaling": {
            "enabled": True,
            "engine": "keda",
            "minReplicas": 0,
            "maxReplicas": 2,
            "metric": "pending-requests",
            "cooldownSeconds": COOLDOWN,
            "scaleDownStabilizationSeconds": STABILIZATION,
            "prometheusAddress": prometheus,
        },
    }


@dataclass
class Timeline:
    """What changed when, polled every half second on the cluster and Prometheus, plus the
    test's own marks. Times are seconds since ``t0`` (the ChatModel's creation)."""

    admin: Admin
    prometheus: Prometheus
    t0: float = field(default_factory=time.time)
    rows: list[tuple[float, str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def now(self) -> float:
        return time.time() - self.t0

    def mark(self, what: str) -> float:
        t = self.now()
        self.rows.append((t, "test", what))
        return t

    def _observe(self) -> dict[str, Any]:
        dep = self.admin.get(DEPLOYMENTS, NS, deployment_name(NAME)) or {}
        cm = self.admin.get(CM, NS, NAME) or {}
        so = self.admin.get(SCALED_OBJECTS, NS, NAME) or {}
        router = self.prometheus.value(router_query())
        triton = self.prometheus.value(triton_query())
        return {
            "replicas": (dep.get("spec") or {}).get("replicas"),
            "ready": (dep.get("status") or {}).get("readyReplicas", 0) if dep else None,
            "phase": (cm.get("status") or {}).get("phase"),
            "keda active": conditions(so).get("Active", {}).get("status"),
            "router queue": router,
            # The Triton trigger's side of its target: the signal moves every scrape.
            "triton pending": None
            if triton is None
            else ("0" if triton == 0 else ">= target" if triton >= TRITON_TARGET else "> 0"),
        }

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                seen = self._observe()
            except Exception as exc:  # an API or Prometheus hiccup on a busy machine: retry
                self.error = exc
                seen = {}
            t = self.now()
            for key, value in seen.items():
                if key not in self.state or self.state[key] != value:
                    self.state[key] = value
                    self.rows.append((t, key, value))
            self.stop_flag.wait(0.5)

    def start(self) -> Timeline:
        self.thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(10)

    def first(self, key: str, value: Any, after: float = 0.0) -> float | None:
        return next((t for t, k, v in self.rows if k == key and v == value and t >= after), None)

    def wait(self, key: str, value: Any, after: float, timeout: float) -> float:
        """Seconds since t0 when ``key`` first read ``value`` at or after ``after``."""
        return float(
            wait_until(
                lambda: self.first(key, value, after),
                timeout,
                what=f"{key} = {value!r} (now {self.state.get(key)!r})",
            )
        )

    def held(self, key: str, since: float, until: float = float("inf")) -> set[Any]:
        """Every value ``key`` had between ``since`` and ``until``, the one it had at
        ``since`` included."""
        rows = [(t, v) for t, k, v in self.rows if k == key]
        before = [v for t, v in rows if t <= since]
        return set(before[-1:]) | {v for t, v in rows if since < t <= until}

    def table(self) -> str:
        lines = [f"{'t (s)':>8}  {'what':<15} value"]
        lines += [f"{t:8.1f}  {k:<15} {v}" for t, k, v in sorted(self.rows, key=lambda r: r[0])]
        return "\n".join(lines)


def router_query() -> str:
    return f'sum({QUEUE_SIZE}{{inference_pool="{inference_pool_name(NAME)}"}}) or vector(0)'


def triton_query() -> str:
    return f"{SIGNALS['pending-requests'].keda_query(NS, NAME)} or vector(0)"


def _stamp(value: str) -> float:
    """A Kubernetes timestamp (RFC 3339, to the second or the microsecond) as Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _event_time(e: dict[str, Any]) -> float:
    return _stamp(
        e.get("eventTime") or e.get("lastTimestamp") or e["metadata"]["creationTimestamp"]
    )


def events(admin: Admin, t0: float) -> list[tuple[float, str, str, str, str]]:
    """(seconds since t0, kind/name, reason, message) of every Event in the namespace that
    KEDA, the HPA controller or the Deployment controller wrote."""
    out = []
    for e in admin.items(EVENTS, NS):
        inv = e.get("involvedObject") or {}
        if inv.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler", "Deployment"):
            source = (e.get("source") or {}).get("component") or e.get("reportingComponent", "")
            out.append(
                (
                    _event_time(e) - t0,
                    f"{inv['kind']}/{inv['name']}",
                    e.get("reason", ""),
                    str(e.get("message", "")),
                    source,
                )
            )
    return sorted(out)


def external_metric(admin: Admin, metric: str) -> float:
    """The value KEDA's metrics API server gives the HPA, asked the way the HPA asks it."""
    got = admin.request(
        "GET",
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{metric}",
        query={"labelSelector": f"scaledobject.keda.sh/name={NAME}"},
    )
    items = got["items"]
    assert len(items) == 1, json.dumps(got)[:500]
    value = items[0]["value"]
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


# What each figure should be on this loop, as docs/autoscaling.md states it: the mechanism's own delay
# (KEDA's polling interval, the HPA's sync period, the cool-down) plus a few seconds of ours.
TARGETS = {
    "queue held -> KEDA scales 0->1": POLL + 5,
    "0->1 -> first pod Ready (kwok)": 10,
    "queue held -> phase Ready": POLL + 15,
    "Triton load -> 2nd replica (HPA)": 2 * HPA_SYNC,
    "end of load -> HPA scales 2->1": STABILIZATION + 2 * HPA_SYNC,
    "end of load -> KEDA scales to 0": COOLDOWN + 2 * POLL,
    "last active poll -> 0 (cooldown)": COOLDOWN + POLL,
    "0 replicas -> phase Idle": 10,
}


@dataclass
class Run:
    """What one pass of the scenario saw: the times (seconds since t0) of each step, what the
    cluster and KEDA's metrics API said at chosen moments, and the whole timeline."""

    timeline: Timeline
    t: dict[str, float] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, str, str, str]] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        t = self.t
        return {
            "queue held -> KEDA scales 0->1": t["one"] - t["hold"],
            "0->1 -> first pod Ready (kwok)": t["ready_pod"] - t["one"],
            "queue held -> phase Ready": t["ready"] - t["hold"],
            "Triton load -> 2nd replica (HPA)": t["two"] - t["load"],
            "end of load -> HPA scales 2->1": t["down_one"] - t["drain"],
            "end of load -> KEDA scales to 0": t["zero"] - t["drain"],
            "last active poll -> 0 (cooldown)": t["zero"] - t["last_active"],
            "0 replicas -> phase Idle": t["idle_again"] - t["zero"],
        }


def new_run(loop: Loop) -> Run:
    return Run(Timeline(loop.admin, loop.prometheus))


def run(loop: Loop, out: Run, *, phase: float = 0.0) -> Run:
    """The scenario, step by step, recorded into ``out`` (so a caller reports what happened
    even when a step does not happen within its bound and this raises).

    KEDA polls every POLL seconds from the ScaledObject's creation and the HPA syncs every
    HPA_SYNC seconds, so how long a step waits depends on where it falls in their cycles:
    ``phase`` (0 to 1) shifts the router's request and the load by that fraction of a cycle
    (bench/autoscale.py sweeps it; the test keeps 0)."""
    admin, router, prom = loop.admin, loop.router, loop.prometheus
    pool = inference_pool_name(NAME)
    tl, t, seen = out.timeline, out.t, out.seen
    tl.t0 = time.time()
    admin.create(
        CM,
        NS,
        {
            "apiVersion": API_VERSION,
            "kind": "ChatModel",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": spec(prom.url),
        },
    )
    tl.start()
    load: Load | None = None
    try:
        # 1. Created: the engine builds (kwok completes the Job), the Deployment comes up with
        # one replica, and KEDA's first poll finds every trigger idle: to zero, phase Idle.
        t["idle"] = tl.wait("phase", "Idle", 0, 300)
        seen["replicas at Idle"] = tl.state["replicas"]
        seen["kubectl get chm"] = loop.cluster.kubectl("get", "chm", "-n", NS).stdout
        seen["scaledobject"] = admin.get(SCALED_OBJECTS, NS, NAME)
        seen["hpa"] = admin.get(HPAS, NS, f"keda-hpa-{NAME}")
        seen["pool"] = admin.get(INFERENCE_POOLS, NS, pool)
        seen["deployment"] = admin.get(DEPLOYMENTS, NS, deployment_name(NAME))

        # 2. Idle while the router holds nothing: the router trigger reads 0 through KEDA's
        # metrics API (not absent), and a whole polling interval passes.
        seen["router metric at 0"] = external_metric(admin, "s1-prometheus")
        time.sleep(max(0.0, t["idle"] + POLL + 5 + phase * POLL - tl.now()))
        seen["replicas while idle"] = tl.held("replicas", t["idle"], tl.now())

        # 3. The router holds one request for the pool: KEDA activates the Deployment, 0 -> 1.
        t["hold"] = tl.mark(f"router holds 1 request for pool {pool}")
        router.hold(pool, 1)
        t["one"] = tl.wait("replicas", 1, t["hold"], POLL + SLACK)
        t["ready_pod"] = tl.wait("ready", 1, t["one"], 60)
        t["ready"] = tl.wait("phase", "Ready", t["one"], 60)
        seen["router metric at 1"] = external_metric(admin, "s1-prometheus")

        # 4. Load on the Triton stand-in: pending requests above the target per replica, and
        # KEDA's HPA (kube-controller-manager) adds the second replica.
        time.sleep(phase * HPA_SYNC)
        t["load"] = tl.mark(f"Triton load: {CONCURRENCY} concurrent streams")
        load = Load(
            loop.triton.grpc_port, concurrency=CONCURRENCY, max_requests=1_000_000, max_seconds=300
        ).start()
        t["two"] = tl.wait("replicas", 2, t["load"], HPA_SYNC + SLACK + 30)
        tl.wait("ready", 2, t["two"], 60)
        seen["triton metric at 2"] = external_metric(admin, "s0-prometheus")

        # 5. Both drain: the HPA scales down after its window, KEDA to zero after the cool-down.
        stats = load.stop()
        load = None
        router.forget(pool)
        t["drain"] = tl.mark(f"load stopped ({stats.completed} requests served), queue empty")
        prom.wait_until("signals back to 0", lambda: prom.value(triton_query()) == 0, 30)
        t["zero"] = tl.wait(
            "replicas", 0, t["drain"], STABILIZATION + HPA_SYNC + COOLDOWN + 2 * POLL + SLACK
        )
        t["down_one"] = tl.first("replicas", 1, t["drain"]) or t["zero"]
        status = (admin.get(SCALED_OBJECTS, NS, NAME) or {}).get("status") or {}
        t["last_active"] = _stamp(status["lastActiveTime"]) - tl.t0
        t["idle_again"] = tl.wait("phase", "Idle", t["zero"], 60)
        seen["replicas after drain"] = tl.held("replicas", t["drain"])
        return out
    finally:
        if load is not None:
            load.stop()
        tl.stop()
        out.events = events(admin, tl.t0)


def print_report(out: Run, loop: Loop, file: TextIO = sys.stderr) -> None:
    print("\n== setup (s) ==", file=file)
    for step, seconds in loop.setup_seconds.items():
        print(f"{seconds:8.1f}  {step}", file=file)
    print("\n== replica timeline (s since the ChatModel was created) ==", file=file)
    print(out.timeline.table(), file=file)
    if out.timeline.error is not None:
        print(f"(the last failed poll, retried: {out.timeline.error!r:.200})", file=file)
    print("\n== KEDA's, the HPA's and the Deployment controller's events ==", file=file)
    for t, obj, reason, message, source in out.events:
        print(f"{t:8.0f}  {obj:<38} {reason:<27} {message[:120]}  [{source}]", file=file)
    if "idle_again" in out.t:
        print("\n== figures ==", file=file)
        for what, seconds in out.figures().items():
            target = TARGETS[what]
            verdict = "meets" if seconds <= target else "MISSES"
            print(f"{seconds:8.1f} s  {what:<34} target <= {target} s: {verdict}", file=file)
