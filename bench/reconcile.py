"""Reconcile benchmark on the real control plane (controlplane/): 500 ChatModels created at once
and taken to Ready by `chatmodel operator` as shipped, a separate process logged in with the
chart's ServiceAccount token. kube-apiserver, etcd, the controller manager and the scheduler
are the real ones; kwok plays the kubelets (GPU nodes; pods go Ready, build Jobs complete).
Every request is read from the API server's audit log. Printed, next to its target:

* API requests per ChatModel against the minimum any operator must make (its children, the
  shared build Jobs and cache claims, one status write): at most 1.2x;
* the operator process's CPU time (user + system) per reconcile: at most 5 ms;
* writes during one full resync with nothing changed: 0;
* the operator's resident memory with 500 ChatModels: at most 200 MB;
* the time from `kubectl apply` to Ready the operator adds beyond what the cluster itself
  takes for the same Job and Deployment (measured side by side: the same objects created by
  hand and waited for, then the ChatModel).

The operator runs with its 5 s status settle window, as shipped. Run: ``python
bench/reconcile.py`` (``BENCH_CHATMODELS=100`` for a quick run). The control plane is built by
``make controlplane`` if missing, started on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "controlplane"), str(REPO / "tests" / "cluster")]

from admin import Audit, Call  # noqa: E402

from chatmodel_operator.api import parse_spec  # noqa: E402
from chatmodel_operator.api.spec import API_VERSION, PLURAL  # noqa: E402
from chatmodel_operator.plan import plan_model  # noqa: E402
from chatmodel_operator.render import render_children  # noqa: E402
from cluster import Cluster, build, free_port, gpu_nodes, interrupt_on_sigterm  # noqa: E402

N = int(os.environ.get("BENCH_CHATMODELS", "500"))
NAMESPACES = ("team-a", "team-b", "team-c", "team-d")
RESYNC_SECONDS = float(os.environ.get("BENCH_RESYNC_SECONDS", "60"))
OPERATOR = "system:serviceaccount:chatmodel-system:chatmodel-operator"
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"requests": 1.2, "cpu_ms": 5.0, "resync_writes": 0, "rss_mb": 200.0}

# A mix of the seed models, sizes and settings: some ChatModels share an engine (one build
# serves them all), some autoscale (an HPA child), some ask for a ServiceMonitor.
VARIANTS: list[dict[str, Any]] = [
    {
        "model": {"source": "hf://SUSTech/SUS-Chat-34B"},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
    },
    {
        "model": {"source": "hf://01-ai/Yi-34B-Chat-4bits"},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-40GB"}},
        "serving": {"replicas": 2},
    },
    {
        "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
        "resources": {"gpu": {"product": "NVIDIA-L4"}},
        "serving": {"serviceMonitor": True},
    },
    {
        "model": {"source": "hf://01-ai/Yi-34B-Chat-8bits"},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-40GB"}},
    },
    {
        "model": {"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
        "engine": {"dtype": "float16"},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-40GB"}},
    },
]


def spec_for(i: int) -> dict[str, Any]:
    spec = json.loads(json.dumps(VARIANTS[i % len(VARIANTS)]))
    # Every tenth ChatModel gets its own engine (a longer output): more builds, fewer shares.
    if i % 10 == 0:
        spec.setdefault("engine", {})["maxOutputLength"] = 512 + i
    return spec


def chatmodel(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def children_of(namespace: str, name: str, raw: dict[str, Any]) -> Any:
    spec = parse_spec(raw)
    _, plan = plan_model(spec)
    return plan, render_children(
        name=name, namespace=namespace, uid="u", spec=spec, plan=plan, repository={}
    )


def minimum_and_gpus(
    items: list[tuple[str, str, dict[str, Any]]],
) -> tuple[int, int, Counter[str]]:
    """(children any operator must create, status writes, GPUs needed per product)."""
    shared: set[tuple[str, str]] = set()
    serving = 0
    gpus: Counter[str] = Counter()
    for namespace, name, raw in items:
        _, children = children_of(namespace, name, raw)
        shared.add((namespace, children.build_job["metadata"]["name"]))
        shared.add((namespace, children.cache_pvc["metadata"]["name"]))
        serving += len(children.serving)
        deployment = next(c for c in children.serving if c["kind"] == "Deployment")
        selector = deployment["spec"]["template"]["spec"].get("nodeSelector", {})
        per_pod = int(
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].get(
                "nvidia.com/gpu", 0
            )
        )
        gpus[selector.get("nvidia.com/gpu.product", "")] += per_pod * deployment["spec"].get(
            "replicas", 1
        )
    return serving + len(shared), len(items), gpus


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(CPU seconds user+system, RSS MB, peak RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    status = Path(f"/proc/{pid}/status").read_text()
    mem = {
        line.split(":")[0]: line.split()[1]
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return cpu, int(mem["VmRSS"]) / 1024, int(mem["VmHWM"]) / 1024


def reconciles(port: int) -> float:
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("chatmodel_reconciles_total")
    )


def wait(predicate: Any, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def phases(cluster: Cluster, namespace: str | None = None) -> Counter[str]:
    scope = ["-n", namespace] if namespace else ["-A"]
    out = cluster.kubectl(
        "get", "chm", *scope, "-o", "jsonpath={range .items[*]}{.status.phase}{'\\n'}{end}"
    ).stdout
    return Counter(line.strip() for line in out.splitlines())


def classify(calls: list[Call]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for c in calls:
        if c.verb == "watch" or not c.resource:
            continue
        if c.user_agent.startswith("kopf/"):
            kinds["kopf writes (last-handled annotation)" if c.is_write else "kopf reads"] += 1
        elif c.resource == "events":
            kinds["events"] += 1
        elif c.resource == PLURAL and c.subresource == "status":
            kinds["status writes"] += 1
        elif c.is_write:
            kinds["child writes"] += 1
        else:
            kinds["reads"] += 1
    return kinds


def added_latency(cluster: Cluster, rounds: int) -> tuple[list[float], list[float]]:
    """Side by side, `rounds` times: the cluster alone running the Job and the Deployment of
    one ChatModel (created by hand, each waited for, as the operator does), then the same
    ChatModel through the operator from `kubectl apply` to Ready. Seconds each."""
    cluster.kubectl("create", "namespace", "latency")
    by_hand, operator = [], []
    spec = {
        "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
        "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    }
    for r in range(rounds):
        spec["engine"] = {"maxOutputLength": 1024 + r}  # a new engine each round: a real build
        _, children = children_of("latency", f"hand-{r}", spec)
        job, deployment = (
            children.build_job,
            next(c for c in children.serving if c["kind"] == "Deployment"),
        )
        job["metadata"]["name"] += "-hand"
        for obj in (job, deployment, children.cache_pvc):
            # No ChatModel owns these (the render's owner would have them collected at once).
            obj["metadata"].pop("ownerReferences", None)
        t = time.monotonic()
        cluster.apply([children.cache_pvc, job])
        wait(
            lambda j=job: cluster.kubectl(
                "get", "job", j["metadata"]["name"], "-n", "latency", "-o",
                "jsonpath={.status.succeeded}",
            ).stdout == "1",
            120, "the hand-made Job", every=0.1,
        )  # fmt: skip
        cluster.apply([deployment])
        wait(
            lambda d=deployment: cluster.kubectl(
                "get", "deployment", d["metadata"]["name"], "-n", "latency", "-o",
                "jsonpath={.status.availableReplicas}",
            ).stdout == str(d["spec"]["replicas"]),
            120, "the hand-made Deployment", every=0.1,
        )  # fmt: skip
        by_hand.append(time.monotonic() - t)
        name = f"op-{r}"
        spec["engine"] = {"maxOutputLength": 2048 + r}
        t = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(chatmodel("latency", name, spec)))
        wait(
            lambda n=name: cluster.kubectl(
                "get", "chm", n, "-n", "latency", "-o", "jsonpath={.status.phase}"
            ).stdout == "Ready",
            180, f"ChatModel {name}", every=0.1,
        )  # fmt: skip
        operator.append(time.monotonic() - t)
    return by_hand, operator


def run(args: argparse.Namespace) -> int:
    items = [(NAMESPACES[i % len(NAMESPACES)], f"chat-{i:04d}", spec_for(i)) for i in range(N)]
    min_children, min_status, gpus = minimum_and_gpus(items)
    with tempfile.TemporaryDirectory(prefix="chm-bench-") as tmp:
        # 500 Services need more cluster IPs than kwokctl's default range holds ("failed to
        # allocate a serviceIP ... range is full" at about 250): a /16, as clusters have.
        cluster = Cluster(
            name=f"chm-bench-{os.getpid()}",
            workdir=Path(tmp),
            bin=build(),
            apiserver_args={"service-cluster-ip-range": "10.96.0.0/16"},
        )
        try:
            t = time.monotonic()
            cluster.up(timeout=180)

            per_node = 8
            # Room to spare: pods of 4 GPUs do not always pack two to a node.
            cluster.apply(
                gpu_nodes({p: math.ceil(1.5 * n / per_node) + 2 for p, n in gpus.items()})
            )
            cluster.install_chart()
            cluster.kubectl(
                "apply", "-f", str(REPO / "tests" / "cluster" / "crds" / "servicemonitor.yaml")
            )
            for ns in NAMESPACES:
                cluster.kubectl("create", "namespace", ns)
            print(f"control plane, nodes and chart ready in {time.monotonic() - t:.1f}s")
            port = free_port()
            audit = Audit(cluster.audit_log)
            audit.mark()
            pid = cluster.start_operator(
                [
                    sys.executable,
                    "-m",
                    "chatmodel_operator.cli",
                    "operator",
                    "--metrics-address=127.0.0.1",
                    f"--metrics-port={port}",
                    f"--resync-seconds={RESYNC_SECONDS}",
                ]
            )
            wait(
                lambda: any(
                    c.verb == "watch" and c.resource == PLURAL for c in audit.calls(user=OPERATOR)
                ),
                60,
                "the operator's watch",
            )
            time.sleep(2)
            return measure(cluster, audit, pid, port, items, min_children, min_status, args)
        finally:
            if args.show_log and cluster.operator_log.exists():
                print(cluster.operator_log.read_text()[-5000:])
            cluster.down()


def measure(
    cluster: Cluster,
    audit: Audit,
    pid: int,
    port: int,
    items: list[tuple[str, str, dict[str, Any]]],
    min_children: int,
    min_status: int,
    args: argparse.Namespace,
) -> int:
    n = len(items)
    cpu0, _, _ = proc_stats(pid)
    recs0 = reconciles(port)
    audit.mark()
    t0 = time.monotonic()
    objects = [chatmodel(ns, name, spec) for ns, name, spec in items]
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    last = -1
    while (ready := phases(cluster)["Ready"]) < n:
        if ready != last:
            print(f"  {ready:4d}/{n} Ready after {time.monotonic() - t0:6.1f}s", flush=True)
            last = ready
        if time.monotonic() - t0 > args.timeout:
            print("timed out; phases:", phases(cluster))
            return 1
        time.sleep(2)
    wall = time.monotonic() - t0
    time.sleep(3)  # the last Ready's Event follows its status write
    cpu1, rss1, _ = proc_stats(pid)
    recs1 = reconciles(port)
    create_calls = audit.calls(user=OPERATOR)

    print(f"  all Ready after {wall:.1f}s; waiting for a full resync ({RESYNC_SECONDS:.0f}s) ...")
    audit.mark()
    wait(lambda: reconciles(port) >= recs1 + n, RESYNC_SECONDS * 3 + 120, "a full resync", every=5)
    cpu2, rss2, peak = proc_stats(pid)
    recs2 = reconciles(port)
    resync_writes = [c for c in audit.calls(user=OPERATOR) if c.is_write]

    by_hand, through = added_latency(cluster, args.latency_rounds)

    kinds = classify(create_calls)
    total = sum(kinds.values())
    minimum = min_children + min_status
    cpu_ms = 1000 * (cpu1 - cpu0) / max(recs1 - recs0, 1)
    resync_ms = 1000 * (cpu2 - cpu1) / max(recs2 - recs1, 1)
    rss = max(rss1, rss2)
    hand, oper = statistics.median(by_hand), statistics.median(through)
    print()
    print(
        f"ChatModels: {n} in {len(NAMESPACES)} namespaces; minimum requests {minimum / n:.2f} "
        f"per ChatModel ({min_children} children incl. shared Jobs and cache claims + "
        f"{min_status} status writes)"
    )
    for k, v in sorted(kinds.items()):
        print(f"  {k:42s} {v:6d}  {v / n:5.2f} per ChatModel")
    print(
        f"requests per ChatModel: {total / n:.2f} = {total / minimum:.2f} x minimum "
        f"(target <= {TARGETS['requests']}x)"
    )
    print(
        f"operator CPU to Ready: {cpu1 - cpu0:.2f}s over {recs1 - recs0:.0f} reconciles = "
        f"{cpu_ms:.1f} ms per reconcile (target <= {TARGETS['cpu_ms']:.0f} ms)"
    )
    print(
        f"operator CPU on resync: {cpu2 - cpu1:.2f}s over {recs2 - recs1:.0f} reconciles = "
        f"{resync_ms:.1f} ms per reconcile (all the process's CPU in the window)"
    )
    print(f"writes during one full resync: {len(resync_writes)} (target 0)")
    print(f"operator resident memory: {rss:.0f} MB, peak {peak:.0f} MB (target <= 200 MB)")
    print(f"wall time until all {n} Ready: {wall:.1f}s (information only)")
    print(
        f"apply to Ready, median of {len(through)}: {oper:.2f}s through the operator, "
        f"{hand:.2f}s for the same Job and Deployment by hand: the operator adds "
        f"{oper - hand:.2f}s ({oper / hand:.2f}x)"
    )
    return 0


def main() -> int:
    interrupt_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--show-log", action="store_true")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
