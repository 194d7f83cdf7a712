"""Answers the real API server gives, but not on cue: a 429 (API priority and fairness, or
storage still initialising) and a 503 on one chosen request. A proxy on 127.0.0.1 forwards
every request to the real kube-apiserver as the operator's ServiceAccount and replaces the
answer to the first request that matches a rule with the one the server would give; every
other answer is the server's own. This is the only place the cluster tier fakes anything (the
emulator and kmock are retired): everything the real server can do on cue is done for real in
the other modules (restarts, conflicts, admission, deleted namespaces)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from admin import CONFIGMAPS, EVENTS, Admin
from aiohttp import web
from kubernetes_asyncio.client import Configuration

from chatmodel_operator.adapters.kube import KubeApiError, KubeClient, RetryPolicy
from chatmodel_operator.errors import TransientError
from conftest import ControlPlane

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]


@dataclass
class Fault:
    method: str
    path: str  # a regular expression
    status: int
    reason: str
    times: int = 1
    retry_after: int | None = None
    hits: int = 0


@dataclass
class FaultyProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    answered: list[tuple[str, str, int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        for fault in self.faults:
            if (
                fault.hits < fault.times
                and request.method == fault.method
                and re.fullmatch(fault.path, request.path)
            ):
                fault.hits += 1
                self.answered.append((request.method, request.path, fault.status))
                headers = {"Content-Type": "application/json"}
                details: dict[str, Any] = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                    details["retryAfterSeconds"] = fault.retry_after
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f"{fault.reason.lower()} (injected by the test's proxy)",
                    "reason": fault.reason,
                    "details": details,
                    "code": fault.status,
                }
                return web.Response(status=fault.status, text=json.dumps(body), headers=headers)
        self.forwarded.append((request.method, request.path))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "accept", "user-agent")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                data=await request.read(),
                headers=headers,
                ssl=False,  # the real server's self-signed certificate, on loopback
            ) as resp,
        ):
            payload = await resp.read()
            self.answered.append((request.method, request.path, resp.status))
            return web.Response(
                status=resp.status,
                body=payload,
                headers={"Content-Type": resp.headers.get("Content-Type", "application/json")},
            )


@pytest_asyncio.fixture
async def proxy(control_plane: ControlPlane) -> AsyncIterator[tuple[FaultyProxy, KubeClient]]:
    config = json.loads(control_plane.operator_kubeconfig.read_text())
    token = config["users"][0]["user"]["token"]
    p = FaultyProxy(upstream=config["clusters"][0]["cluster"]["server"])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", p.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p.url = f"http://127.0.0.1:{port}"
    client = KubeClient(
        Configuration(
            host=p.url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"}
        ),
        retry=RetryPolicy(attempts=4, first_delay=0.05, max_delay=2.0, timeout=20),
    )
    try:
        yield p, client
    finally:
        await client.close()
        await runner.cleanup()


def configmap(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"chatmodel.io/test": "faults"}},
        "data": {"k": "v"},
    }


async def test_a_429_with_retry_after_is_waited_out_then_applied_once(
    proxy: tuple[FaultyProxy, KubeClient], admin: Admin, ns: str
) -> None:
    p, client = proxy
    p.faults.append(
        Fault("PATCH", rf"/api/v1/namespaces/{ns}/configmaps/one", 429, "TooManyRequests")
    )
    p.faults[0].retry_after = 1
    started = time.monotonic()
    applied = await client.apply(configmap(ns, "one"))
    waited = time.monotonic() - started
    assert applied["metadata"]["name"] == "one"
    assert waited >= 1.0, "Retry-After: 1 is honoured (the policy's own delay is 0.05 s)"
    assert client.stats.retries == 1
    assert [a[2] for a in p.answered] == [429, 201]  # 201: the apply created it
    cms = [c for c in admin.items(CONFIGMAPS, ns) if c["metadata"]["name"] == "one"]
    assert len(cms) == 1 and cms[0]["data"] == {"k": "v"}


async def test_a_503_on_an_event_is_retried_and_the_event_posted_once(
    proxy: tuple[FaultyProxy, KubeClient], admin: Admin, ns: str
) -> None:
    p, client = proxy
    p.faults.append(Fault("POST", rf"/api/v1/namespaces/{ns}/events", 503, "ServiceUnavailable"))
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": ns}}
    await client.post_event(involved=involved, type_="Normal", reason="Probe", message="once")
    assert [a[2] for a in p.answered] == [503, 201]
    events = [e for e in admin.items(EVENTS, ns) if e["reason"] == "Probe"]
    assert len(events) == 1 and events[0]["message"] == "once"


async def test_a_server_that_stays_unavailable_is_a_transient_error_and_writes_nothing(
    proxy: tuple[FaultyProxy, KubeClient], admin: Admin, ns: str
) -> None:
    p, client = proxy
    p.faults.append(
        Fault("PATCH", rf"/api/v1/namespaces/{ns}/configmaps/two", 503, "ServiceUnavailable", 99)
    )
    with pytest.raises(TransientError) as failed:
        await client.apply(configmap(ns, "two"))
    assert "apply ConfigMap two: 503 ServiceUnavailable after 4 attempts" in str(failed.value)
    assert p.forwarded == [] and p.faults[0].hits == 4
    await asyncio.sleep(0)
    assert "two" not in admin.names(CONFIGMAPS, ns)


async def test_an_internal_error_that_persists_is_reported_with_the_servers_message(
    proxy: tuple[FaultyProxy, KubeClient], admin: Admin, ns: str
) -> None:
    # As the real server answers when its Service IP range is full: the same 500 each time.
    p, client = proxy
    p.faults.append(
        Fault("PATCH", rf"/api/v1/namespaces/{ns}/configmaps/three", 500, "InternalError", 99)
    )
    with pytest.raises(KubeApiError) as failed:
        await client.apply(configmap(ns, "three"))
    message = str(failed.value)
    assert message.startswith("apply ConfigMap three: 500 InternalError: internalerror")
    assert "(after 4 attempts)" in message and not failed.value.permanent
