"""The operator's only Kubernetes I/O: apply, create, patch, delete, Events, and the compact
summaries of observed children that the reconcile compares against.

Reads come from kopf's watch-fed indexes (see handlers.py), not from GET requests, so one
reconcile pass costs only its writes. Every write goes through ``KubeClient``, which

* applies desired objects with server-side apply under one field manager, and skips the
  request when the object already carries the hash of the same desired state
  (``APPLIED_HASH``): a resync with nothing changed writes nothing;
* retries conflicts (409), throttling (429), server errors (5xx) and timeouts with
  exponential backoff and jitter, and raises ``TransientError`` when they persist;
* never logs request bodies, so a value that reached an object cannot reach the logs.

The transport under it (credentials and their refresh, TLS, the connection pool) is
``kubernetes_asyncio``'s; what it sends and reads back is plain JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import ApiClient, Configuration

from chatmodel_operator.api.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from chatmodel_operator.errors import ChatModelError, TransientError
from chatmodel_operator.render import ENGINE_KEY_LABEL, FIELD_MANAGER
from chatmodel_operator.render.routing import ParentState, parent_states

log = logging.getLogger(__name__)

APPLIED_HASH: Final = f"{GROUP}/applied-hash"
BUILD_ATTEMPT: Final = f"{GROUP}/build-attempt"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "chatmodel-operator"


@dataclass(frozen=True)
class Kind:
    """One API resource the operator reads or writes."""

    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


# Every resource kind the operator touches, spelled once: the RBAC rules, the kopf indexes and
# the request paths all come from here (a misspelt plural in a hand-written ClusterRole is how
# other operators lost their HPA watches).
CHATMODEL: Final = Kind(KIND, GROUP, VERSION, PLURAL)
PVC: Final = Kind("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims")
CONFIGMAP: Final = Kind("ConfigMap", "", "v1", "configmaps")
SERVICE: Final = Kind("Service", "", "v1", "services")
EVENT: Final = Kind("Event", "", "v1", "events")
POD: Final = Kind("Pod", "", "v1", "pods")
NAMESPACE: Final = Kind("Namespace", "", "v1", "namespaces", namespaced=False)
JOB: Final = Kind("Job", "batch", "v1", "jobs")
DEPLOYMENT: Final = Kind("Deployment", "apps", "v1", "deployments")
HPA: Final = Kind("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers")
PDB: Final = Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets")
NETWORK_POLICY: Final = Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies")
SERVICE_MONITOR: Final = Kind("ServiceMonitor", "monitoring.coreos.com", "v1", "servicemonitors")
SCALED_OBJECT: Final = Kind("ScaledObject", "keda.sh", "v1alpha1", "scaledobjects")
INFERENCE_POOL: Final = Kind("InferencePool", "inference.networking.k8s.io", "v1", "inferencepools")
CRD: Final = Kind(
    "CustomResourceDefinition",
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    namespaced=False,
)
KOPF_PEERING: Final = Kind("KopfPeering", "kopf.dev", "v1", "kopfpeerings")
CLUSTER_KOPF_PEERING: Final = Kind(
    "ClusterKopfPeering", "kopf.dev", "v1", "clusterkopfpeerings", namespaced=False
)

# The children, in the order a pass writes them.
CHILD_KINDS: Final[tuple[Kind, ...]] = (
    PVC,
    JOB,
    CONFIGMAP,
    DEPLOYMENT,
    SERVICE,
    PDB,
    INFERENCE_POOL,
    HPA,
    SCALED_OBJECT,
    SERVICE_MONITOR,
    NETWORK_POLICY,
)
# Read, never written: the pods of our Jobs and Deployments, for why they do not run.
WATCHED_KINDS: Final[tuple[Kind, ...]] = (POD,)
# Optional CRDs: absent from many clusters, so the operator must run without them.
OPTIONAL_KINDS: Final[frozenset[Kind]] = frozenset({SERVICE_MONITOR, SCALED_OBJECT, INFERENCE_POOL})
BY_KIND: Final[dict[str, Kind]] = {
    k.kind: k for k in (*CHILD_KINDS, *WATCHED_KINDS, CHATMODEL, EVENT)
}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    return BY_KIND[obj["kind"]]


# --- observed children --------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    complete: bool = False
    failed: bool = False
    active: int = 0
    reason: str | None = None  # the Failed condition's reason (BackoffLimitExceeded, ...)
    message: str | None = None
    finished_at: str | None = None  # lastTransitionTime of Complete/Failed
    started_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    spec_replicas: int | None = None
    observed_generation: int = 0
    replicas: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    progress_deadline_exceeded: bool = False
    template_key: str | None = None  # engine key the pod template serves
    # The ReplicaFailure condition's message: the ReplicaSet could not create pods (admission
    # refused them, a quota is exhausted, ...). The Deployment controller copies it from the
    # ReplicaSet's own condition.
    replica_failure: str | None = None


@dataclass(frozen=True)
class PodState:
    """Why a pod does not run yet, when the cluster says so."""

    phase: str = "Pending"
    # The scheduler's PodScheduled=False message ("0/9 nodes are available: ...").
    unschedulable: str | None = None
    unschedulable_since: str | None = None  # that condition's lastTransitionTime
    job: str | None = None  # the Job that owns it (its job-name label)
    component: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the reconcile needs to know about one existing child (kept in a kopf index).

    Small on purpose: 500 ChatModels have thousands of children, and the comparisons that
    decide whether to write read only these fields.
    """

    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str | None
    generation: int
    applied_hash: str | None
    instance: str | None  # app.kubernetes.io/instance label: the ChatModel it serves
    engine_key: str | None
    owners: tuple[str, ...]  # owner uids
    owner_refs: tuple[Mapping[str, Any], ...] = ()
    attempt: int = 1
    job: JobState | None = None
    deployment: DeploymentState | None = None
    pod: PodState | None = None
    claim_phase: str | None = None  # a PersistentVolumeClaim's status.phase
    created: str | None = None  # metadata.creationTimestamp
    pool: tuple[ParentState, ...] | None = None  # an InferencePool's gateways and conditions

    @property
    def digest(self) -> tuple[Any, ...]:
        """What, when it changes, is worth a reconcile of the ChatModels that depend on it."""
        job = self.job
        # A Job matters when it finishes (or vanishes); its progress is not worth a pass.
        job_outcome = (job.complete, job.failed, job.reason) if job is not None else None
        # A pod matters when it cannot be scheduled or stops being so, not for its heartbeat.
        pod = (self.pod.unschedulable, self.pod.phase) if self.pod is not None else None
        return (
            self.resource_version is not None,
            self.uid,
            job_outcome,
            self.deployment,
            pod,
            self.claim_phase,
            self.pool,
        )


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("status") == "True":
            out[str(c.get("type"))] = c
    return out


def summarize(body: Mapping[str, Any]) -> Observed:
    """The compact record of one child object (pure; called for every watch event)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    refs = tuple(meta.get("ownerReferences") or ())
    status = body.get("status") or {}
    kind = body.get("kind", "")
    job = dep = pod = None
    claim_phase = None
    if kind == "Job":
        conds = _conditions(status)
        done = conds.get("Complete") or conds.get("Failed") or {}
        failed = conds.get("Failed")
        job = JobState(
            complete="Complete" in conds,
            failed=failed is not None,
            active=int(status.get("active") or 0),
            reason=failed.get("reason") if failed else None,
            message=failed.get("message") if failed else None,
            finished_at=done.get("lastTransitionTime"),
            started_at=status.get("startTime"),
            completed_at=status.get("completionTime"),
        )
    elif kind == "Deployment":
        spec = body.get("spec") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        progressing = [
            c
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") == "Progressing"
        ]
        dep = DeploymentState(
            spec_replicas=spec.get("replicas"),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(status.get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            progress_deadline_exceeded=any(
                c.get("reason") == "ProgressDeadlineExceeded" for c in progressing
            ),
            template_key=template_labels.get(ENGINE_KEY_LABEL),
            replica_failure=_replica_failure(status),
        )
    elif kind == "Pod":
        pod = _pod_state(body, labels)
    elif kind == "PersistentVolumeClaim":
        claim_phase = status.get("phase")
    pool = parent_states(status) if kind == "InferencePool" else None
    try:
        attempt = int(annotations.get(BUILD_ATTEMPT) or 1)
    except ValueError:
        attempt = 1
    return Observed(
        kind=kind,
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        resource_version=meta.get("resourceVersion"),
        generation=int(meta.get("generation") or 0),
        applied_hash=annotations.get(APPLIED_HASH),
        instance=labels.get(INSTANCE_LABEL),
        engine_key=labels.get(ENGINE_KEY_LABEL),
        owners=tuple(str(r.get("uid")) for r in refs if isinstance(r, Mapping)),
        owner_refs=refs,
        attempt=attempt,
        job=job,
        deployment=dep,
        pod=pod,
        claim_phase=claim_phase,
        created=meta.get("creationTimestamp"),
        pool=pool,
    )


def _replica_failure(status: Mapping[str, Any]) -> str | None:
    for c in status.get("conditions") or ():
        if not isinstance(c, Mapping):
            continue
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return str(c.get("message") or c.get("reason") or "ReplicaFailure")
    return None


def _pod_state(body: Mapping[str, Any], labels: Mapping[str, str]) -> PodState:
    status = body.get("status") or {}
    unschedulable = since = None
    for c in status.get("conditions") or ():
        if (
            isinstance(c, Mapping)
            and c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
        ):
            unschedulable = str(c.get("message") or "Unschedulable")
            since = c.get("lastTransitionTime")
    return PodState(
        phase=str(status.get("phase") or "Pending"),
        unschedulable=unschedulable,
        unschedulable_since=since,
        job=labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
        component=labels.get("app.kubernetes.io/component"),
    )


def is_ours(body: Mapping[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER


def desired_hash(obj: Mapping[str, Any]) -> str:
    """Hash of a desired object: what it says, independent of key order."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def with_hash(obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The object to send, annotated with the hash of itself (computed before annotating)."""
    digest = desired_hash(obj)
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: digest}
    return {**obj, "metadata": meta}, digest


# --- the client ---------------------------------------------------------------------------


def _decode(raw: bytes) -> Any:
    """An answer's body: JSON when it is JSON, else its text as a Status-like message.

    A real API server answers some requests in plain text: discovery of a group it does not
    serve is ``404 page not found``, and an aggregated API that is down answers its proxy's
    text. Parsing those as JSON is how the operator once never started on a cluster without
    KEDA.
    """
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"reason": "NotJSON", "message": raw.decode("utf-8", "replace").strip()[:300]}


class KubeApiError(ChatModelError):
    """The API server refused a request in a way retrying will not fix (400, 403, 404, 422)."""

    reason = "ApiError"

    def __init__(self, status: int, reason: str, message: str, what: str) -> None:
        self.status = status
        self.api_reason = reason
        self.permanent = status in (400, 422)
        super().__init__(f"{what}: {status} {reason}: {message}")


async def load_credentials() -> Configuration:
    """The API server and credentials, loaded by ``kubernetes_asyncio`` the way kopf and
    kubectl look for them: a pod's ServiceAccount first (its token file is re-read as the
    kubelet rotates it), else ``$KUBECONFIG`` or ``~/.kube/config`` (exec plugins, inline
    certificates, token files). Raises ``ConfigException``, ``OSError`` or ``yaml.YAMLError``
    when neither loads.
    """
    configuration = Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
        return configuration
    except k8s_config.ConfigException:
        pass
    # Read at call time: the library's own default is frozen when it is first imported.
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p):
        # The library would go on to a puzzling "Expected key current-context".
        raise k8s_config.ConfigException(f"no kubeconfig file at {path}")
    await k8s_config.load_kube_config(
        config_file=path, client_configuration=configuration, persist_config=False
    )
    return configuration


async def authorization(configuration: Configuration) -> tuple[str, str] | None:
    """The (scheme, credential) the library sends in ``Authorization``, refreshed first (a
    rotated ServiceAccount token), for kopf to log in with the same identity; None when the
    credentials are a client certificate alone."""
    value = await configuration.get_api_key_with_prefix("BearerToken")
    if not value:
        return None
    scheme, _, credential = str(value).partition(" ")
    return (scheme, credential) if credential else ("Bearer", scheme)


def _seconds(header: str | None) -> float | None:
    """A Retry-After header in seconds (the API server sends whole seconds), or None."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    first_delay: float = 0.2
    max_delay: float = 5.0
    timeout: float = 30.0  # per request

    def delays(self) -> Iterable[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            # Full jitter: many ChatModels retrying after one API hiccup must not stampede.
            yield random.uniform(delay / 2, delay)
            delay = min(delay * 2, self.max_delay)


RETRYABLE: Final = frozenset({409, 429, 500, 502, 503, 504})
_CONTENT_TYPES: Final = {
    "apply": "application/apply-patch+yaml",
    "merge": "application/merge-patch+json",
    "json": "application/json",
}


@dataclass
class RequestStats:
    """Requests made, by verb: read by the benchmark and the tests, never by the reconcile."""

    by_verb: dict[str, int] = field(default_factory=dict)
    retries: int = 0

    def count(self, verb: str) -> None:
        self.by_verb[verb] = self.by_verb.get(verb, 0) + 1


class KubeClient:
    """The calls the operator makes, over ``kubernetes_asyncio``'s transport (TLS, credentials
    and their refresh, the connection pool). What is ours: the request counting, the retry
    policy and which answers are errors; bodies go out and come back as plain JSON, never
    through the library's generated models (the hot path is a few thousand writes)."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        field_manager: str = FIELD_MANAGER,
        retry: RetryPolicy | None = None,
        relogin: Callable[[], Awaitable[Configuration]] | None = None,
    ) -> None:
        self.configuration = configuration
        self.field_manager = field_manager
        self.retry = retry or RetryPolicy()
        self._relogin = relogin
        self._api: ApiClient | None = None
        self.stats = RequestStats()

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    def _client(self) -> ApiClient:
        if self._api is None:
            # Created in the running loop: the library's aiohttp session binds to it.
            self.configuration.connection_pool_maxsize = 64
            self._api = ApiClient(self.configuration)
            # The library's session trusts the environment: every request then reads ~/.netrc
            # and the proxy variables in a worker thread, two thread hops that doubled an
            # apply's CPU (bench/reconcile.py), and a netrc entry for the API server's host
            # makes aiohttp refuse our Authorization header. kopf's watches do not trust it
            # either (ConnectionInfo.trust_env), so both reach the server the same way; a
            # kubeconfig's proxy-url still applies. aiohttp has no public setter for this.
            self._api.rest_client.pool_manager._trust_env = False
        return self._api

    async def _send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Any,
        params: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """One HTTP exchange through the library's REST layer, the answer left unread.

        Below ``ApiClient.call_api`` on purpose: that walks every body through
        ``sanitize_for_serialization`` (for its generated models; ours are plain JSON already),
        which more than doubled the CPU of an apply. Unread (no ``_preload_content``), because
        the library would raise on every non-2xx and decode the body as text; we read the
        status, Retry-After and raw bytes ourselves.
        """
        api = self._client()
        send = {**headers, "User-Agent": COMPONENT}
        # The library's credentials, refreshed by its own hooks (a rotated token file).
        await api.update_params_for_auth(send, [], ["BearerToken"])
        response: aiohttp.ClientResponse = await api.rest_client.request(
            method,
            f"{self.configuration.host}{path}",
            query_params=dict(params) if params else None,
            headers=send,
            body=body,
            _preload_content=False,
            _request_timeout=self.retry.timeout,
        )
        return response

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        content: str = "json",
        params: Mapping[str, str] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> tuple[int, Any]:
        """One API call with retries; returns (status, parsed body). Statuses in
        ``ok_statuses`` are returned to the caller instead of raised (404 on delete...)."""
        headers = {"Content-Type": _CONTENT_TYPES[content], "Accept": "application/json"}
        delays = iter(self.retry.delays())
        relogged = False
        while True:
            self.stats.count(method)
            try:
                resp = await self._send(method, path, headers, body, params)
                async with resp:
                    status = resp.status
                    payload = _decode(await resp.read())
                    retry_after = _seconds(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                retry_after = None
                status, payload = (
                    0,
                    {"reason": type(exc).__name__, "message": str(exc) or "timeout"},
                )
            if status < 300 or status in ok_statuses:
                return status, payload
            if status == 401 and self._relogin is not None and not relogged:
                # Credentials the library cannot refresh itself (an exec plugin's token, a
                # kubeconfig rewritten under us): load them again once, then retry.
                relogged = True
                self.configuration = await self._relogin()
                await self.close()
                continue
            info = payload if isinstance(payload, dict) else {}
            reason = str(info.get("reason") or "Error")
            message = str(info.get("message") or "")[:300]
            if status == 0 or status in RETRYABLE:
                delay = next(delays, None)
                if delay is not None:
                    # The API server's 429 (priority and fairness, a storage still starting)
                    # says how long to wait; never wait less, nor longer than the policy's cap.
                    delay = max(delay, min(retry_after or 0.0, self.retry.max_delay))
                    self.stats.retries += 1
                    log.debug("%s: %s %s, retrying in %.2fs", what, status or "", reason, delay)
                    await asyncio.sleep(delay)
                    continue
                if status == 500 and info.get("kind") == "Status":
                    # The server answered, the same internal error every time (such as "failed
                    # to allocate a serviceIP ... range is full"): show it on the ChatModel.
                    raise KubeApiError(
                        status, reason, f"{message} (after {self.retry.attempts} attempts)", what
                    )
                raise TransientError(
                    f"{what}: {status or 'no response'} {reason} after "
                    f"{self.retry.attempts} attempts: {message}"
                )
            raise KubeApiError(status, reason, message, what)

    # -- writes ---------------------------------------------------------------------------

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a desired object (already annotated by ``with_hash``)."""
        k = kind_of(obj)
        meta = obj["metadata"]
        _, result = await self._request(
            "PATCH",
            k.path(meta.get("namespace"), meta["name"]),
            what=f"apply {k.kind} {meta['name']}",
            body=obj,
            content="apply",
            params={"fieldManager": self.field_manager, "force": "true"},
        )
        return dict(result or {})

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create an object; None when it already exists (someone else created it first)."""
        k = kind_of(obj)
        meta = obj["metadata"]
        status, result = await self._request(
            "POST",
            k.path(meta.get("namespace")),
            what=f"create {k.kind} {meta['name']}",
            body=obj,
            params={"fieldManager": self.field_manager},
            ok_statuses=frozenset({409}),
        )
        if status == 409:
            return None
        return dict(result or {})

    async def merge_patch(
        self,
        k: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON merge patch; None when the object is gone."""
        status, result = await self._request(
            "PATCH",
            k.path(namespace, name, subresource),
            what=f"patch {k.kind}{'/' + subresource if subresource else ''} {name}",
            body=patch,
            content="merge",
            params={"fieldManager": self.field_manager},
            ok_statuses=frozenset({404}),
        )
        return None if status == 404 else dict(result or {})

    async def delete(
        self, k: Kind, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete in the background (the garbage collector removes dependents); False when it
        was already gone. ``uid`` guards against deleting a newer object of the same name."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        status, _ = await self._request(
            "DELETE",
            k.path(namespace, name),
            what=f"delete {k.kind} {name}",
            body=body,
            ok_statuses=frozenset({404}),
        )
        return status != 404

    async def post_event(
        self,
        *,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        """A core/v1 Event about a ChatModel. Failures are logged, never raised: an Event
        is a courtesy, the status carries the truth."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        ts = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # client-go's naming: the object's name, a dot and a unique suffix.
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved.get("kind", KIND),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            await self._request("POST", EVENT.path(namespace), what=f"event {reason}", body=event)
        except ChatModelError as exc:
            log.warning(
                "could not post Event %s for %s/%s: %s", reason, namespace, meta.get("name"), exc
            )

    # -- reads (rare: the indexes answer almost everything) ---------------------------------

    async def get(self, k: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        status, result = await self._request(
            "GET",
            k.path(namespace, name),
            what=f"get {k.kind} {name}",
            ok_statuses=frozenset({404}),
        )
        return None if status == 404 else dict(result or {})

    async def events_about(
        self, namespace: str, uid: str, *, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Events the cluster posted about one object (the Job controller's FailedCreate, ...),
        newest last. Read only while a child is stuck without pods, so it stays rare."""
        selector = f"involvedObject.uid={uid}" + (f",reason={reason}" if reason else "")
        status, result = await self._request(
            "GET",
            EVENT.path(namespace),
            what=f"events of {uid}",
            params={"fieldSelector": selector},
            ok_statuses=frozenset({403, 404}),
        )
        if status >= 300 or not isinstance(result, dict):
            return []
        items = [e for e in result.get("items") or () if isinstance(e, dict)]
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def served(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves a resource (discovery; used to pick the peering mode)."""
        path = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        status, result = await self._request(
            "GET", path, what=f"discover {group_version}", ok_statuses=frozenset({403, 404})
        )
        if status >= 300 or not isinstance(result, dict):
            return False
        return any(r.get("name") == plural for r in result.get("resources") or ())


def monotonic() -> float:
    return time.monotonic()
