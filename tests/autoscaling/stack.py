"""The autoscaling loop's parts, all real, inside a network namespace of its own (for the
autoscaling tier and bench/autoscale.py --keda).

In the namespace (controlplane/netns.py; its 10.x address is the only non-loopback address
used): the control plane (kube-apiserver advertising that address with aggregator routing,
kube-controller-manager and its HPA controller, kube-scheduler, etcd, kwok's nodes), the
chart installed by helm with rbac.inferencePools=always, the test InferencePool CRD, KEDA's
operator and metrics API server (controlplane/keda_local.py) behind the external.metrics.k8s.io
APIService, Debian's Prometheus with the chart's recording rules, a CPU Triton standing in for
the serving pods' engine, a FakeRouter playing the llm-d router's queue, and the operator as
a process (`chatmodel operator`) logged in as the chart's ServiceAccount. The calling thread
enters the namespace for the block and leaves it at the end; the namespace is deleted with
anything still running inside."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.admin import NAMESPACES, Admin
from tests.prometheus.fake_router import FakeRouter
from tests.prometheus.promharness import (
    Prometheus,
    ScrapeJob,
    TritonServer,
    free_port,
    prometheus_binary,
)

from chatmodel_operator import observability

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "controlplane"))
from keda_local import APISERVER_ARGS, Keda  # noqa: E402
from netns import NetNamespace, unavailable  # noqa: E402

from cluster import Cluster, build  # noqa: E402

NS = "autoscale"  # the ChatModel's namespace, known before Prometheus' static targets
NAME = "chat"
# The CPU Triton plays the serving pods' engine: its series carry a ChatModel pod's labels.
TRITON_LABELS = {"namespace": NS, "pod": f"{NAME}-triton-standin", "chatmodel": NAME}


def why_not() -> str | None:
    if prometheus_binary() is None:
        return "prometheus not installed: `apt-get install prometheus` (make system-deps)"
    problem = unavailable()
    return f"the autoscaling tier needs a network namespace: {problem}" if problem else None


@dataclass
class Loop:
    netns: NetNamespace
    cluster: Cluster
    admin: Admin
    keda: Keda
    prometheus: Prometheus
    router: FakeRouter
    triton: TritonServer
    setup_seconds: dict[str, float]


@contextlib.contextmanager
def running_loop(work: Path) -> Iterator[Loop]:
    """Everything started inside a new network namespace, this thread inside it while the
    block runs; every process stopped and the namespace deleted after it, even on failure."""
    timings: dict[str, float] = {}

    def timed(step: str, started: float) -> None:
        timings[step] = time.monotonic() - started

    t = time.monotonic()
    bin_dir = build(keda=True, quiet=True)
    timed("build (cached)", t)
    netns = NetNamespace.for_this_process("keda").create()
    try:
        with netns.entered(), contextlib.ExitStack() as stack:
            t = time.monotonic()
            cluster = Cluster(
                name=f"chm-keda-{os.getpid()}",
                workdir=work / "kwok",
                bin=bin_dir,
                apiserver_args={"advertise-address": netns.address, **APISERVER_ARGS},
            )
            stack.callback(cluster.down)
            cluster.up(timeout=180)
            timed("control plane", t)

            t = time.monotonic()
            cluster.kubectl("apply", "-f", str(ROOT / "tests/cluster/crds/inferencepool.yaml"))
            cluster.wait_established("inferencepools.inference.networking.k8s.io")
            cluster.install_chart("--set", "rbac.inferencePools=always")
            timed("chart", t)

            t = time.monotonic()
            keda = Keda(cluster, netns.address, work / "keda")
            stack.callback(keda.stop)
            keda.start()
            timed("KEDA (CRDs, operator, adapter, APIService Available)", t)

            t = time.monotonic()
            router = stack.enter_context(FakeRouter())
            triton = TritonServer(work / "triton", token_seconds=0.01)
            stack.callback(triton.stop)
            triton.start()
            prometheus = Prometheus(
                work / "prometheus",
                jobs=[
                    ScrapeJob("llm-d-router", router.port, {"namespace": NS}),
                    ScrapeJob("triton", triton.metrics_port, TRITON_LABELS),
                ],
                rule_groups=observability.rule_groups(signals_interval="1s", alerts_interval="1s"),
            )
            stack.callback(prometheus.stop)
            prometheus.start()
            prometheus.wait_until(
                "router and Triton scraped",
                lambda: prometheus.targets_up() == {"llm-d-router": True, "triton": True},
                30,
            )
            timed("Prometheus, Triton, router", t)

            t = time.monotonic()
            cluster.start_operator(
                [
                    sys.executable,
                    "-m",
                    "chatmodel_operator.cli",
                    "operator",
                    "--metrics-address=127.0.0.1",
                    f"--metrics-port={free_port()}",
                ]
            )
            stack.callback(cluster.stop_operator)
            admin = Admin(cluster.admin_kubeconfig, bin_dir / "kubectl")
            admin.create(NAMESPACES, None, {"metadata": {"name": NS}})
            timed("operator", t)
            yield Loop(netns, cluster, admin, keda, prometheus, router, triton, timings)
    finally:
        left = netns.delete()
        if left:
            print(
                f"\nautoscaling: stopped {len(left)} leftover process(es): {left}", file=sys.stderr
            )
