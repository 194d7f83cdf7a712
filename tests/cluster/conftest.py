"""Fixtures for the emulated-cluster tier: the API server, the operator in-process, and the
controllers the tests play (Job controller, Deployment controller and kubelet)."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml
from emulator import KEDA, MONITORING, PEERING, ApiServer, Call, Controllers
from validation import Validator

from chatmodel_operator import metrics
from chatmodel_operator.api.spec import API_VERSION, GROUP, PLURAL, VERSION
from chatmodel_operator.handlers import OperatorConfig, build_registry
from chatmodel_operator.reconcile import Settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator_config(**kw): OperatorConfig fields for the operator fixture"
    )
    config.addinivalue_line("markers", "crds(*resources): the optional APIs the emulator serves")


NS = "models"
CM = (GROUP, VERSION, PLURAL)
OPERATOR_AGENT = "chatmodel-operator"


def chatmodel(name: str, spec: dict[str, Any] | Any, *, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


SMALL_SPEC: dict[str, Any] = {
    "model": {"source": "hf://xverse/XVERSE-7B-Chat", "trustRemoteCode": True},
    "resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
    "serving": {"replicas": 2},
}


@dataclass
class Operator:
    """The real kopf operator against the emulator, in a thread with its own event loop.

    A thread, not a task in the test's loop: on exit kopf cancels every task created after it
    started, which in a shared loop would include the emulator's own request handlers.
    """

    config: OperatorConfig
    namespaces: tuple[str, ...] = ()
    thread: threading.Thread | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)
    memo: kopf.Memo = field(default_factory=kopf.Memo)
    error: BaseException | None = None

    async def start(self, api: ApiServer, *, watching: bool = True) -> None:
        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.memo = kopf.Memo()
        registry = build_registry(self.config)

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

        calls_before = len(api.calls)
        self.thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
        self.thread.start()
        await wait_for(ready.is_set, 20)
        # Ready means started; wait until the ChatModel watch is really open (a standby
        # replica never opens it).
        if watching:
            await wait_for(
                lambda: any(
                    c.verb == "watch" and c.plural == PLURAL for c in api.calls[calls_before:]
                ),
                20,
            )

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 30)
        self.thread = None
        assert self.error is None, self.error

    @property
    def ctx(self) -> Any:
        return self.memo.ctx


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}"
            )
        await asyncio.sleep(interval)


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "operator", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "operator", "namespace": NS},
                    }
                ],
            }
        )
    )
    return path


# Every request of every test of this tier, for the RBAC check (test_zz_rbac.py runs last).
ALL_CALLS: list[Call] = []


@pytest_asyncio.fixture
async def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[ApiServer]:
    marker = request.node.get_closest_marker("crds")
    extra = marker.args if marker else (MONITORING, KEDA)
    async with ApiServer() as server, kmock.Server(server) as srv:
        server.register(*extra)
        monkeypatch.setenv(
            "KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", str(srv.url).rstrip("/")))
        )
        yield server
    ALL_CALLS.extend(server.calls)
    validate_writes(server)


def validate_writes(api: ApiServer, validator: Validator | None = None) -> Validator:
    """Every object the operator wrote passes the Kubernetes 1.37 schemas (strict), and every
    ChatModel status it wrote passes the CRD's schema."""
    v = validator or Validator()
    for c in api.calls:
        if not c.user_agent.startswith(OPERATOR_AGENT) or c.status >= 300:
            continue
        if c.resource == f"{PLURAL}/status" and c.result is not None:
            v.chatmodel_status(c.result.get("status") or {})
        elif c.verb == "create" and isinstance(c.body, dict):
            v.object(c.body)
        elif c.verb == "patch" and isinstance(c.result, dict) and c.plural != PLURAL:
            v.object(c.result)  # server-side apply bodies are whole objects; so is the result
    return v


@pytest_asyncio.fixture
async def controllers(api: ApiServer) -> AsyncIterator[Controllers]:
    c = Controllers(api)
    c.start()
    yield c
    await c.stop()


def _repository_builder() -> Callable[..., Any] | None:
    """The data plane's builder (None: the operator imports it itself) when it works here;
    else a one-file stand-in, so this tier tests the operator while the data plane changes."""
    from pathlib import PurePosixPath

    from chatmodel_operator.api import parse_spec
    from chatmodel_operator.plan import plan_model

    try:
        from chatmodel_operator.triton import build_repository_for

        spec = parse_spec(SMALL_SPEC)
        model, plan = plan_model(spec)
        build_repository_for(spec=spec, plan=plan, model=model)
        return None
    except Exception as exc:
        logging.getLogger(__name__).warning("model repository builder unusable (%s): stand-in", exc)

    def stand_in(*, spec: Any, plan: Any, model: Any) -> dict[Any, str]:
        return {PurePosixPath("ensemble/config.pbtxt"): f'name: "ensemble"\n# {plan.engine_key}\n'}

    return stand_in


# Steps that pass within 0.3 s share one status write (production: 5 s); test_settle.py
# checks the window itself.
FAST = Settings(
    build_backoff_s=0.3, build_backoff_max_s=1.0, retry_delay_s=0.5, status_settle_s=0.3
)


def fast_config(**kw: Any) -> OperatorConfig:
    from chatmodel_operator.adapters.kube import RetryPolicy

    kw.setdefault("build_repository", _repository_builder())
    kw.setdefault("login", kopf.login_with_kubeconfig)
    kw.setdefault("settings", FAST)
    kw.setdefault("retry", RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.2, timeout=2.0))
    kw.setdefault("resync_seconds", 3600)
    kw.setdefault("peering_poll_seconds", 0.3)
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
    return [
        e
        for e in api.items("", "v1", "events")
        if e["involvedObject"].get("name") == name and e["metadata"]["namespace"] == namespace
    ]


__all__ = [
    "CM",
    "NS",
    "OPERATOR_AGENT",
    "PEERING",
    "SMALL_SPEC",
    "Controllers",
    "Operator",
    "chatmodel",
    "condition",
    "events_for",
    "phase_of",
    "phase_steps",
    "status_of",
    "wait_for",
]


def phase_steps(events: list[dict[str, Any]]) -> list[str]:
    """The phases the transition Events tell, in order: "New -> Deploying (through
    BuildingEngine): ..." tells BuildingEngine, then Deploying."""
    steps: list[str] = []
    for e in events:
        head = e["message"].split(":", 1)[0]
        through = re.search(r"\(through ([^)]*)\)", head)
        if through:
            steps += through.group(1).split(", ")
        steps.append(e["reason"])
    return steps
