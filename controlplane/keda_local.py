"""KEDA on the test control plane: its operator and its metrics API server (the adapter),
built from github.com/kedacore/keda/v2 by ``build.sh --keda``, run as local processes.

The adapter serves ``external.metrics.k8s.io`` behind an APIService. The API server refuses a
loopback address in an EndpointSlice, so the adapter must listen on an address the API server
reaches that is not loopback: the 10.x address of a network namespace the caller made and
runs the control plane in (``Cluster(bind=address, apiserver_args=APISERVER_ARGS)``). Nothing
here binds outside it: the caller starts this inside the namespace.

What a Deployment of KEDA would do, done here by hand:
  - the CRDs from the module's own ``config/crd/bases``;
  - one CA and one certificate (openssl) for the adapter's serving port, the operator's gRPC
    metrics service and the mutual TLS between them, in place of KEDA's cert rotation
    (``--enable-cert-rotation``, which names the Services' DNS names only);
  - Service ``keda/keda-metrics-apiserver`` without a selector, an EndpointSlice at
    ``address`` and the APIService with the CA as its caBundle.
Both run as the cluster admin (kwokctl's kubeconfig), not under KEDA's own RBAC.

Standard library only, like cluster.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import HERE, Cluster, free_port

NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
OPERATOR_SERVICE = "keda-operator"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
# The API server's flags for an aggregated API served from inside the network namespace: it
# connects to the EndpointSlice's address instead of the Service's ClusterIP (no kube-proxy).
APISERVER_ARGS = {"enable-aggregator-routing": "true"}


def version() -> str:
    """KEDA_VERSION, from the environment or versions.env (as build.sh reads it)."""
    pinned = os.environ.get("KEDA_VERSION")
    if pinned:
        return pinned
    for line in (HERE / "versions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "KEDA_VERSION":
            return value.strip()
    raise RuntimeError("KEDA_VERSION is not in controlplane/versions.env")


def module_dir(ver: str | None = None) -> Path:
    """KEDA's module in Go's module cache (downloaded by the build; a no-op then)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{ver or version()}"],
        check=True,
        text=True,
        capture_output=True,
        cwd=HERE / "keda",
    ).stdout
    return Path(json.loads(out)["Dir"])


def crd_files(ver: str | None = None) -> list[Path]:
    return sorted((module_dir(ver) / "config" / "crd" / "bases").glob("*.yaml"))


def make_certificates(folder: Path, address: str) -> None:
    """ca.crt, tls.crt and tls.key as KEDA's cert-dir holds them: one certificate for serving
    and for the client side of the operator-adapter mutual TLS."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [
        f"{service}.{NAMESPACE}.svc{suffix}"
        for service in (METRICS_SERVICE, OPERATOR_SERVICE)
        for suffix in ("", ".cluster.local")
    ]
    ext = folder / "ext.cnf"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={','.join(f'DNS:{n}' for n in names)},IP:{address},IP:127.0.0.1\n"
    )

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=keda-test-ca"],
        ["req", *key, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={OPERATOR_SERVICE}"],
        ["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-out", "tls.crt"],
    ):
        # Two days: a test run's lifetime, with room for a clock that is off.
        subprocess.run(
            [
                "openssl",
                *args,
                "-days",
                "2",
                *(["-extfile", "ext.cnf"] if args[0] == "x509" else []),
            ],
            check=True,
            capture_output=True,
            cwd=folder,
        )


@dataclass
class Keda:
    """KEDA's operator and adapter for one cluster; ``start`` installs and starts them, ``stop``
    stops every process it started (by process group)."""

    cluster: Cluster
    address: str  # the network namespace's address the API server reaches the adapter on
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    def log(self, component: str) -> Path:
        return self.workdir / f"{component}.log"

    def _env(self) -> dict[str, str]:
        return {
            **self.cluster.env(),
            "WATCH_NAMESPACE": "",  # every namespace
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        }

    def _spawn(self, component: str, args: Sequence[str]) -> None:
        with self.log(component).open("ab") as out:
            self.procs[component] = subprocess.Popen(
                [str(self.cluster.bin / component), *args],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )

    def install_crds(self) -> None:
        for path in crd_files():
            self.cluster.kubectl(
                "apply", "--server-side", "--field-manager=controlplane", "-f", str(path)
            )
        for crd in ("scaledobjects.keda.sh", "triggerauthentications.keda.sh"):
            self.cluster.wait_established(crd)

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_certificates(self.certs, self.address)
        self.install_crds()
        kubeconfig = str(self.cluster.admin_kubeconfig)
        grpc_port = free_port(self.address)
        secure_port = free_port(self.address)
        self._spawn(
            "keda-operator",
            [
                "--leader-elect=false",
                "--zap-log-level=info",
                "--zap-encoder=console",
                f"--kubeconfig={kubeconfig}",
                f"--metrics-bind-address=127.0.0.1:{free_port('127.0.0.1')}",
                f"--health-probe-bind-address=127.0.0.1:{free_port('127.0.0.1')}",
                f"--metrics-service-bind-address={self.address}:{grpc_port}",
                f"--cert-dir={self.certs}",
                f"--ca-dir={self.certs}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
            ],
        )
        self._spawn(
            "keda-adapter",
            [
                "--zap-log-level=info",
                "--zap-encoder=console",
                f"--bind-address={self.address}",
                f"--secure-port={secure_port}",
                f"--port={free_port('127.0.0.1')}",  # its own /metrics
                f"--cert-dir={self.certs}",
                f"--tls-cert-file={self.certs / 'tls.crt'}",
                f"--tls-private-key-file={self.certs / 'tls.key'}",
                # The API server proxies with its front-proxy certificate (kwokctl: the admin's,
                # signed by the cluster's CA).
                f"--client-ca-file={self.cluster.home / 'pki' / 'ca.crt'}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--metrics-service-address={self.address}:{grpc_port}",
                f"--metrics-service-grpc-authority={OPERATOR_SERVICE}.{NAMESPACE}.svc",
            ],
        )
        self.cluster.apply(self._api_objects(secure_port))
        self.wait_available(timeout)

    def _api_objects(self, port: int) -> list[dict[str, Any]]:
        ca_bundle = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": METRICS_SERVICE,
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": METRICS_SERVICE},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": API_SERVICE},
                "spec": {
                    "service": {"name": METRICS_SERVICE, "namespace": NAMESPACE, "port": 443},
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "caBundle": ca_bundle,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ]

    def wait_available(self, timeout: float) -> None:
        """Until the APIService is Available (the API server reached the adapter) and the
        external metrics API answers through it."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for component, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{component} exited {proc.returncode}:\n{self.tail(component)}"
                    )
            jsonpath = "jsonpath={.status.conditions[?(@.type=='Available')]}"
            got = self.cluster.kubectl(
                "get", "apiservice", API_SERVICE, "-o", jsonpath, check=False
            )
            last = got.stdout.strip() or got.stderr.strip()
            if '"status":"True"' in last.replace(" ", ""):
                raw = self.cluster.kubectl(
                    "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1", check=False
                )
                if raw.returncode == 0:
                    return
                last = raw.stderr.strip()
            time.sleep(0.5)
        raise RuntimeError(
            f"KEDA's metrics API was not available within {timeout:.0f}s: {last}\n"
            f"adapter: {self.tail('keda-adapter')}"
        )

    def tail(self, component: str, n: int = 3000) -> str:
        try:
            return self.log(component).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()
