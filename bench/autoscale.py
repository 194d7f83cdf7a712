"""Step load on a local CPU Triton; how fast the autoscaling signal follows, as Prometheus sees it.

Prometheus scrapes Triton every 5 s (the ServiceMonitor's interval) and evaluates the shipped
recording rules (monitoring/rules.yaml) at their own interval. Each trial starts a step of load
at a different phase of the scrape cycle, then stops it; the bench polls the signal exactly as
prometheus-adapter serves it to the HPA and prints the time from the step until it crosses the
target, and from the end of the load (the last queued request served) until it is back under
the target.

Two Tritons: ``--server standin`` (default) serves a one-slot streaming model whose requests
queue in Triton, so both Triton-side signals move; ``--server data-plane`` serves a tiny trained
checkpoint the way `chatmodel serve` does (ensemble and our in-flight batching engine), where
requests wait inside the engine and only pending-requests moves.

Target: at most two scrape intervals (10 s) each way.

``--keda`` runs the whole loop instead, for real (root: it needs a network namespace; see
tests/autoscaling): KEDA's operator and metrics server, the control plane, the operator, the
router's queue and the Triton stand-in, and reports the time from load to a new replica, from
the end of load to scale-down, and from zero to the first ready pod, each next to its target.

    python bench/autoscale.py [--server standin|data-plane] [--trials 10] [--scrape-interval 5]
    python bench/autoscale.py --keda [--trials 1]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness lives with the Prometheus tests

from tests.prometheus.promharness import (  # noqa: E402
    GenerateLoad,
    Load,
    LoadStats,
    Prometheus,
    ScrapeJob,
    TritonServer,
    prometheus_binary,
    tiny_data_plane,
)

from chatmodel_operator import observability  # noqa: E402
from chatmodel_operator.api.spec import DEFAULT_TARGETS  # noqa: E402
from chatmodel_operator.observability.rules import SIGNALS_INTERVAL  # noqa: E402
from chatmodel_operator.signals import SIGNALS  # noqa: E402

POD_LABELS = {"namespace": "bench", "pod": "chat-0", "chatmodel": "chat"}


class Stepper(Protocol):
    def start(self) -> object: ...
    def stop(self) -> LoadStats: ...


@contextlib.contextmanager
def standin(
    work: Path, concurrency: int, hold: float
) -> Iterator[tuple[int, tuple[str, ...], Callable[[], Stepper]]]:
    """The one-slot stand-in model: requests queue in Triton."""
    triton = TritonServer(work / "triton", token_seconds=0.01).start()
    try:
        yield (
            triton.metrics_port,
            ("queue-to-compute-ratio", "pending-requests"),
            lambda: Load(
                triton.grpc_port,
                concurrency=concurrency,
                max_requests=100_000,
                max_seconds=hold + 5,
            ),
        )
    finally:
        triton.stop()


@contextlib.contextmanager
def data_plane(
    work: Path, concurrency: int, hold: float
) -> Iterator[tuple[int, tuple[str, ...], Callable[[], Stepper]]]:
    """`chatmodel serve` on a tiny checkpoint with 2 batch slots: requests wait in the engine."""
    server = tiny_data_plane(work, "chat", batch_slots=2)
    server.start(timeout_s=180)
    try:
        yield (
            server.triton.ports.metrics,
            ("pending-requests",),
            lambda: GenerateLoad(
                server.triton.http_url,
                concurrency=concurrency,
                max_tokens=64,
                max_requests=100_000,
                max_seconds=hold + 5,
            ),
        )
    finally:
        server.stop()


def signal_value(prom: Prometheus, metric: str) -> float | None:
    s = SIGNALS[metric]
    query = observability.adapter_query(s, namespace="bench", pods=["chat-0"])
    result = prom.query(query)
    return float(result[0]["value"][1]) if result else None


def crossing(
    prom: Prometheus, metrics: tuple[str, ...], above: bool, since: float, timeout: float
) -> dict[str, float | None]:
    """Seconds after ``since`` at which each signal first is above (or back under) its target."""
    out: dict[str, float | None] = dict.fromkeys(metrics)
    while time.monotonic() - since < timeout and any(v is None for v in out.values()):
        for m in metrics:
            if out[m] is not None:
                continue
            v = signal_value(prom, m)
            if v is not None and (v > DEFAULT_TARGETS[m]) == above:
                out[m] = time.monotonic() - since
        time.sleep(0.1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=None, help="10; with --keda 1")
    p.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    p.add_argument(
        "--eval-interval",
        default=SIGNALS_INTERVAL,
        help=f"recording rules' group interval (shipped: {SIGNALS_INTERVAL})",
    )
    p.add_argument("--server", choices=("standin", "data-plane"), default="standin")
    p.add_argument("--concurrency", type=int, default=None, help="clients (8; data plane 10)")
    p.add_argument("--hold", type=float, default=12.0, help="seconds of load per step")
    p.add_argument("--keda", action="store_true", help="the KEDA loop, scale to zero and back")
    args = p.parse_args()
    if args.keda:
        return keda_loop(trials=args.trials or 1)
    if prometheus_binary() is None:
        print("prometheus is not installed: apt-get install prometheus", file=sys.stderr)
        return 2
    interval = args.scrape_interval
    budget = 2 * interval
    concurrency = args.concurrency or (10 if args.server == "data-plane" else 8)
    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-"))
    serve = data_plane if args.server == "data-plane" else standin
    missed = 0
    with serve(work, concurrency, args.hold) as (metrics_port, measured, new_load):
        prom = Prometheus(
            work / "prometheus",
            jobs=[ScrapeJob("triton", metrics_port, POD_LABELS)],
            rule_groups=observability.rule_groups(signals_interval=args.eval_interval),
            scrape_interval=f"{interval:g}s",
            evaluation_interval=f"{interval:g}s",
        )
        ups: dict[str, list[float]] = {m: [] for m in measured}
        downs: dict[str, list[float]] = {m: [] for m in measured}
        try:
            prom.start()
            prom.wait_until(
                "idle signal recorded",
                lambda: all(signal_value(prom, m) == 0 for m in measured),
                timeout=6 * interval + 10,
            )
            print(
                f"{args.server}: scrape interval {interval:g}s, signal rules every "
                f"{args.eval_interval}, {concurrency} clients for {args.hold:g}s per step, "
                f"target <= {budget:g}s"
            )
            trials = args.trials or 10
            for trial in range(1, trials + 1):
                # The lag depends on where the step falls in the scrape cycle: the previous
                # trial ended right after a rule evaluation, so sweep the step across a cycle.
                time.sleep(interval * (trial - 1) / trials)
                load = new_load()
                step = time.monotonic()
                load.start()
                up = crossing(prom, measured, True, step, timeout=args.hold)
                time.sleep(max(0.0, args.hold - (time.monotonic() - step)))
                stopped = time.monotonic()
                stats = load.stop()  # no new requests; returns when the last one is served
                # The load is over when the requests already queued are served, not when the
                # clients stop sending: time the way down from there.
                drained = time.monotonic()
                down = crossing(prom, measured, False, drained, timeout=6 * interval)
                cells = []
                for m in measured:
                    u, d = up[m], down[m]
                    if u is None or d is None:
                        missed += 1
                    else:
                        ups[m].append(u)
                        downs[m].append(d)
                    cells.append(f"{m} up {_fmt(u)} down {_fmt(d)}")
                print(
                    f"trial {trial}: {stats.completed} requests, queue drained "
                    f"{drained - stopped:.1f}s after the clients stopped; " + "; ".join(cells)
                )
                # Back to a steady idle before the next step.
                time.sleep(interval)
        finally:
            prom.stop()
    for m in measured:
        for name, values in (("up", ups[m]), ("down", downs[m])):
            if not values:
                continue
            worst = max(values)
            verdict = "meets" if worst <= budget else "misses"
            print(
                f"{m:24s} {name:4s} median {statistics.median(values):5.1f}s  "
                f"mean {statistics.fmean(values):5.1f}s  max {worst:5.1f}s  "
                f"({worst / interval:.1f} scrape intervals: {verdict} the {budget:g}s target)"
            )
    # Timing is reported, not enforced: a signal that never crosses is the only failure.
    if missed:
        print(f"FAIL: {missed} crossings never happened")
    return 1 if missed else 0


def keda_loop(trials: int) -> int:
    """The scenario of tests/autoscaling, each trial on a fresh loop; figures next to targets."""
    from tests.autoscaling.scenario import TARGETS, new_run, print_report, run
    from tests.autoscaling.stack import running_loop, why_not

    problem = why_not()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    figures: dict[str, list[float]] = {k: [] for k in TARGETS}
    for trial in range(1, trials + 1):
        # Each trial puts the request and the load at another point of KEDA's polling cycle
        # and the HPA's sync cycle: their waits are most of these figures.
        phase = (trial - 1) / trials
        work = Path(tempfile.mkdtemp(prefix="bench-keda-"))
        with running_loop(work) as loop:
            out = new_run(loop)
            try:
                run(loop, out, phase=phase)
            finally:
                print_report(out, loop, file=sys.stdout)
                print(f"logs: {work}", flush=True)
        shutil.rmtree(work, ignore_errors=True)  # kept when the trial failed
        for k, v in out.figures().items():
            figures[k].append(v)
        print(f"trial {trial} (phase {phase:.2f} of the polling cycle) done", flush=True)
    print(f"\nKEDA loop, {trials} trial(s): median, max, target")
    for k, values in figures.items():
        worst = max(values)
        verdict = "meets" if worst <= TARGETS[k] else "misses"
        print(
            f"{k:34s} median {statistics.median(values):5.1f}s  max {worst:5.1f}s  "
            f"({verdict} the {TARGETS[k]}s target)"
        )
    # Timing is reported, not enforced here (the autoscaling tier enforces its bounds).
    return 0


def _fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:4.1f}s"


if __name__ == "__main__":
    sys.exit(main())
