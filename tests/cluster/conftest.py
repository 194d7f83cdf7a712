"""Fixtures for the cluster tier: one real control plane per test run (kube-apiserver with
admission and RBAC, kube-controller-manager, kube-scheduler, etcd, kwok's GPU nodes; see
controlplane/), the chart installed by the real helm, and the real kopf operator logged in with
the token of the ServiceAccount the chart made, so a missing RBAC rule is a 403.

Each test gets a namespace of its own and an operator that watches only it."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
from admin import CM, NAMESPACES, Admin, Audit, Call, conditions, iter_events, wait_until

from chatmodel_operator import metrics
from chatmodel_operator.adapters.kube import RetryPolicy
from chatmodel_operator.api.spec import API_VERSION
from chatmodel_operator.handlers import OperatorConfig, build_registry
from chatmodel_operator.reconcile import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "controlplane"))
from cluster import RELEASE, SYSTEM_NS, Cluster, build, interrupt_on_sigterm  # noqa: E402

OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator_config(**kw): OperatorConfig fields for the operator fixture"
    )
    config.addinivalue_line("markers", "namespace_labels(**kw): labels of the test's namespace")
    config.addinivalue_line("markers", "restarts_apiserver: the test restarts kube-apiserver")


SMALL_SPEC: dict[str, Any] = {
    "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    "serving": {"replicas": 2},
}


def chatmodel(name: str, spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(spec),
    }


# --- the control plane, once per run -------------------------------------------------------


@dataclass
class ControlPlane:
    cluster: Cluster
    admin: Admin
    audit_log: Path
    operator_kubeconfig: Path


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = time.monotonic()
    interrupt_on_sigterm()
    bin_dir = build(quiet=True)
    work = Path(tmp_path_factory.mktemp("kwok"))
    cluster = Cluster(name=f"chm-test-{os.getpid()}", workdir=work, bin=bin_dir)
    try:
        cluster.up(timeout=180)
        admin = Admin(cluster.admin_kubeconfig, bin_dir / "kubectl")
        cluster.install_chart()
        kubeconfig = cluster.write_operator_kubeconfig()
        print(f"\ncontrol plane up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield ControlPlane(cluster, admin, cluster.audit_log, kubeconfig)
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Admin:
    return control_plane.admin


_counter = itertools.count(1)


@pytest.fixture
def ns(control_plane: ControlPlane, admin: Admin, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for this test alone, deleted (with everything in it) afterwards."""
    marker = request.node.get_closest_marker("namespace_labels")
    name = f"t{next(_counter):03d}-{request.node.name.lower()[:40]}"
    name = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")[:60].rstrip("-")
    labels = dict(marker.kwargs) if marker else {}
    control_plane.cluster.recycle_volumes()  # the volumes of earlier tests' claims
    admin.create(NAMESPACES, None, {"metadata": {"name": name, "labels": labels}})
    wait_until(
        lambda: any(
            sa["metadata"]["name"] == "default"
            for sa in admin.items(("", "v1", "serviceaccounts"), name)
        ),
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    admin.delete(NAMESPACES, None, name)


# --- the operator ----------------------------------------------------------------------------

# Steps that pass within 0.3 s share one status write (production: 5 s).
FAST = Settings(
    build_backoff_s=0.5, build_backoff_max_s=1.0, retry_delay_s=0.5, status_settle_s=0.3
)


def fast_config(**kw: Any) -> OperatorConfig:
    kw.setdefault("settings", FAST)
    kw.setdefault("retry", RetryPolicy(attempts=6, first_delay=0.1, max_delay=1.0, timeout=10.0))
    kw.setdefault("resync_seconds", 3600)
    kw.setdefault("peering_poll_seconds", 0.5)
    kw.setdefault("clusterwide", False)
    return OperatorConfig(**kw)


@dataclass
class Operator:
    """The real kopf operator in a thread with its own event loop, as the chart's identity."""

    config: OperatorConfig
    audit: Audit
    namespaces: tuple[str, ...] = ()
    thread: threading.Thread | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)
    memo: kopf.Memo = field(default_factory=kopf.Memo)
    error: BaseException | None = None

    def start(self, *, watching: bool = True) -> None:
        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.memo = kopf.Memo()
        registry = build_registry(self.config)
        since = self.audit.log.stat().st_size if self.audit.log.exists() else 0

        def main() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=registry,
                        clusterwide=self.config.clusterwide,
                        namespaces=list(self.namespaces),
                        stop_flag=self.stop_flag,
                        ready_flag=ready,
                        memo=self.memo,
                    )
                )
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
        self.thread.start()
        wait_until(ready.is_set, 60, what="the operator to start")
        if watching:
            wait_until(
                lambda: any(
                    c.verb == "watch" and c.resource == CM[2]
                    for c in self.audit.calls(since=since, user=OPERATOR_USER)
                ),
                60,
                what="the operator's ChatModel watch",
            )

    def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        self.thread.join(60)
        alive = self.thread.is_alive()
        self.thread = None
        assert not alive, "the operator did not stop within 60s"
        assert self.error is None, self.error

    @property
    def ctx(self) -> Any:
        return self.memo.ctx


@pytest.fixture
def audit(control_plane: ControlPlane) -> Audit:
    a = Audit(control_plane.audit_log)
    a.mark()
    return a


@pytest.fixture
def operator(
    control_plane: ControlPlane,
    ns: str,
    audit: Audit,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Operator]:
    metrics.reset_for_tests()
    monkeypatch.setenv("KUBECONFIG", str(control_plane.operator_kubeconfig))
    marker = request.node.get_closest_marker("operator_config")
    op = Operator(fast_config(**(marker.kwargs if marker else {})), audit, namespaces=(ns,))
    op.start()
    yield op
    op.stop()
    calls = audit.calls(user=OPERATOR_USER)
    restarted = request.node.get_closest_marker("restarts_apiserver") is not None
    (RESTART_CALLS if restarted else ALL_CALLS).extend(calls)


# Every request the operator made in this run, for the RBAC check (test_zz_rbac.py runs last).
ALL_CALLS: list[Call] = []
# Those of tests that restart the API server: its authorizer's caches are empty for a moment
# after a start, so a request there may be refused though its rule exists (a real server's
# warm-up, not a missing rule). They count as exercised uses; their refusals do not count.
RESTART_CALLS: list[Call] = []


# --- what tests read -------------------------------------------------------------------------


@dataclass
class Models:
    """ChatModels in one test's namespace, read and written as the admin."""

    admin: Admin
    ns: str

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.admin.create(CM, self.ns, chatmodel(name, spec, self.ns))

    def get(self, name: str) -> dict[str, Any]:
        return self.admin.get(CM, self.ns, name) or {}

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return conditions(self.get(name)).get(type_, {})

    def events(self, name: str) -> list[dict[str, Any]]:
        # Timestamps have one-second resolution; etcd's revision orders them exactly.
        return sorted(
            iter_events(self.admin, self.ns, name, "ChatModel"),
            key=lambda e: int(e["metadata"]["resourceVersion"]),
        )

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> dict[str, Any]:
        wait_until(
            lambda: self.phase(name) == phase,
            timeout,
            what=f"{name} to be {phase} (is {self.phase(name)})",
        )
        return self.status(name)

    def replace_spec(self, name: str, spec: dict[str, Any]) -> None:
        """As `kubectl apply` of an edited file: the whole spec replaced in one write."""
        self.admin.json_patch(
            CM, self.ns, name, [{"op": "replace", "path": "/spec", "value": spec}]
        )


@pytest.fixture
def models(admin: Admin, ns: str) -> Models:
    return Models(admin, ns)


def spec_with(**changes: Any) -> dict[str, Any]:
    """SMALL_SPEC with changes given as a__b=value for spec.a.b."""
    spec = copy.deepcopy(SMALL_SPEC)
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return spec


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
