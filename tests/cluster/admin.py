"""The cluster admin's view of the real control plane, for the cluster tier: typed-enough reads and
writes through the official client, kubectl as a user runs it, and the API server's audit log
(every request the operator made, who made it and what the server answered)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from chatmodel_operator.adapters.kube import Kind
from chatmodel_operator.api.spec import GROUP, PLURAL, VERSION

CM = (GROUP, VERSION, PLURAL)
Resource = tuple[str, str, str]  # (group, version, plural)

JOBS: Resource = ("batch", "v1", "jobs")
DEPLOYMENTS: Resource = ("apps", "v1", "deployments")
PODS: Resource = ("", "v1", "pods")
PVCS: Resource = ("", "v1", "persistentvolumeclaims")
CONFIGMAPS: Resource = ("", "v1", "configmaps")
SERVICES: Resource = ("", "v1", "services")
EVENTS: Resource = ("", "v1", "events")
HPAS: Resource = ("autoscaling", "v2", "horizontalpodautoscalers")
PDBS: Resource = ("policy", "v1", "poddisruptionbudgets")
NAMESPACES: Resource = ("", "v1", "namespaces")
CRDS: Resource = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "nodes", "persistentvolumes"}


def path(
    res: Resource, namespace: str | None = None, name: str | None = None, sub: str = ""
) -> str:
    """The request path, spelled by the operator's own ``Kind.path``."""
    group, version, plural = res
    kind = Kind("", group, version, plural, namespaced=plural not in CLUSTER_SCOPED)
    return kind.path(namespace, name, sub or None)


class Admin:
    """Requests as the cluster's admin (kwokctl's admin kubeconfig)."""

    def __init__(self, kubeconfig: Path, kubectl: Path) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_bin = kubectl
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        self.api = k8s.ApiClient(cfg)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        method_, url_, headers, body_, _ = self.api.param_serialize(
            method,
            url,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(
            method_, url_, header_params=headers, body=body_, _request_timeout=60
        )
        raw = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiException(status=resp.status, reason=raw.decode("utf-8", "replace")[:2000])
        return json.loads(raw) if raw else None

    # -- reads ---------------------------------------------------------------------------

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path(res, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def items(
        self, res: Resource, namespace: str | None = None, **query: str
    ) -> list[dict[str, Any]]:
        try:
            out = self.request("GET", path(res, namespace), query=query)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        return list(out.get("items") or [])

    def names(self, res: Resource, namespace: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.items(res, namespace)}

    # -- writes --------------------------------------------------------------------------

    def create(
        self, res: Resource, namespace: str | None, obj: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self.request("POST", path(res, namespace), dict(obj))

    def dry_run_create(
        self, res: Resource, namespace: str | None, obj: Mapping[str, Any]
    ) -> tuple[int, str] | None:
        """A server-side dry run of creating ``obj``, with strict field validation as kubectl
        asks for it: None when the API server would create it, else its status code and
        message (admission, the schema, the CRD's rules)."""
        try:
            self.request(
                "POST",
                path(res, namespace),
                dict(obj),
                query={"dryRun": "All", "fieldValidation": "Strict"},
            )
        except ApiException as exc:
            try:
                return exc.status, str(json.loads(str(exc.reason))["message"])
            except (ValueError, KeyError):
                return exc.status, str(exc.reason)
        return None

    def merge_patch(
        self, res: Resource, namespace: str | None, name: str, patch: Any, sub: str = ""
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            path(res, namespace, name, sub),
            patch,
            content_type="application/merge-patch+json",
        )

    def json_patch(
        self, res: Resource, namespace: str | None, name: str, ops: list[Any]
    ) -> dict[str, Any]:
        return self.request(
            "PATCH", path(res, namespace, name), ops, content_type="application/json-patch+json"
        )

    def delete(
        self, res: Resource, namespace: str | None, name: str, *, propagation: str = "Background"
    ) -> bool:
        try:
            self.request(
                "DELETE",
                path(res, namespace, name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation},
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            env=None if env is None else dict(env),
            text=True,
            capture_output=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
            )
        return proc

    def apply_yaml(self, text: str, namespace: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=text)


@dataclass(frozen=True)
class Call:
    """One request the API server logged (audit level Metadata)."""

    verb: str
    user: str
    user_agent: str
    resource: str
    subresource: str
    group: str
    namespace: str
    name: str
    code: int
    uri: str
    decision: str = ""  # the authorizer's: "allow" or "forbid" (a 403 can also be admission's)

    @property
    def is_write(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete", "deletecollection")

    @property
    def plural(self) -> str:
        return self.resource


class Audit:
    """The API server's audit log, read from an offset: what happened since a test began."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0

    def calls(self, *, since: int | None = None, user: str | None = None) -> list[Call]:
        if not self.log.exists():
            return []
        with self.log.open("rb") as f:
            f.seek(self.offset if since is None else since)
            raw = f.read()
        out = []
        for line in raw.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line still being written
            stage = e.get("stage")
            # A watch is logged when it starts; it completes only when it ends.
            if stage != "ResponseComplete" and not (
                stage == "ResponseStarted" and e.get("verb") == "watch"
            ):
                continue
            ref = e.get("objectRef") or {}
            who = (e.get("user") or {}).get("username", "")
            if user is not None and who != user:
                continue
            out.append(
                Call(
                    verb=e.get("verb", ""),
                    user=who,
                    user_agent=e.get("userAgent", ""),
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    group=ref.get("apiGroup", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((e.get("responseStatus") or {}).get("code") or 0),
                    uri=e.get("requestURI", ""),
                    decision=(e.get("annotations") or {}).get("authorization.k8s.io/decision", ""),
                )
            )
        return out


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until the predicate holds. Generous timeouts: CI shares two cores with Go builds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except ApiException as exc:
            last = exc
            if exc.status not in (404, 409, 429, 500, 503):
                raise
        if last and not isinstance(last, ApiException):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what or getattr(predicate, '__name__', predicate)}"
                f" (last: {last!r:.300})"
            )
        time.sleep(interval)


def conditions(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def iter_events(
    admin: Admin, namespace: str, name: str, kind: str | None = None
) -> Iterator[dict[str, Any]]:
    for e in admin.items(EVENTS, namespace):
        inv = e.get("involvedObject") or {}
        if inv.get("name") == name and (kind is None or inv.get("kind") == kind):
            yield e
