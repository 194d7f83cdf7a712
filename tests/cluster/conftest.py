"""Fixtures for the emulated-cluster tier: the API server, the operator in-process, and the
controllers the tests play (Job controller, Deployment controller and kubelet)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml
from emulator import KEDA, MONITORING, PEERING, ApiServer
from validation import Validator

from chatmodel_operator import metrics
from chatmodel_operator.api.spec import API_VERSION, GROUP, PLURAL, VERSION
from chatmodel_operator.handlers import OperatorConfig, build_registry
from chatmodel_operator.reconcile import Settings

NS = "models"
CM = (GROUP, VERSION, PLURAL)
OPERATOR_AGENT = "chatmodel-operator"


def chatmodel(name: str, spec: dict[str, Any] | Any, *, namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ChatModel", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


SMALL_SPEC: dict[str, Any] = {
    "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    "serving": {"replicas": 2},
}


@dataclass
class Controllers:
    """What the kubelet, the Job controller and the Deployment controller would do."""

    api: ApiServer
    job_outcome: str = "complete"  # complete | fail | hold
    job_failure: tuple[str, str] = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    job_delay: float = 0.05
    deployments: str = "ready"  # ready | hold
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    handled: set[tuple[str, str, str]] = field(default_factory=set)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._follow(kmock.resource("batch", "v1", "jobs"), self._job)),
            asyncio.create_task(self._follow(kmock.resource("apps", "v1", "deployments"), self._deployment)),
        ]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _follow(self, res: kmock.resource, react: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        bus = self.api._buses[res]
        async for event in bus:
            if event.get("type") in ("ADDED", "MODIFIED"):
                try:
                    await react(event["object"])
                except Exception:  # a controller never dies of one object
                    logging.getLogger(__name__).exception("controller failed")

    async def _job(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"], meta["uid"])
        if key in self.handled or job.get("status", {}).get("conditions"):
            return
        self.handled.add(key)
        now = _now()
        self.api.patch_status("batch", "v1", "jobs", meta["namespace"], meta["name"], {"active": 1, "startTime": now})
        if self.job_outcome == "hold":
            return
        await asyncio.sleep(self.job_delay)
        self.finish_job(meta["namespace"], meta["name"], self.job_outcome)

    def finish_job(self, namespace: str, name: str, outcome: str) -> None:
        now = _now()
        if outcome == "complete":
            status = {"active": None, "succeeded": 1, "completionTime": now, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "lastTransitionTime": now},
            ]}
        else:
            reason, message = self.job_failure
            status = {"active": None, "failed": 3, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now},
            ]}
        self.api.patch_status("batch", "v1", "jobs", namespace, name, status)

    async def _deployment(self, dep: dict[str, Any]) -> None:
        if self.deployments != "ready":
            return
        self.make_ready(dep)

    def make_ready(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        want = dep.get("spec", {}).get("replicas", 1)
        status = dep.get("status") or {}
        if status.get("observedGeneration") == meta["generation"] and status.get("readyReplicas") == want:
            return
        self.api.patch_status("apps", "v1", "deployments", meta["namespace"], meta["name"], {
            "observedGeneration": meta["generation"], "replicas": want, "updatedReplicas": want,
            "readyReplicas": want, "availableReplicas": want,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
        })


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operator:
    """The real kopf operator, in this event loop, against the emulator."""

    config: OperatorConfig
    task: asyncio.Task[None] | None = None
    stop_flag: asyncio.Event = field(default_factory=asyncio.Event)
    memo: kopf.Memo = field(default_factory=kopf.Memo)

    async def start(self, api: ApiServer) -> None:
        self.stop_flag = asyncio.Event()
        ready = asyncio.Event()
        self.memo = kopf.Memo()
        self.task = asyncio.create_task(kopf.operator(
            registry=build_registry(self.config), clusterwide=True, stop_flag=self.stop_flag,
            ready_flag=ready, memo=self.memo,
        ))
        await asyncio.wait_for(ready.wait(), 20)
        # Ready means started; wait until the ChatModel watch is really open.
        await wait_for(lambda: any(c.verb == "watch" and c.plural == PLURAL for c in api.calls), 20)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 30)
        self.task = None

    @property
    def ctx(self) -> Any:
        return self.memo.ctx


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(interval)


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator", "namespace": NS}}],
    }))
    return path


@pytest_asyncio.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[ApiServer]:
    marker = request.node.get_closest_marker("crds")
    extra = marker.args if marker else (MONITORING, KEDA)
    async with ApiServer() as server, kmock.Server(server) as srv:
        server.register(*extra)
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", str(srv.url).rstrip("/"))))
        yield server


@pytest_asyncio.fixture
async def controllers(api: ApiServer) -> AsyncIterator[Controllers]:
    c = Controllers(api)
    c.start()
    yield c
    await c.stop()


def _repository_builder() -> Callable[..., Any] | None:
    """The data plane's builder when it exists; until then a one-file stand-in."""
    try:
        from chatmodel_operator.triton import build_repository_for  # noqa: F401
    except ImportError:
        from pathlib import PurePosixPath

        def stand_in(*, spec: Any, plan: Any, model: Any) -> dict[Any, str]:
            return {PurePosixPath("ensemble/config.pbtxt"): f'name: "ensemble"\n# {plan.engine_key}\n'}

        return stand_in
    return None


FAST = Settings(build_backoff_s=0.3, build_backoff_max_s=1.0)


def fast_config(**kw: Any) -> OperatorConfig:
    from chatmodel_operator.adapters.kube import RetryPolicy

    kw.setdefault("build_repository", _repository_builder())
    kw.setdefault("login", kopf.login_with_kubeconfig)
    kw.setdefault("settings", FAST)
    kw.setdefault("retry", RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.2, timeout=2.0))
    kw.setdefault("resync_seconds", 3600)
    return OperatorConfig(**kw)


@pytest_asyncio.fixture
async def operator(api: ApiServer, request: pytest.FixtureRequest) -> AsyncIterator[Operator]:
    metrics.reset_for_tests()
    marker = request.node.get_closest_marker("operator_config")
    op = Operator(fast_config(**(marker.kwargs if marker else {})))
    await op.start(api)
    yield op
    await op.stop()


@pytest.fixture
def validator() -> Iterator[Validator]:
    yield Validator()


def status_of(api: ApiServer, name: str, namespace: str = NS) -> dict[str, Any]:
    obj = api.get(*CM, namespace, name) or {}
    return copy.deepcopy(obj.get("status") or {})


def phase_of(api: ApiServer, name: str, namespace: str = NS) -> str | None:
    return status_of(api, name, namespace).get("phase")


def condition(api: ApiServer, name: str, type_: str, namespace: str = NS) -> dict[str, Any]:
    for c in status_of(api, name, namespace).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def events_for(api: ApiServer, name: str, namespace: str = NS) -> list[dict[str, Any]]:
    return [e for e in api.items("", "v1", "events") if e["involvedObject"].get("name") == name and e["metadata"]["namespace"] == namespace]


__all__ = ["CM", "NS", "OPERATOR_AGENT", "PEERING", "SMALL_SPEC", "Controllers", "Operator", "chatmodel", "condition", "events_for", "phase_of", "status_of", "wait_for"]
