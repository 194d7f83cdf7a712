"""kmock's KubernetesEmulator with the API server bookkeeping the operator relies on.

kmock stores objects exactly as posted. A real API server also assigns uid, resourceVersion,
generation and creationTimestamp; keeps status and spec apart behind the status subresource;
names objects from generateName; applies server-side-apply patches (and creates with them);
does not bump the resourceVersion or emit a watch event for a patch that changes nothing;
serves watches from a resourceVersion; and garbage-collects dependents through
ownerReferences. This subclass adds exactly those, plus fault injection (errors, delays,
dropped watches) and a typed log of every request, so the tests can count writes and check
RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import k8s_dicts, parsing, rendering
from kmock._internal.k8s import KubernetesScaffold

from chatmodel_operator.api.spec import GROUP, PLURAL, VERSION

# (group, version, plural, kind, namespaced, subresources)
RESOURCES: tuple[tuple[str, str, str, str, bool, tuple[str, ...]], ...] = (
    ("", "v1", "namespaces", "Namespace", False, ()),
    ("", "v1", "events", "Event", True, ()),
    ("", "v1", "configmaps", "ConfigMap", True, ()),
    ("", "v1", "services", "Service", True, ("status",)),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("status",)),
    ("", "v1", "secrets", "Secret", True, ()),
    ("", "v1", "pods", "Pod", True, ("status",)),
    ("events.k8s.io", "v1", "events", "Event", True, ()),
    ("apps", "v1", "deployments", "Deployment", True, ("status", "scale")),
    ("batch", "v1", "jobs", "Job", True, ("status",)),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ("status",)),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("status",)),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ()),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("status",),
    ),
    (GROUP, VERSION, PLURAL, "ChatModel", True, ("status", "scale")),
)
MONITORING = ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True, ())
KEDA = ("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", True, ("status",))
PEERING = (
    ("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False, ()),
    ("kopf.dev", "v1", "kopfpeerings", "KopfPeering", True, ()),
)

APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Call:
    """One request, as the RBAC and write-count checks see it."""

    verb: str  # get, list, watch, create, patch, update, delete, or "discovery"
    group: str | None
    plural: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    status: int
    user_agent: str
    created: bool = False  # a server-side apply that created the object
    changed: bool = False  # the write changed the stored object
    body: Any = field(default=None, repr=False, compare=False)  # what the client sent
    result: Any = field(default=None, repr=False, compare=False)  # the object after the write

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else str(self.plural)

    @property
    def is_write(self) -> bool:
        return self.verb in ("create", "patch", "update", "delete")


@dataclass
class Fault:
    verb: str
    plural: str
    status: int = 500
    times: int = 1
    delay: float = 0.0  # answer this late (a client timeout), then serve normally
    subresource: str | None = None
    hits: int = 0


@dataclass
class Faults:
    items: list[Fault] = field(default_factory=list)

    def add(
        self,
        verb: str,
        plural: str,
        *,
        status: int = 500,
        times: int = 1,
        delay: float = 0.0,
        subresource: str | None = None,
    ) -> Fault:
        fault = Fault(verb, plural, status, times, delay, subresource)
        self.items.append(fault)
        return fault

    def take(self, verb: str, plural: str | None, subresource: str | None) -> Fault | None:
        for fault in self.items:
            if (
                fault.times > 0
                and fault.verb == verb
                and fault.plural == plural
                and fault.subresource == subresource
            ):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None


_DROP = {"type": "__DROP__"}

_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock reads /api/v1/namespaces[/NAME] as a namespace prefix with nothing after it
    (and fails on the bare list); these are the cluster-scoped Namespace resource."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and parts[2:3] == ["namespaces"] and len(parts) in (3, 4):
        return parsing.ParsedPath(
            "", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None
        )
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    calls: list[Call] = attrs.field(factory=list, init=False)
    keep_bodies: bool = True  # the benchmark turns this off to save memory
    faults: Faults = attrs.field(factory=Faults, init=False)
    _rv: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _latest_rv: int = attrs.field(default=999, init=False)
    _managed: dict[Any, dict[str, Any]] = attrs.field(factory=dict, init=False)  # SSA: last applied
    _with_status: set[kmock.resource] = attrs.field(factory=set, init=False)
    _namespaced: dict[kmock.resource, bool] = attrs.field(factory=dict, init=False)

    # -- setup ------------------------------------------------------------------------------

    def register(self, *extra: tuple[str, str, str, str, bool, tuple[str, ...]]) -> None:
        for group, version, plural, kind, namespaced, subs in (*RESOURCES, *extra):
            res = kmock.resource(group, version, plural)
            verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
            self.resources[res] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs=verbs,
                subresources=set(subs),
                singular=kind.lower(),
            )
            self._namespaced[res] = namespaced
            if "status" in subs:
                self._with_status.add(res)

    def put(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object directly (as if another client created it), with bookkeeping."""
        res = kmock.resource(group, version, plural)
        obj = copy.deepcopy(obj)
        self._stamp_new(res, obj)
        meta = obj["metadata"]
        self.objects[res, meta.get("namespace"), meta["name"]] = obj
        self._publish(res, "ADDED", obj)
        return obj

    def get(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        key = (kmock.resource(group, version, plural), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def items(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        res = kmock.resource(group, version, plural)
        return [
            copy.deepcopy(o.raw)
            for (r, _, _), o in self.objects.items()
            if r == res and not o.deleted
        ]

    def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
    ) -> None:
        """Play a controller (kubelet, Job controller): merge into .status."""
        self._mutate(
            kmock.resource(group, version, plural),
            namespace,
            name,
            {"status": status},
            status_only=True,
        )

    def patch_object(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
    ) -> None:
        """Play a user: merge-patch the object (not its status)."""
        self._mutate(
            kmock.resource(group, version, plural), namespace, name, patch, status_only=False
        )

    def remove(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> None:
        self._delete(kmock.resource(group, version, plural), namespace, name)

    def drop_watches(self) -> None:
        """End every watch stream, as an API server restart or a load balancer would."""
        for bus in list(self._buses.values()):
            asyncio.get_running_loop().create_task(bus.put(_DROP))

    # -- bookkeeping ------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._latest_rv = next(self._rv)
        return str(self._latest_rv)

    def _stamp_new(
        self, res: kmock.resource, obj: dict[str, Any], namespace: str | None = None
    ) -> None:
        meta = obj.setdefault("metadata", {})
        if self._namespaced.get(res, True):
            meta.setdefault("namespace", namespace or "default")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["generation"] = 1
        meta["creationTimestamp"] = _now()
        meta.pop("deletionTimestamp", None)
        if res in self._with_status:
            obj.pop("status", None)

    def _publish(self, res: kmock.resource, type_: str, obj: dict[str, Any]) -> None:
        asyncio.get_running_loop().create_task(
            self._buses[res].put({"type": type_, "object": copy.deepcopy(obj)})
        )

    def _mutate(
        self,
        res: kmock.resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        status_only: bool,
        apply_manager: str | None = None,
    ) -> tuple[bool, bool]:
        """Apply a patch; returns (created, changed)."""
        key = (res, namespace, name)
        exists = key in self.objects and not self.objects[key].deleted
        if apply_manager is not None and not exists:
            obj = copy.deepcopy(patch)
            self._stamp_new(res, obj, namespace)
            self._managed[(key, apply_manager)] = copy.deepcopy(patch)
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            self._publish(res, "ADDED", obj)
            return True, True
        if not exists:
            raise kmock.KubernetesObjectNotFoundError()
        old = copy.deepcopy(self.objects[key].raw)
        if apply_manager is not None:
            new = _apply(old, self._managed.get((key, apply_manager)), patch)
            self._managed[(key, apply_manager)] = copy.deepcopy(patch)
        elif isinstance(patch, list):
            import jsonpatch  # kmock's own dependency

            new = jsonpatch.apply_patch(old, patch)
        else:
            new = _merge(old, patch)
        if res in self._with_status:
            # The status subresource changes only status; the main resource never does.
            if status_only:
                new = (
                    {**old, "status": new.get("status")}
                    if new.get("status") is not None
                    else {k: v for k, v in old.items() if k != "status"}
                )
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name"):
            if k in old.get("metadata", {}):
                new["metadata"][k] = old["metadata"][k]
        if new == old:
            return False, False
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            self._publish(res, "DELETED", new)
            self._collect_garbage()
            return False, True
        self.objects[key].history.append(new)
        self._publish(res, "MODIFIED", new)
        return False, True

    def _delete(
        self, res: kmock.resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> None:
        key = (res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        obj = self.objects[key].raw
        if uid and obj["metadata"].get("uid") != uid:
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message="Precondition failed: UID in precondition does not match",
            )
        if obj["metadata"].get("finalizers"):
            self._mutate(
                res, namespace, name, {"metadata": {"deletionTimestamp": _now()}}, status_only=False
            )
            return
        self.objects[key].delete()
        self._publish(
            res,
            "DELETED",
            {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._next_rv()}},
        )
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """The garbage collector: delete objects all of whose owners are gone (background
        propagation); from objects that still have a live owner, drop the dangling references."""
        while True:
            live = {o.raw["metadata"].get("uid") for o in self.objects.values() if not o.deleted}
            orphans, dangling = [], []
            for key, o in self.objects.items():
                refs = [] if o.deleted else o.raw.get("metadata", {}).get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") in live]
                if refs and not kept:
                    orphans.append(key)
                elif len(kept) < len(refs):
                    dangling.append((key, kept))
            for (res, ns, name), kept in dangling:
                self._mutate(
                    res, ns, name, {"metadata": {"ownerReferences": kept}}, status_only=False
                )
            if not orphans:
                return
            for res, ns, name in orphans:
                obj = self.objects[res, ns, name].raw
                self.objects[res, ns, name].delete()
                self._publish(res, "DELETED", obj)

    # -- request handling -------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        verb = _verb(request)
        ctype = (request.headers.get("Content-Type") or "").split(";")[0]
        if verb == "create" and request.name is None and isinstance(request.data, dict):
            request = attrs.evolve(request, name=(request.data.get("metadata") or {}).get("name"))
        call = dict(
            verb=verb,
            group=res.group if res else None,
            plural=res.plural if res else None,
            subresource=request.subresource,
            namespace=request.namespace,
            name=request.name,
            user_agent=request.headers.get("User-Agent", ""),
        )
        if res is None or res.plural is None or verb == "discovery":
            self.calls.append(Call(**call, status=200))
            return await KubernetesScaffold._handle(self, request)
        fault = self.faults.take(verb, res.plural, request.subresource)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
            fault = None  # the client gave up; the server still does the work
        elif fault is not None:
            self.calls.append(Call(**call, status=fault.status))
            return await self._render_error(
                kmock.KubernetesError(
                    status=fault.status, reason="Injected", message=f"injected {fault.status}"
                )
            )
        created = changed = False
        try:
            async with self._lock:
                if verb == "create":
                    obj = copy.deepcopy(request.data)
                    self._stamp_new(res, obj, request.namespace)
                    meta = obj["metadata"]
                    key = (
                        res,
                        meta.get("namespace") if self._namespaced.get(res, True) else None,
                        meta["name"],
                    )
                    if key in self.objects and not self.objects[key].deleted:
                        raise kmock.KubernetesError(
                            status=409,
                            reason="AlreadyExists",
                            message=f'{res.plural} "{meta["name"]}" already exists',
                        )
                    if key in self.objects:
                        self.objects[key].create(obj)
                    else:
                        self.objects[key] = obj
                    self._publish(res, "ADDED", obj)
                    created = changed = True
                    request = attrs.evolve(request, name=meta["name"], namespace=key[1])
                elif verb == "patch":
                    manager = (
                        request.params.get("fieldManager", "unknown") if ctype == APPLY else None
                    )
                    data = request.data
                    if ctype == APPLY and not isinstance(data, dict):
                        data = json.loads(request.text)
                    created, changed = self._mutate(
                        res,
                        request.namespace,
                        request.name,
                        data,
                        status_only=request.subresource == "status",
                        apply_manager=manager,
                    )
                elif verb == "delete":
                    uid = (
                        ((request.data or {}).get("preconditions") or {}).get("uid")
                        if isinstance(request.data, dict)
                        else None
                    )
                    self._delete(res, request.namespace, request.name, uid=uid)
                    changed = True
        except kmock.KubernetesError as exc:
            self.calls.append(Call(**call, status=exc.status))
            return await self._render_error(exc)
        body = result = None
        if self.keep_bodies and verb in ("create", "patch"):
            body = copy.deepcopy(request.data)
            okey = (res, request.namespace, request.name)
            if okey in self.objects and not self.objects[okey].deleted:
                result = copy.deepcopy(self.objects[okey].raw)
        self.calls.append(
            Call(
                **call,
                status=201 if created else 200,
                created=created,
                changed=changed,
                body=body,
                result=result,
            )
        )
        if verb == "create":
            return aiohttp.web.json_response(
                self.objects[res, request.namespace, request.name].raw, status=201
            )
        if verb == "patch":
            return aiohttp.web.json_response(self.objects[res, request.namespace, request.name].raw)
        if verb == "delete":
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            )
        if verb == "list":
            return aiohttp.web.json_response(self._list(res, request))
        if verb == "get":
            key = (res, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            return aiohttp.web.json_response(self.objects[key].raw)
        return await KubernetesScaffold._handle(self, request)

    def _list(self, res: kmock.resource, request: rendering.Request) -> dict[str, Any]:
        items = [
            o.raw
            for (r, ns, _), o in self.objects.items()
            if r == res and not o.deleted and (request.namespace is None or ns == request.namespace)
        ]
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": str(self._latest_rv)},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> Any:
        yield b""
        since = request.params.get("resourceVersion")
        try:
            since_rv = int(since) if since else None
        except ValueError:
            since_rv = None
        res = request.resource
        assert res is not None
        bus = self._buses[res]
        marker = await bus.mark()
        try:
            async with self._lock:
                snapshot = [
                    o.raw
                    for (r, ns, _), o in self.objects.items()
                    if r == res
                    and not o.deleted
                    and (request.namespace is None or ns == request.namespace)
                ]
            for obj in snapshot:
                rv = int(obj["metadata"].get("resourceVersion") or 0)
                if since_rv is None or rv > since_rv:
                    yield {"type": "ADDED" if since_rv is None else "MODIFIED", "object": obj}
            async for event in bus.stream(since=marker):
                if event is _DROP or event.get("type") == "__DROP__":
                    return
                obj = event.get("object", {})
                rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                if since_rv is not None and rv <= since_rv:
                    continue
                ns = obj.get("metadata", {}).get("namespace")
                if request.namespace is None or ns == request.namespace:
                    yield event
        finally:
            await bus.unmark(marker)

    # -- queries for the tests --------------------------------------------------------------

    def writes(self, *, user_agent: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.is_write and (user_agent is None or user_agent in c.user_agent)
        ]


@dataclass
class Controllers:
    """What the kubelet, the Job controller and the Deployment controller would do."""

    api: ApiServer
    job_outcome: str = "complete"  # complete | fail | hold
    job_failure: tuple[str, str] = (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    job_delay: float = 0.05
    deployments: str = "ready"  # ready | hold
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    handled: set[tuple[str, str, str]] = field(default_factory=set)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._follow(kmock.resource("batch", "v1", "jobs"), self._job)),
            asyncio.create_task(
                self._follow(kmock.resource("apps", "v1", "deployments"), self._deployment)
            ),
        ]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _follow(
        self, res: kmock.resource, react: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
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
        asyncio.get_running_loop().create_task(self._run_job(meta))

    async def _run_job(self, meta: dict[str, Any]) -> None:
        now = _now()
        self.api.patch_status(
            "batch", "v1", "jobs", meta["namespace"], meta["name"], {"active": 1, "startTime": now}
        )
        if self.job_outcome == "hold":
            return
        await asyncio.sleep(self.job_delay)
        with contextlib.suppress(kmock.KubernetesError):  # deleted meanwhile
            self.finish_job(meta["namespace"], meta["name"], self.job_outcome)

    def finish_job(self, namespace: str, name: str, outcome: str) -> None:
        now = _now()
        if outcome == "complete":
            status = {
                "active": None,
                "succeeded": 1,
                "completionTime": now,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        else:
            reason, message = self.job_failure
            status = {
                "active": None,
                "failed": 3,
                "conditions": [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now,
                    },
                ],
            }
        self.api.patch_status("batch", "v1", "jobs", namespace, name, status)

    async def _deployment(self, dep: dict[str, Any]) -> None:
        if self.deployments != "ready":
            return
        self.make_ready(dep)

    def make_ready(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        want = dep.get("spec", {}).get("replicas", 1)
        status = dep.get("status") or {}
        if (
            status.get("observedGeneration") == meta["generation"]
            and status.get("readyReplicas") == want
        ):
            return
        self.api.patch_status(
            "apps",
            "v1",
            "deployments",
            meta["namespace"],
            meta["name"],
            {
                "observedGeneration": meta["generation"],
                "replicas": want,
                "updatedReplicas": want,
                "readyReplicas": want,
                "availableReplicas": want,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            },
        )


def _verb(request: rendering.Request) -> str:
    if request.resource is None or request.resource.plural is None:
        return "discovery"
    method = str(
        request.method.value if hasattr(request.method, "value") else request.method
    ).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if request.name else "deletecollection",
    }.get(method, method.lower())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _apply(
    live: dict[str, Any], previous: dict[str, Any] | None, applied: dict[str, Any]
) -> dict[str, Any]:
    """Server-side apply, simplified: fields in the previous applied config that the new one
    drops are removed, then the new config is merged (lists replaced, as for atomic lists)."""

    def drop(obj: Any, prev: Any, new: Any) -> Any:
        if not isinstance(obj, dict) or not isinstance(prev, dict):
            return obj
        out = dict(obj)
        for k, pv in prev.items():
            if not isinstance(new, dict) or k not in new:
                out.pop(k, None)
            elif isinstance(pv, dict):
                out[k] = drop(out.get(k), pv, new[k])
        return out

    base = drop(live, previous or {}, applied) if previous else live
    return _merge(base, applied)


_ = k8s_dicts  # re-exported for type hints in tests
