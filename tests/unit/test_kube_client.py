"""The Kubernetes transport as the operator uses it: credentials loaded once by
kubernetes_asyncio and given to kopf as the same identity, and the rules KubeClient keeps on top
of the library (plain-text answers, Retry-After, one reload on 401, request counting), against
a small HTTP server on 127.0.0.1 that answers as the API server does."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException

from chatmodel_operator.adapters import kube
from chatmodel_operator.errors import TransientError
from chatmodel_operator.handlers import connection_info
from chatmodel_operator.runner import credentials_problem

CA = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"


def kubeconfig(tmp_path: Path, user: dict[str, Any], server: str = "https://10.1.2.3:6443") -> Path:
    cluster = {"server": server}
    if server.startswith("https"):
        cluster["certificate-authority-data"] = base64.b64encode(CA.encode()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(autouse=True)
def not_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.parametrize(
    ("user", "scheme", "credential"),
    [
        ({"token": "t0k3n"}, "Bearer", "t0k3n"),
        ({"username": "ann", "password": "pw"}, "Basic", base64.b64encode(b"ann:pw").decode()),
    ],
    ids=["token", "basic"],
)
def test_kopf_logs_in_as_the_client_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    user: dict[str, Any],
    scheme: str,
    credential: str,
) -> None:
    # Set after the library was imported: its own default path is read at import time.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, user)))

    async def login() -> tuple[Configuration, Any]:
        configuration = await kube.load_credentials()
        return configuration, await connection_info(configuration)

    configuration, info = asyncio.run(login())
    assert (info.server, info.scheme, info.token) == ("https://10.1.2.3:6443", scheme, credential)
    assert info.ca_path == configuration.ssl_ca_cert and Path(info.ca_path).read_text() == CA
    assert info.insecure is False
    assert info.as_http_headers()["Authorization"] == f"{scheme} {credential}"


def test_no_kubeconfig_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(ConfigException, match=str(missing)):
        asyncio.run(kube.load_credentials())
    assert credentials_problem() == f"no kubeconfig file at {missing}"


Answer = Callable[[web.Request], web.Response]


async def serve(answers: list[Answer]) -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        await request.read()
        return answers[min(len(seen), len(answers)) - 1](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def status(code: int, reason: str, headers: dict[str, str] | None = None) -> Answer:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
    return lambda _: web.json_response({**body, "code": code}, status=code, headers=headers)


def ok(_: web.Request) -> web.Response:
    return web.json_response({"kind": "ConfigMap", "metadata": {"name": "one"}})


def configuration(url: str, token: str = "first") -> Configuration:
    return Configuration(
        host=url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"}
    )


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": "a"}}
FAST = kube.RetryPolicy(attempts=3, first_delay=0.01, max_delay=2.0, timeout=5)


def run(answers: list[Answer], body: Callable[[kube.KubeClient, list[web.Request]], Any]) -> Any:
    async def main() -> Any:
        server = serve(answers)
        url, seen = await anext(server)
        relogins: list[str] = []

        async def relogin() -> Configuration:
            relogins.append("again")
            return configuration(url, token="second")

        client = kube.KubeClient(configuration(url), retry=FAST, relogin=relogin)
        try:
            return await body(client, seen), relogins
        finally:
            await client.close()
            await server.aclose()

    return asyncio.run(main())


def test_apply_sends_server_side_apply_with_our_token_and_field_manager() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        result = await client.apply(CONFIGMAP)
        request = seen[0]
        assert request.method == "PATCH" and request.path == "/api/v1/namespaces/a/configmaps/one"
        assert request.query == {"fieldManager": kube.FIELD_MANAGER, "force": "true"}
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert request.headers["Authorization"] == "Bearer first"
        assert request.headers["User-Agent"] == kube.COMPONENT
        return result

    result, relogins = run([ok], body)
    assert result["metadata"]["name"] == "one" and relogins == []


def test_a_plain_text_404_on_discovery_means_not_served() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        return await client.served("keda.sh/v1alpha1", "scaledobjects"), client.stats.by_verb

    def page_not_found(_: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    (served, by_verb), _ = run([page_not_found], body)
    assert served is False and by_verb == {"GET": 1}


def test_a_429_waits_its_retry_after_then_succeeds() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        t = time.monotonic()
        await client.apply(CONFIGMAP)
        return time.monotonic() - t, client.stats.retries

    (waited, retries), _ = run([status(429, "TooManyRequests", {"Retry-After": "1"}), ok], body)
    assert retries == 1 and 1.0 <= waited < 2.0


def test_a_401_reloads_the_credentials_once_and_retries_with_them() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        await client.apply(CONFIGMAP)
        return [r.headers["Authorization"] for r in seen]

    tokens, relogins = run([status(401, "Unauthorized"), ok], body)
    assert tokens == ["Bearer first", "Bearer second"] and relogins == ["again"]


def test_the_same_500_status_every_time_is_an_api_error_shown_on_the_chatmodel() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        with pytest.raises(kube.KubeApiError, match="after 3 attempts") as err:
            await client.apply(CONFIGMAP)
        return err.value.status, len(seen)

    (code, requests), _ = run([status(500, "InternalError")], body)
    assert (code, requests) == (500, 3)


def test_a_503_that_persists_is_transient() -> None:
    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        with pytest.raises(TransientError, match="503 ServiceUnavailable after 3 attempts"):
            await client.apply(CONFIGMAP)
        return len(seen)

    requests, _ = run([status(503, "ServiceUnavailable")], body)
    assert requests == 3


def test_the_environment_does_not_reroute_or_reauthenticate_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kopf's watches ignore both, so the client must too: with them trusted, aiohttp refuses
    # our Authorization header next to a netrc login and sends everything to the proxy.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def body(client: kube.KubeClient, seen: list[web.Request]) -> Any:
        await client.apply(CONFIGMAP)
        return [r.headers["Authorization"] for r in seen]

    tokens, _ = run([ok], body)
    assert tokens == ["Bearer first"]
