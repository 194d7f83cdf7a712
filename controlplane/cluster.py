"""A real Kubernetes control plane on this machine, for the tests, `make cluster` and `make demo`.

kube-apiserver (admission and RBAC on, Pod Security included), kube-controller-manager,
kube-scheduler and etcd, built from their own Go modules by ``build.sh``, started by kwokctl's
binary runtime. kwok plays the kubelets: fake GPU nodes whose pods go Running and Ready, and
whose Job pods complete. Every component listens on 127.0.0.1 (``bindAddress``), never on every
interface. kwokctl itself reaches the API server on 127.0.0.1 whatever ``bind`` says, so inside
a network namespace the caller made (controlplane/netns.py) the components stay on its
loopback and the API server only advertises the namespace's address (``apiserver_args``).

Standard library only, so it runs before the project's virtualenv exists.

    python3 controlplane/cluster.py up     # build what is missing, start, nodes and volumes
    python3 controlplane/cluster.py env    # `export KUBECONFIG=...` and `export PATH=...`
    python3 controlplane/cluster.py down   # stop everything it started
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_NAME = "chatmodel"
CHART = ROOT / "charts" / "chatmodel-operator"
RELEASE = "chatmodel-operator"
SYSTEM_NS = "chatmodel-system"

# The GPU products the examples plan for (examples/*.yaml), eight GPUs a node, with the labels
# NVIDIA's GPU Feature Discovery puts on real nodes: every example can become Ready.
GPU_NODES: tuple[tuple[str, int, int], ...] = (
    # (nvidia.com/gpu.product, nvidia.com/gpu.memory in MiB, nodes)
    ("NVIDIA-A100-SXM4-80GB", 81920, 2),
    ("NVIDIA-A100-SXM4-40GB", 40960, 2),
    ("NVIDIA-L4", 23034, 1),
    ("NVIDIA-A10", 23028, 1),
    ("NVIDIA-GeForce-RTX-4090", 24564, 1),
)
GPUS_PER_NODE = 8
COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
    "etcd",
)
# Volumes the cache claims bind to: no provisioner runs here, so the claims of the default
# (empty) StorageClass bind to these, as on a cluster with pre-provisioned storage.
CACHE_VOLUMES = 24
CACHE_VOLUME_SIZE = "4Ti"

# Every request, for the tests: who did what, and what the API server answered.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*"]
  - level: None
    users: ["system:apiserver"]
  - level: Metadata
"""


def build(*, keda: bool = False, quiet: bool = False) -> Path:
    """Build the binaries that are missing (a no-op when all are there); returns their folder.
    Prints build.sh's line per component on stderr as it comes, unless quiet."""
    args = [str(HERE / "build.sh"), *(["--keda"] if keda else [])]
    proc = subprocess.Popen(
        args,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:  # the last line is the folder; the others are progress
        if last and not quiet:
            print(last, file=sys.stderr, flush=True)
        last = line.rstrip("\n")
    if proc.wait() != 0:
        raise RuntimeError(f"controlplane/build.sh failed (exit {proc.returncode})")
    return Path(last)


def bin_dir() -> Path:
    out = subprocess.run(
        [str(HERE / "build.sh"), "--print-bin"], check=True, text=True, stdout=subprocess.PIPE
    ).stdout
    return Path(out.strip())


def default_workdir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatmodel-operator" / "clusters"


@dataclass
class Cluster:
    """One kwokctl cluster: its name, its working folder and the binaries it runs."""

    name: str = DEFAULT_NAME
    workdir: Path = field(default_factory=default_workdir)
    bin: Path = field(default_factory=bin_dir)
    bind: str = "127.0.0.1"
    apiserver_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.workdir / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig.yaml"

    @property
    def admin_kubeconfig(self) -> Path:
        """The admin's kubeconfig kwokctl writes for users (its own copy stays untouched)."""
        return self.workdir / f"{self.name}.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.home / "logs" / "audit.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir),
            "KUBECONFIG": str(self.admin_kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _config(self) -> Path:
        """kwokctl's configuration: our binaries, loopback, audit, the API server's flags."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        policy = self.workdir / f"{self.name}.audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        b = self.bin
        options = {
            "runtime": "binary",
            "bindAddress": self.bind,
            "kubeApiserverBinary": str(b / "kube-apiserver"),
            "kubeControllerManagerBinary": str(b / "kube-controller-manager"),
            "kubeSchedulerBinary": str(b / "kube-scheduler"),
            "kubectlBinary": str(b / "kubectl"),
            "etcdBinary": str(b / "etcd"),
            "kwokControllerBinary": str(b / "kwok"),
            "kubeAuthorization": True,
            "kubeAdmission": True,
            "kubeAuditPolicy": str(policy),
            # Stages as objects in the cluster (stages.yaml), so a test can change them.
            "enableCRDs": ["Stage"],
        }
        # One controller manager and one scheduler: without a second instance to take over,
        # leader election only makes them exit when the API server restarts (a kubelet would
        # start them again; nothing does here), so they run without it and keep retrying.
        # Every extra argument is appended, never "override": kwokctl's override only
        # rewrites an argument it passes itself and silently drops any other (leader-elect,
        # advertise-address); appended, the last occurrence of a flag wins.
        patches: list[dict[str, Any]] = [
            {
                "name": component,
                "extraArgs": [{"key": "leader-elect", "value": "false"}],
            }
            for component in ("kube-controller-manager", "kube-scheduler")
        ]
        if self.apiserver_args:
            patches.append(
                {
                    "name": "kube-apiserver",
                    "extraArgs": [{"key": k, "value": v} for k, v in self.apiserver_args.items()],
                }
            )
        doc: dict[str, Any] = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
        }
        if patches:
            doc["componentsPatches"] = patches
        path = self.workdir / f"{self.name}.kwokctl.json"
        path.write_text(json.dumps(doc, indent=2))
        return path

    def kwokctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kwokctl"), "--name", self.name, *args],
            env=self.env(),
            check=check,
            text=True,
            capture_output=True,
        )

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                str(self.bin / "kubectl"),
                "--kubeconfig",
                str(kubeconfig or self.admin_kubeconfig),
                *args,
            ],
            env=self.env(),
            input=input,
            text=True,
            capture_output=True,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        items = list(objects)
        if items:
            self.kubectl(
                "apply",
                "--server-side",
                "--field-manager=controlplane",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
            )

    def running(self) -> bool:
        return (
            self.kubeconfig.exists()
            and self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0
        )

    def up(self, *, timeout: float = 120.0) -> None:
        """Start the control plane and wait until it serves; then the nodes and volumes."""
        if self.running():
            return
        if self.home.exists():  # a cluster left half-made by a killed run
            self.kwokctl("delete", "cluster", check=False)
        for attempt in (1, 2):
            proc = self.kwokctl(
                "create",
                "cluster",
                "--config",
                str(self._config()),
                "--kubeconfig",
                str(self.admin_kubeconfig),
                "--wait",
                f"{int(timeout)}s",
                check=False,
            )
            if proc.returncode == 0:
                break
            # On a machine busy enough, kwokctl gives up on an API server still starting: say
            # what the API server logged, then try once more from scratch.
            apiserver_log = self.home / "logs" / "kube-apiserver.log"
            tail = (
                apiserver_log.read_text(errors="replace")[-2000:] if apiserver_log.exists() else ""
            )
            failure = f"kwokctl create cluster failed:\n{proc.stderr[-2000:]}\n{tail}"
            print(f"controlplane: attempt {attempt}: {failure}", file=sys.stderr)
            self.kwokctl("delete", "cluster", check=False)
            if attempt == 2:
                raise RuntimeError(failure)
        self.wait_ready(timeout)
        self.wait_established("stages.kwok.x-k8s.io", timeout)
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=controlplane",
            "-f",
            str(HERE / "stages.yaml"),
        )
        self.apply(gpu_nodes())
        self.apply(cache_volumes())

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.kubectl("get", "--raw", "/readyz", check=False)
            if proc.returncode == 0:
                # The default namespace's ServiceAccount is made by a controller: wait for it
                # too, or the first pod of a test is refused.
                sa = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
                if sa.returncode == 0:
                    return
            last = proc.stderr.strip()
            time.sleep(0.5)
        raise RuntimeError(f"the API server was not ready within {timeout:.0f}s: {last}")

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.kubectl(
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False,
            )
            if proc.stdout.strip() == "True":
                return
            time.sleep(0.3)
        raise RuntimeError(f"CRD {crd} was not Established within {timeout:.0f}s")

    def set_builds(self, *, hold: Iterable[str] = (), fail: Iterable[str] = ()) -> None:
        """Job pods in `hold` namespaces stay Running, in `fail` ones they fail; elsewhere they
        complete (the Stages in stages.yaml)."""
        held, failing = sorted(set(hold) | set(fail)) or ["-"], sorted(set(fail)) or ["-"]
        for stage, values in (("pod-complete", held), ("build-fail", failing)):
            self.kubectl(
                "patch",
                "stages.kwok.x-k8s.io",
                stage,
                "--type=json",
                "-p",
                json.dumps(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/selector/matchExpressions/3/values",
                            "value": values,
                        }
                    ]
                ),
            )

    def recycle_volumes(self) -> int:
        """Released cache volumes (their claim deleted) become Available again, as a volume
        provisioner would hand out a new one. Returns how many."""
        out = self.kubectl(
            "get", "pv", "-l", "chatmodel.io/test-volume=cache", "-o",
            "jsonpath={range .items[?(@.status.phase=='Released')]}{.metadata.name}{'\\n'}{end}",
        ).stdout.split()  # fmt: skip
        for name in out:
            self.kubectl(
                "patch", "pv", name, "--type=json",
                "-p", '[{"op": "remove", "path": "/spec/claimRef"}]',
                check=False,
            )  # fmt: skip
        return len(out)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin / "helm"), "--kubeconfig", str(self.admin_kubeconfig), *args],
            env=self.env(),
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"helm {args[0]} failed: {proc.stderr.strip() or proc.stdout}")
        return proc

    def install_chart(self, *args: str, chart: Path = CHART) -> None:
        """`helm install` of the chart (its CRDs included) into SYSTEM_NS; waits until the
        ChatModel API serves (a 429 "storage is (re)initializing" right after the install)."""
        self.helm("install", RELEASE, str(chart), "-n", SYSTEM_NS, "--create-namespace", *args)
        self.wait_established("chatmodels.serving.chatmodel.io")
        deadline = time.monotonic() + 60
        while self.kubectl("get", "chatmodels", "-A", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the ChatModel API was not served within 60s")
            time.sleep(0.3)

    @property
    def operator_kubeconfig(self) -> Path:
        return self.workdir / f"{self.name}.operator.kubeconfig"

    def write_operator_kubeconfig(self, hours: int = 12) -> Path:
        """A kubeconfig for the chart's ServiceAccount (a token from `kubectl create token`),
        so the operator has exactly the chart's RBAC rules: a missing rule is a 403."""
        token = self.kubectl(
            "create", "token", RELEASE, "-n", SYSTEM_NS, "--duration", f"{hours}h"
        ).stdout.strip()
        view = json.loads(self.kubectl("config", "view", "--minify", "--raw", "-o", "json").stdout)
        server = view["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "operator",
            "clusters": [{"name": self.name, "cluster": server}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [
                {"name": "operator", "context": {"cluster": self.name, "user": "operator"}}
            ],
        }
        path = self.operator_kubeconfig
        path.write_text(json.dumps(config, indent=1))  # kubeconfig may be JSON
        path.chmod(0o600)
        return path

    @property
    def operator_pidfile(self) -> Path:
        return self.workdir / f"{self.name}.operator.pid"

    @property
    def operator_log(self) -> Path:
        return self.workdir / f"{self.name}.operator.log"

    def start_operator(self, command: Sequence[str]) -> int:
        """Runs `command` (the operator) in the background under the chart's identity, its
        output in operator_log; `down` stops it."""
        self.stop_operator()
        env = {**self.env(), "KUBECONFIG": str(self.write_operator_kubeconfig())}
        with self.operator_log.open("ab") as log:
            proc = subprocess.Popen(
                list(command),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.operator_pidfile.write_text(str(proc.pid))
        return proc.pid

    def stop_operator(self, timeout: float = 20) -> None:
        try:
            pid = int(self.operator_pidfile.read_text())
        except (OSError, ValueError):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.killpg(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.operator_pidfile.unlink(missing_ok=True)

    def component_pid(self, component: str) -> int | None:
        """The pid of one of this cluster's processes (e.g. "kube-apiserver"), found by its
        binary and this cluster's folder on its command line."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if Path(argv[0].decode()).name == component and str(self.home).encode() in b" ".join(
                argv
            ):
                return int(proc.name)
        return None

    def _command_of(self, component: str) -> tuple[int, list[str], str] | None:
        pid = self.component_pid(component)
        if pid is None:
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return pid, [a.decode() for a in raw if a], os.readlink(f"/proc/{pid}/cwd")

    def _start(self, component: str, argv: list[str], cwd: str) -> int:
        with (self.home / "logs" / f"{component}.log").open("ab") as out:
            new = subprocess.Popen(
                argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        pidfile = self.home / "pids" / f"{component}.pid"
        if pidfile.parent.is_dir():  # kwokctl's own record, so `kwokctl delete` stops it
            pidfile.write_text(str(new.pid))
        return new.pid

    def restart_component(self, component: str, down_seconds: float = 0.0) -> float:
        """Stops one control-plane process (SIGTERM, as a rolling restart does), keeps it down
        for `down_seconds` and starts it again with the same command line. Returns the seconds
        until it answered again. The controller manager and the scheduler run without leader
        election (_config), so they keep retrying while the API server is away."""
        found = self._command_of(component)
        if found is None:
            raise RuntimeError(f"{component} of cluster {self.name} is not running")
        pid, argv, cwd = found
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(down_seconds)
        started = time.monotonic()
        self._start(component, argv, cwd)
        if component == "kube-apiserver":
            self.wait_ready(120)
        return time.monotonic() - started

    def set_durations(self, *, build_seconds: float = 0, start_seconds: float = 0) -> None:
        """How long kwok takes to complete a Job's pod (an engine build) and to make a pod
        Ready (a model loading): 0 (the tests) or a few seconds, so that `kubectl get chm -w`
        shows each phase as a real cluster would, only faster (the demo)."""
        for stage, seconds in (("pod-complete", build_seconds), ("pod-ready", start_seconds)):
            delay = {"spec": {"delay": {"durationMilliseconds": int(seconds * 1000)}}}
            self.kubectl(
                "patch", "stages.kwok.x-k8s.io", stage, "--type=merge", "-p", json.dumps(delay)
            )

    def down(self) -> None:
        self.stop_operator()
        if self.home.exists():
            self.kwokctl("delete", "cluster", check=False)
        # Whatever kwokctl did not know about (a component a test restarted) stops too.
        for component in COMPONENTS:
            pid = self.component_pid(component)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for leftover in (self.admin_kubeconfig, self.operator_kubeconfig):
            leftover.unlink(missing_ok=True)

    def server(self) -> str:
        out = self.kubectl(
            "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
        )
        return out.stdout.strip()


def gpu_nodes(extra: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """GPU_NODES as Node objects, plus `extra` nodes of some products (a benchmark's 500
    ChatModels need more GPUs than the tests)."""
    nodes = []
    for product, memory, count in GPU_NODES:
        for i in range(count + (extra or {}).get(product, 0)):
            slug = product.lower().replace("nvidia-", "").replace("geforce-", "")
            name = f"gpu-{slug}-{i}"
            capacity = {
                "cpu": "96",
                "memory": "1Ti",
                "pods": "110",
                "ephemeral-storage": "2Ti",
                "nvidia.com/gpu": str(GPUS_PER_NODE),
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            "nvidia.com/gpu.present": "true",
                            "nvidia.com/gpu.product": product,
                            "nvidia.com/gpu.memory": str(memory),
                            "nvidia.com/gpu.count": str(GPUS_PER_NODE),
                        },
                    },
                    "spec": {
                        "taints": [
                            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
                        ]
                    },
                    "status": {"allocatable": capacity, "capacity": capacity},
                }
            )
    # One plain node for pods that ask for no GPU (the chart's operator Deployment).
    plain = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    nodes.append(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "cpu-0",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": "cpu-0",
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                },
            },
            "status": {"allocatable": plain, "capacity": plain},
        }
    )
    return nodes


def cache_volumes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"cache-{i:02d}", "labels": {"chatmodel.io/test-volume": "cache"}},
            "spec": {
                "capacity": {"storage": CACHE_VOLUME_SIZE},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                # Retain: nothing here can delete a hostPath volume (a Delete volume goes
                # Failed once its claim is gone); recycle_volumes() makes it Available again.
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/var/lib/chatmodel-test/cache-{i:02d}"},
            },
        }
        for i in range(CACHE_VOLUMES)
    ]


def free_port(address: str = "127.0.0.1") -> int:
    """A port free on `address` now (for a process about to bind it)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def interrupt_on_sigterm() -> None:
    """A SIGTERM (CI's timeout, `timeout`, a kill) ends the caller as Ctrl-C does, so its
    finally blocks and fixture teardowns still stop every process a control plane started."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="controlplane/cluster.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("build", "up", "down", "env", "status"))
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--keda", action="store_true", help="build KEDA's operator and adapter too")
    parser.add_argument(
        "--chart", action="store_true", help="up: install the chart (helm install) too"
    )
    parser.add_argument(
        "--operator",
        metavar="CHATMODEL",
        help="up: run this `chatmodel` executable's operator in the background, logged in as "
        "the chart's ServiceAccount (implies --chart)",
    )
    parser.add_argument(
        "--build-seconds", type=float, default=0, help="up: how long a build Job's pod runs"
    )
    parser.add_argument(
        "--start-seconds", type=float, default=0, help="up: how long a pod takes to be Ready"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        build(keda=args.keda)
        return 0
    cluster = Cluster(name=args.name)
    if args.command == "up":
        cluster.bin = build(keda=args.keda)
        started = time.monotonic()
        cluster.up()
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        say(f"control plane {args.name} ready in {time.monotonic() - started:.1f}s")
        if args.build_seconds or args.start_seconds:
            cluster.set_durations(
                build_seconds=args.build_seconds, start_seconds=args.start_seconds
            )
            say(f"kwok: builds take {args.build_seconds:g}s, pods {args.start_seconds:g}s to start")
        if args.chart or args.operator:
            if cluster.helm("list", "-n", SYSTEM_NS, "-q").stdout.split().count(RELEASE):
                say(f"chart: release {RELEASE} already installed in {SYSTEM_NS}")
            else:
                t = time.monotonic()
                cluster.install_chart()
                say(f"chart: helm install {RELEASE} -n {SYSTEM_NS} in {time.monotonic() - t:.1f}s")
        if args.operator:
            port = free_port()
            pid = cluster.start_operator(
                [args.operator, "operator", "--metrics-address=127.0.0.1", f"--metrics-port={port}"]
            )
            say(
                f"operator: pid {pid}, as system:serviceaccount:{SYSTEM_NS}:{RELEASE}, "
                f"metrics on http://127.0.0.1:{port}/metrics, log {cluster.operator_log}"
            )
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
        print(f"export PATH={cluster.bin}:$PATH")
    elif args.command == "down":
        cluster.down()
    elif args.command == "env":
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
        print(f"export PATH={cluster.bin}:$PATH")
    elif args.command == "status":
        return 0 if cluster.running() else 1
    return 0


if __name__ == "__main__":
    if shutil.which("go") is None and not (bin_dir() / "kube-apiserver").exists():
        print("controlplane: Go >= 1.26 is needed to build the control plane", file=sys.stderr)
        sys.exit(2)
    sys.exit(_main())
