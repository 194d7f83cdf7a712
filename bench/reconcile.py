"""Reconcile benchmark: 500 ChatModels created at once against kmock's Kubernetes emulator,
each taken to Ready by the real operator running as a separate process.

This process runs the emulator and plays the Job controller and the kubelet (Jobs complete,
Deployments report their replicas ready); the operator process is `chatmodel operator`'s
code path (kopf + handlers + reconcile) with the emulator as its cluster. Printed:

* API requests per ChatModel against the minimum possible (its children plus one status
  write), split into child writes, status writes, Events, kopf's own writes and reads;
* the operator process's CPU time (user + system) per reconcile, and per ChatModel;
* writes during one full resync with nothing changed (target 0);
* the operator's resident memory (target < 250 MB);
* wall-clock time until all are Ready (information only: the emulator dominates it).

The operator runs as shipped, with its 5 s status settle window: a ChatModel whose steps all
pass within it costs one status write and one Event (`--status-settle-seconds 0` in
``chatmodel operator`` writes every phase; the bench's Jobs take 0.5 s, real builds minutes).

Targets: requests <= 1.2 x minimum, <= 15 ms CPU per reconcile, 0 writes on resync.
Run: ``python bench/reconcile.py`` (``BENCH_CHATMODELS=100`` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import kmock
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from emulator import KEDA, MONITORING, ApiServer, Controllers  # noqa: E402

from chatmodel_operator.api import parse_spec  # noqa: E402
from chatmodel_operator.api.spec import API_VERSION, GROUP, PLURAL, VERSION  # noqa: E402
from chatmodel_operator.plan import plan_model  # noqa: E402
from chatmodel_operator.render import render_children  # noqa: E402

N = int(os.environ.get("BENCH_CHATMODELS", "500"))
NAMESPACES = ("team-a", "team-b", "team-c", "team-d")
RESYNC_SECONDS = float(os.environ.get("BENCH_RESYNC_SECONDS", "30"))
OPERATOR_AGENTS = ("chatmodel-operator", "kopf/")
TICKS = os.sysconf("SC_CLK_TCK")

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


def minimum_requests(items: list[tuple[str, str, dict[str, Any]]]) -> tuple[int, int]:
    """(children to create, status writes): what any operator must write at the least."""
    jobs: set[tuple[str, str]] = set()
    pvcs: set[tuple[str, str]] = set()
    serving = 0
    for namespace, name, raw in items:
        spec = parse_spec(raw)
        _, plan = plan_model(spec)
        children = render_children(
            name=name,
            namespace=namespace,
            uid="u",
            spec=spec,
            plan=plan,
            repository={},
        )
        jobs.add((namespace, children.build_job["metadata"]["name"]))
        pvcs.add((namespace, children.cache_pvc["metadata"]["name"]))
        serving += len(children.serving)
    return serving + len(jobs) + len(pvcs), len(items)


# --- the operator process ------------------------------------------------------------------


def operator_main(args: argparse.Namespace) -> None:
    """Runs in the child process: the same registry `chatmodel operator` runs."""
    import logging

    import kopf

    from chatmodel_operator import metrics
    from chatmodel_operator.handlers import OperatorConfig, build_registry
    from chatmodel_operator.runner import quiet_kopf

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_kopf(args.log_level)
    metrics.start_metrics_server(args.metrics_port, addr="127.0.0.1")
    config = OperatorConfig(resync_seconds=args.resync_seconds, login=kopf.login_with_kubeconfig)
    try:
        from chatmodel_operator.triton import build_repository_for  # noqa: F401
    except ImportError:  # the data plane is not in this checkout yet: a one-file stand-in
        from pathlib import PurePosixPath

        config.build_repository = lambda *, spec, plan, model: {
            PurePosixPath("ensemble/config.pbtxt"): f"# {plan.engine_key}\n"
        }
    run = lambda: asyncio.run(kopf.operator(registry=build_registry(config), clusterwide=True))  # noqa: E731
    if os.environ.get("BENCH_TRACEMALLOC"):  # what the operator's memory holds, at exit
        import atexit
        import tracemalloc

        if not tracemalloc.is_tracing():
            tracemalloc.start(8)

        def dump() -> None:
            snap = tracemalloc.take_snapshot()
            total = sum(st.size for st in snap.statistics("filename"))
            print(f"tracemalloc: {total / 2**20:.1f} MiB traced", flush=True)
            for st in snap.statistics("filename")[:15]:
                print(st, flush=True)
            for st in snap.statistics("lineno")[:25]:
                print(st, flush=True)

        atexit.register(dump)
        import signal

        signal.signal(signal.SIGUSR1, lambda *_: dump())
    if os.environ.get("BENCH_PROFILE"):  # where the operator's CPU goes: cProfile to this file
        import cProfile

        cProfile.runctx("run()", globals(), {"run": run}, os.environ["BENCH_PROFILE"])
    else:
        run()


# --- the benchmark -------------------------------------------------------------------------


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


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("chatmodel_reconciles_total") or line.startswith(
            "chatmodel_chatmodels{"
        ):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def reconciles(port: int) -> float:
    return sum(v for k, v in scrape(port).items() if k.startswith("chatmodel_reconciles_total"))


def operator_calls(api: ApiServer) -> list[Any]:
    return [c for c in api.calls if c.user_agent.startswith(OPERATOR_AGENTS)]


async def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace) -> int:
    items = [(NAMESPACES[i % len(NAMESPACES)], f"chat-{i:04d}", spec_for(i)) for i in range(N)]
    min_children, min_status = minimum_requests(items)
    async with ApiServer() as api, kmock.Server(api) as srv:
        api.keep_bodies = False
        api.register(MONITORING, KEDA)
        for ns in NAMESPACES:
            api.put("", "v1", "namespaces", {"metadata": {"name": ns}})
        controllers = Controllers(api, job_delay=0.5)
        controllers.start()
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "current-context": "e",
                        "clusters": [
                            {"name": "e", "cluster": {"server": str(srv.url).rstrip("/")}}
                        ],
                        "users": [{"name": "u", "user": {"token": "t"}}],
                        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                    }
                )
            )
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
            if os.environ.get("BENCH_TRACEMALLOC"):
                env["PYTHONTRACEMALLOC"] = "1"  # from the first import on
            log = open(Path(tmp) / "operator.log", "w")  # noqa: SIM115 - closed below
            common = [
                "--metrics-port",
                str(args.metrics_port),
                "--resync-seconds",
                str(RESYNC_SECONDS),
                "--log-level",
                args.log_level,
            ]
            if os.environ.get("BENCH_PROFILE") or os.environ.get("BENCH_TRACEMALLOC"):
                command = [sys.executable, __file__, "_operator", *common]  # instrumented
            else:  # the command as shipped
                command = [sys.executable, "-m", "chatmodel_operator.cli", "operator", *common]
            proc = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                return await measure(api, proc, items, min_children, min_status, args)
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()
                if args.show_log:
                    print((Path(tmp) / "operator.log").read_text()[-5000:])
                await controllers.stop()


async def measure(
    api: ApiServer,
    proc: subprocess.Popen[bytes],
    items: list[tuple[str, str, dict[str, Any]]],
    min_children: int,
    min_status: int,
    args: argparse.Namespace,
) -> int:
    port = args.metrics_port
    await wait(
        lambda: any(c.verb == "watch" and c.plural == PLURAL for c in api.calls), 60, "the operator"
    )
    await wait(lambda: _ok(lambda: reconciles(port) >= 0), 30, "the metrics endpoint")
    await asyncio.sleep(1.0)
    cpu0, _, _ = proc_stats(proc.pid)
    calls0 = len(api.calls)
    t0 = time.monotonic()
    for namespace, name, spec in items:  # all at once: no waiting between creations
        api.put(
            GROUP,
            VERSION,
            PLURAL,
            {
                "apiVersion": API_VERSION,
                "kind": "ChatModel",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            },
        )

    def ready() -> int:
        return sum(
            1
            for o in api.items(GROUP, VERSION, PLURAL)
            if (o.get("status") or {}).get("phase") == "Ready"
        )

    last = -1
    while (n := ready()) < len(items):
        if n != last:
            print(f"  {n:4d}/{len(items)} Ready after {time.monotonic() - t0:6.1f}s", flush=True)
            last = n
        if time.monotonic() - t0 > args.timeout:
            print(
                "timed out; phases:",
                Counter(
                    (o.get("status") or {}).get("phase") for o in api.items(GROUP, VERSION, PLURAL)
                ),
            )
            return 1
        await asyncio.sleep(0.5)
    wall = time.monotonic() - t0
    await asyncio.sleep(1.0)  # the last Ready's Event follows its status write
    cpu1, rss1, _ = proc_stats(proc.pid)
    recs1 = reconciles(port)
    create_calls = operator_calls_since(api, calls0)
    calls1 = len(api.calls)

    # One full resync: every ChatModel passes through reconcile once more, nothing changed.
    print(
        f"  all Ready after {wall:.1f}s; waiting for a full resync "
        f"({RESYNC_SECONDS:.0f}s period) ...",
        flush=True,
    )
    # /metrics is polled rarely: rendering a few thousand series costs the operator CPU.
    deadline = time.monotonic() + RESYNC_SECONDS * 3 + 60
    while reconciles(port) < recs1 + len(items) and time.monotonic() < deadline:
        await asyncio.sleep(5)  # a scrape every 5 s costs the operator next to nothing
    cpu2, rss2, peak = proc_stats(proc.pid)
    if os.environ.get("BENCH_SMAPS"):  # where the resident memory is, by mapping
        maps: Counter[str] = Counter()
        name = ""
        for line in Path(f"/proc/{proc.pid}/smaps").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0]:
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                maps[name] += int(parts[1])
        for name, kb in maps.most_common(8):
            print(f"  {kb / 1024:7.1f} MB {name}")
        print("  threads:", len(os.listdir(f"/proc/{proc.pid}/task")))
    if os.environ.get("BENCH_TRACEMALLOC"):
        proc.send_signal(__import__("signal").SIGUSR1)
        await asyncio.sleep(5)
    recs2 = reconciles(port)
    if recs2 < recs1 + len(items):
        print(f"  only {recs2 - recs1:.0f} passes in the resync window", flush=True)
    resync_calls = operator_calls_since(api, calls1)

    report(
        items,
        create_calls,
        resync_calls,
        min_children,
        min_status,
        cpu1 - cpu0,
        recs1,
        cpu2 - cpu1,
        recs2 - recs1,
        max(rss1, rss2),
        peak,
        wall,
    )
    return 0


def operator_calls_since(api: ApiServer, start: int) -> list[Any]:
    return [c for c in api.calls[start:] if c.user_agent.startswith(OPERATOR_AGENTS)]


def _ok(fn: Any) -> bool:
    try:
        return bool(fn())
    except OSError:
        return False


def report(
    items: list[Any],
    calls: list[Any],
    resync_calls: list[Any],
    min_children: int,
    min_status: int,
    cpu_create: float,
    recs_create: float,
    cpu_resync: float,
    recs_resync: float,
    rss: float,
    peak: float,
    wall: float,
) -> None:
    n = len(items)
    kinds: Counter[str] = Counter()
    for c in calls:
        if c.verb in ("watch",) or c.verb == "discovery":
            continue
        if c.user_agent.startswith("kopf/"):
            kinds["kopf writes (last-handled annotation)" if c.is_write else "kopf reads"] += 1
        elif c.plural == "events":
            kinds["events"] += 1
        elif c.resource == f"{PLURAL}/status":
            kinds["status writes"] += 1
        elif c.is_write:
            kinds["child writes"] += 1
        else:
            kinds["reads"] += 1
    total = sum(kinds.values())
    detail = Counter(
        (c.verb, c.resource, c.status) for c in calls if c.verb not in ("watch", "discovery")
    )
    if os.environ.get("BENCH_DETAIL"):
        for k, v in sorted(detail.items()):
            print("   ", k, v)
        conflicts = {c.name for c in calls if c.status == 409}
        for i, c in enumerate(calls):
            if c.name in conflicts and c.verb != "watch":
                print("      ", i, c.verb, c.resource, c.namespace, c.name, c.status)
    minimum = min_children + min_status
    resync_writes = sum(1 for c in resync_calls if c.is_write)
    print()
    print(
        f"ChatModels: {n} in {len(NAMESPACES)} namespaces; minimum requests {minimum / n:.2f} per "
        f"ChatModel ({min_children} children incl. shared Jobs and cache volumes + "
        f"{min_status} status writes)"
    )
    for k, v in sorted(kinds.items()):
        print(f"  {k:42s} {v:6d}  {v / n:5.2f} per ChatModel")
    no_events = total - kinds["events"]
    print(
        f"  requests per ChatModel: {total / n:.2f} = {total / minimum:.2f} x minimum "
        f"({no_events / n:.2f} = {no_events / minimum:.2f} x without Events)"
    )
    print(
        f"operator CPU to Ready: {cpu_create:.2f}s over {recs_create:.0f} reconciles = "
        f"{1000 * cpu_create / max(recs_create, 1):.1f} ms per reconcile, "
        f"{1000 * cpu_create / n:.1f} ms per ChatModel"
    )
    print(
        f"operator CPU on resync: {cpu_resync:.2f}s over {recs_resync:.0f} reconciles = "
        f"{1000 * cpu_resync / max(recs_resync, 1):.1f} ms per reconcile "
        "(all the process's CPU in the window, idle work included)"
    )
    print(f"writes during one full resync: {resync_writes}")
    print(f"operator resident memory: {rss:.0f} MB (peak {peak:.0f} MB)")
    print(f"wall time until all Ready: {wall:.1f}s (information only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    op = sub.add_parser("_operator")
    op.add_argument("--metrics-port", type=int, required=True)
    op.add_argument("--resync-seconds", type=float, required=True)
    op.add_argument("--log-level", default="INFO")
    parser.add_argument("--metrics-port", type=int, default=18080)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--log-level", default="INFO", help="the operator's log level (as deployed: INFO)"
    )
    parser.add_argument("--show-log", action="store_true")
    args = parser.parse_args()
    if args.mode == "_operator":
        operator_main(args)
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
