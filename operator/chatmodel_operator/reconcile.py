"""One level-triggered, idempotent reconcile pass for a ChatModel.

observe (kopf's watch-fed indexes, no reads) -> validate (pydantic) -> plan -> render ->
apply (only what differs) -> status (one write, only when it changed; an in-between phase
may settle first, see ``Settings.status_settle_s``) -> Events (one per transition written or
error).

This is the only place where domain errors become conditions, Warning Events and
``kopf.PermanentError`` / ``kopf.TemporaryError`` (STYLE 7). Waiting is not an error: a pass
that waits for a build or a rollout returns, and the watch event of the Job or Deployment (or
the resync timer) starts the next one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import kopf

from chatmodel_operator import metrics
from chatmodel_operator.adapters import kube
from chatmodel_operator.adapters.checkpoint import read_model_files
from chatmodel_operator.adapters.kube import (
    BUILD_ATTEMPT,
    CONFIGMAP,
    DEPLOYMENT,
    HPA,
    JOB,
    OPTIONAL_KINDS,
    PVC,
    SCALED_OBJECT,
    SERVICE_MONITOR,
    Kind,
    KubeApiError,
    KubeClient,
    Observed,
)
from chatmodel_operator.api import ChatModelSpec, parse_chatmodel
from chatmodel_operator.catalog import find_known, parse_source
from chatmodel_operator.errors import (
    ChatModelError,
    EngineBuildFailed,
    NoFit,
    SpecErrors,
    TransientError,
    UnknownModel,
)
from chatmodel_operator.metrics import Phase
from chatmodel_operator.plan import Plan, plan_model
from chatmodel_operator.render import (
    Children,
    deployment_name,
    endpoint,
    job_name,
    openai_endpoint,
    render_children,
    selector_labels,
)

if TYPE_CHECKING:
    from chatmodel_operator.scheduling import Scheduler

log = logging.getLogger(__name__)

Cause = Literal["create", "update", "resume", "timer", "child", "retry"]
ChildKey = tuple[str, str, str]  # kind, namespace, name

# Conditions in the order `kubectl describe` shows them; Ready is the roll-up.
CONDITION_TYPES = (
    "Validated",
    "Planned",
    "EngineBuilding",
    "EngineReady",
    "EngineBuildFailed",
    "Available",
    "Ready",
)
_REASON_OK = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
# Hugging Face user access tokens; scrubbed from anything the operator writes or logs.
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{16,}")
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Phases on the way somewhere: their status may wait for the next one (Settings.status_settle_s).
_IN_BETWEEN: frozenset[str] = frozenset({"Pending", "Planning", "BuildingEngine", "Deploying"})
# Kinds a pass may delete when the spec no longer asks for them.
_PRUNABLE = (CONFIGMAP, HPA, SCALED_OBJECT, SERVICE_MONITOR)


def redact(text: str) -> str:
    """Remove hub tokens from a message before it reaches a status, an Event or a log line."""
    for var in _SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return _HF_TOKEN.sub("hf_***", text)


# --- what the pass observes ----------------------------------------------------------------


class ObservedChildren(Protocol):
    """Existing children, as kopf's indexes see them (handlers.py implements it)."""

    def get(self, kind: Kind, namespace: str, name: str) -> Observed | None: ...

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> Iterable[Observed]: ...


@dataclass(frozen=True)
class Settings:
    build_attempts: int = 3  # builds of one engine key before the ChatModel fails
    build_backoff_s: float = 60.0  # wait before the second attempt; doubles after each failure
    build_backoff_max_s: float = 1800.0
    model_files_ttl_s: float = 600.0  # how long a read config.json is trusted
    fresh_ttl_s: float = 60.0  # how long our own write outranks a lagging watch
    retry_delay_s: float = 10.0  # next pass after the API server kept failing
    # How long an in-between phase (Pending, Planning, BuildingEngine, Deploying) of a status
    # that is new or already describes the current generation may wait before it is written.
    # Ready, Degraded, Failed, errors and a new generation are written at once. Steps that
    # pass within the window cost no status write and no Event of their own: the Event of the
    # phase that is written names them. Builds and rollouts that take minutes are unaffected.
    status_settle_s: float = 5.0
    # Passes in flight at once. kopf starts a handler per ChatModel without limit; 500 created
    # together would otherwise all render, write and hold their responses at the same time.
    concurrent_passes: int = 16


ModelFiles = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]


class ReadingCheckpoint(Exception):
    """The checkpoint's config.json is being read; the pass shows phase Planning."""


@dataclass(frozen=True)
class Desired:
    children: Children
    serving: tuple[tuple[dict[str, Any], str], ...]  # (object annotated with its hash, hash)


@dataclass
class Context:
    """Everything a pass needs besides the ChatModel: one per operator process."""

    client: KubeClient
    children: ObservedChildren
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    model_files: Callable[[str], ModelFiles] = read_model_files
    served: set[Kind] = field(default_factory=set)  # optional CRDs the cluster serves
    scheduler: Scheduler | None = None
    # The Triton model repository builder (triton.build_repository_for unless replaced).
    build_repository: Callable[..., Mapping[Any, str]] | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    engine_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # Our own writes, until the watch catches up (so a pass right after a write neither
    # repeats it nor creates a shared Job a second time).
    fresh: dict[ChildKey, tuple[Observed, float]] = field(default_factory=dict)
    # The child states each ChatModel last acted on; a watch event that changes one pokes it.
    seen: dict[ChildKey, tuple[Any, ...]] = field(default_factory=dict)
    waiters: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (ns, key) -> names
    builds_recorded: set[str] = field(default_factory=set)  # Job uids counted in metrics
    told: set[tuple[str, str, str, str]] = field(default_factory=set)  # warnings already posted
    # Namespaces (None: the whole cluster) where another replica is elected to act.
    standby: set[str | None] = field(default_factory=set)
    _slots: asyncio.Semaphore | None = None

    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created in the operator's event loop, on first use
            self._slots = asyncio.Semaphore(self.settings.concurrent_passes)
        return self._slots

    def stands_by(self, namespace: str) -> bool:
        return None in self.standby or namespace in self.standby

    # The latest ChatModel body from the index, and the one our last status write returned.
    latest: Callable[[str, str], Mapping[str, Any] | None] | None = None
    written: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    # ChatModels whose in-between status waits: (since, monotonic seconds; phases passed).
    held: dict[tuple[str, str], tuple[float, list[str]]] = field(default_factory=dict)
    _files: dict[str, tuple[float, ModelFiles | ChatModelError]] = field(default_factory=dict)
    _plans: dict[tuple[str, float], tuple[Any, Plan] | ChatModelError] = field(default_factory=dict)
    _fetching: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _waiting: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    _repos: dict[tuple[str, str], Mapping[Any, str]] = field(default_factory=dict)
    _plan_status: dict[int, tuple[Plan, dict[str, Any]]] = field(default_factory=dict)
    _desired: dict[tuple[str, str], tuple[tuple[str, str, str], Desired]] = field(
        default_factory=dict
    )

    # -- observed state with our own writes layered on top --------------------------------

    def lookup(self, kind: Kind, namespace: str, name: str) -> Observed | None:
        key = (kind.kind, namespace, name)
        watched = self.children.get(kind, namespace, name)
        entry = self.fresh.get(key)
        if entry is None:
            return watched
        ours, expires = entry
        if time.monotonic() > expires or (watched is not None and not _newer(ours, watched)):
            self.fresh.pop(key, None)  # the watch has caught up
            return watched
        return ours

    def wrote(self, obj: Observed) -> None:
        now = time.monotonic()
        if len(self.fresh) > 4096:  # entries expire on lookup; sweep those never looked up
            self.fresh = {k: v for k, v in self.fresh.items() if v[1] > now}
        expires = now + self.settings.fresh_ttl_s
        self.fresh[(obj.kind, obj.namespace, obj.name)] = (obj, expires)
        self.seen[(obj.kind, obj.namespace, obj.name)] = obj.digest

    def forget_written(self, kind: str, namespace: str, name: str) -> None:
        self.fresh.pop((kind, namespace, name), None)

    def gone(self, obj: Observed) -> None:
        """A child was deleted: forget what we knew about it."""
        key = (obj.kind, obj.namespace, obj.name)
        self.seen.pop(key, None)
        entry = self.fresh.get(key)
        if entry is not None and entry[0].uid == obj.uid:  # not a successor we just created
            self.fresh.pop(key, None)

    def changed(self, obj: Observed) -> bool:
        """Whether a watch event shows a child in a state worth a pass: different from the
        previous event of that child or from our own last write to it. (Comparing with what
        some pass last read instead would lose pokes: a pass of one ChatModel may read a
        finished shared Job from the index before the Job's event reaches the others.)"""
        key = (obj.kind, obj.namespace, obj.name)
        previous = self.seen.get(key)
        self.seen[key] = obj.digest
        return previous != obj.digest

    def newest(self, key: tuple[str, str], body: Mapping[str, Any]) -> dict[str, Any]:
        """The latest known version of a ChatModel, as a plain dict: the handler's body, the
        index's (it may have seen a later event while this pass waited for the lock), or the
        one our last status write returned (the watch may not have delivered it yet)."""
        best = body
        for other in (self.latest(*key) if self.latest else None, self.written.get(key)):
            if other is not None and _rv(other) > _rv(best):
                best = other
        return {k: best[k] for k in best}

    def forget(self, namespace: str, name: str) -> None:
        """The ChatModel is gone."""
        self.locks.pop((namespace, name), None)
        self.written.pop((namespace, name), None)
        self.held.pop((namespace, name), None)
        self._desired.pop((namespace, name), None)
        self.told = {t for t in self.told if t[:2] != (namespace, name)}
        for names in self.waiters.values():
            names.discard(name)

    # -- memoized pure work (a resync of an unchanged spec costs almost nothing) ------------

    def files_for(self, source: str, waiter: tuple[str, str]) -> tuple[ModelFiles, float]:
        """(config.json, tokenizer_config.json) of a checkpoint the catalog does not know, and
        when they were read. Reading them is I/O (the hub, a disk) that may take seconds: it
        runs in the background while the ChatModel shows phase Planning, and pokes it when
        done. An expired copy is served while a fresh one is read."""
        parsed = parse_source(source)
        if parsed.scheme == "hf" and find_known(parsed.repo_id) is not None:
            return (None, None), 0.0  # the catalog knows it: no I/O
        hit = self._files.get(source)
        fresh = hit is not None and time.monotonic() - hit[0] < self.settings.model_files_ttl_s
        if not fresh:
            self._waiting.setdefault(source, set()).add(waiter)
            if source not in self._fetching:
                self._fetching[source] = asyncio.create_task(self._fetch(source))
        if hit is None:
            raise ReadingCheckpoint(source)
        if isinstance(hit[1], ChatModelError):
            raise hit[1]
        return hit[1], hit[0]

    async def _fetch(self, source: str) -> None:
        value: ModelFiles | ChatModelError
        try:
            value = await asyncio.to_thread(self.model_files, source)
        except ChatModelError as exc:
            value = exc
        except Exception as exc:  # a reader bug or an odd filesystem must still end in a status
            value = UnknownModel(
                f"spec.model.source: reading {source} failed ({type(exc).__name__}); fix: "
                "check the source, or use a catalog model or a file:// checkpoint"
            )
        self._files[source] = (time.monotonic(), value)
        del self._fetching[source]
        for namespace, name in self._waiting.pop(source, set()):
            if self.scheduler is not None:
                self.scheduler.poke(namespace, name)

    async def plan_for(
        self, spec: ChatModelSpec, spec_json: str, waiter: tuple[str, str]
    ) -> tuple[Any, Plan]:
        (config, tokenizer_config), read_at = self.files_for(spec.model.source, waiter)
        key = (spec_json, read_at)
        hit = self._plans.get(key)
        if hit is None:
            try:
                hit = plan_model(spec, config=config, tokenizer_config=tokenizer_config)
            except ChatModelError as exc:
                hit = exc
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = hit
        if isinstance(hit, ChatModelError):
            raise hit
        return hit

    def plan_status(self, plan: Plan) -> dict[str, Any]:
        """status.plan, built once per plan (plans are memoized, so identity is enough)."""
        hit = self._plan_status.get(id(plan))
        if hit is None or hit[0] is not plan:
            hit = (plan, _prune(plan.to_status()))
            if len(self._plan_status) > 4096:
                self._plan_status.clear()
            self._plan_status[id(plan)] = hit
        return hit[1]

    def desired_for(
        self,
        *,
        name: str,
        namespace: str,
        uid: str,
        spec: ChatModelSpec,
        spec_json: str,
        model: Any,
        plan: Plan,
    ) -> Desired:
        """The rendered children and their hashes, rendered again only when the spec (or the
        ChatModel) changed: most passes follow a child, not a spec change, and re-rendering
        means re-hashing a model repository of a hundred kilobytes."""
        key = (uid, spec_json, plan.engine_key)
        hit = self._desired.get((namespace, name))
        if hit is not None and hit[0] == key:
            return hit[1]
        children = render_children(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            plan=plan,
            repository=self.repository_for(spec, spec_json, model, plan),
        )
        desired = Desired(children, tuple(kube.with_hash(o) for o in children.serving))
        self._desired[(namespace, name)] = (key, desired)
        return desired

    def repository_for(
        self, spec: ChatModelSpec, spec_json: str, model: Any, plan: Plan
    ) -> Mapping[Any, str]:
        build: Callable[..., Mapping[Any, str]]
        if self.build_repository is not None:
            build = self.build_repository
        else:
            from chatmodel_operator.triton import build_repository_for as build

        key = (spec_json, plan.engine_key)
        repo = self._repos.get(key)
        if repo is None:
            repo = dict(build(spec=spec, plan=plan, model=model))
            if len(self._repos) > 4096:
                self._repos.clear()
            self._repos[key] = repo
        return repo


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _newer(a: Observed, b: Observed) -> bool:
    """Whether ``a`` is a later state than ``b``. resourceVersions are opaque by contract but
    are etcd revisions, one counter for the whole cluster, in every API server we know; when
    one is not a number, our own write wins until it expires."""
    try:
        return int(a.resource_version or 0) > int(b.resource_version or 0)
    except ValueError:
        return True


# --- conditions ----------------------------------------------------------------------------


def _reason(text: str) -> str:
    """A CamelCase condition reason from whatever an API or Job reported."""
    if _REASON_OK.match(text):
        return text
    words = re.findall(r"[A-Za-z0-9]+", text)
    out = "".join(w[:1].upper() + w[1:] for w in words)
    return out if out and out[0].isalpha() else "Unknown"


class Conditions:
    """The conditions of one pass, keeping lastTransitionTime when a status does not change."""

    def __init__(self, old: Any, generation: int, now: str) -> None:
        self.old: dict[str, Mapping[str, Any]] = {}
        for c in old if isinstance(old, list) else ():
            if isinstance(c, Mapping) and isinstance(c.get("type"), str):
                self.old[c["type"]] = c
        self.generation = generation
        self.now = now
        self.new: dict[str, dict[str, Any]] = {}

    def set(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        value = "Unknown" if status is None else ("True" if status else "False")
        prev = self.old.get(type_)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
        self.new[type_] = {
            "type": type_,
            "status": value,
            "reason": _reason(reason),
            "message": redact(message)[:32768],
            "lastTransitionTime": since or self.now,
            "observedGeneration": self.generation,
        }

    def is_true(self, type_: str) -> bool:
        return self.new.get(type_, {}).get("status") == "True"

    def changed(self, type_: str) -> bool:
        prev, cur = self.old.get(type_), self.new.get(type_)
        if cur is None:
            return False
        return prev is None or any(prev.get(k) != cur[k] for k in ("status", "reason", "message"))

    def as_list(self) -> list[dict[str, Any]]:
        return [self.new[t] for t in CONDITION_TYPES if t in self.new]


# --- one pass ------------------------------------------------------------------------------


@dataclass
class Outcome:
    phase: Phase
    error: ChatModelError | None = None
    retry_after: float | None = None


@dataclass
class _Serving:
    """What the Deployment says about serving."""

    exists: bool = False
    replicas: int = 0
    ready: int = 0
    available: int = 0
    desired: int = 0
    rolling: bool = False
    stuck: bool = False
    key: str | None = None


def _serving(dep: Observed | None) -> _Serving:
    if dep is None or dep.deployment is None:
        return _Serving()
    d = dep.deployment
    desired = d.spec_replicas if d.spec_replicas is not None else 1
    return _Serving(
        exists=True,
        replicas=d.replicas,
        ready=d.ready,
        available=d.available,
        desired=desired,
        rolling=d.observed_generation < dep.generation
        or d.updated < desired
        or d.replicas > desired,
        stuck=d.progress_deadline_exceeded,
        key=d.template_key,
    )


def _elapsed_since(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return float("inf")
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (now - then).total_seconds()


def _prune(value: Any) -> Any:
    """Drop None values: absent and null mean the same in a status, and the API server
    stores neither."""
    if isinstance(value, Mapping):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


class _Pass:
    def __init__(self, body: Mapping[str, Any], ctx: Context, cause: Cause) -> None:
        self.body = body
        self.ctx = ctx
        self.cause = cause
        meta = body.get("metadata") or {}
        self.name: str = meta.get("name") or ""
        self.namespace: str = meta.get("namespace") or ""
        self.uid: str = meta.get("uid") or ""
        self.generation: int = int(meta.get("generation") or 0)
        old = body.get("status")
        # As stored: the API server keeps no nulls in a status, so it compares as it is.
        self.old_status: dict[str, Any] = dict(old) if isinstance(old, Mapping) else {}
        self.now = ctx.clock()
        self.conds = Conditions(
            self.old_status.get("conditions"),
            self.generation,
            self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.retry_after: float | None = None
        self.api_error: KubeApiError | None = None
        self.spec: ChatModelSpec | None = None  # once it parses

    # -- the pass ---------------------------------------------------------------------------

    async def run(self) -> Outcome:
        dep = self.ctx.lookup(DEPLOYMENT, self.namespace, deployment_name(self.name))
        serving = _serving(dep)
        self._serving_status(serving, plan=None)

        try:
            cm = parse_chatmodel(self.body)
        except SpecErrors as exc:
            self.conds.set("Validated", False, exc.reason, exc.message)
            return await self._failed(exc, "Validated", serving)
        spec = self.spec = cm.spec
        self.conds.set("Validated", True, "Valid", "the spec is valid")

        spec_json = spec.model_dump_json()
        try:
            model, plan = await self.ctx.plan_for(spec, spec_json, (self.namespace, self.name))
        except ReadingCheckpoint as reading:
            self.conds.set("Planned", None, "ReadingCheckpoint", f"reading the config of {reading}")
            self._available(serving)
            await self._finish("Planning")
            return Outcome("Planning", retry_after=self.retry_after)
        except TransientError:
            raise
        except ChatModelError as exc:
            self.conds.set("Planned", False, exc.reason, exc.message)
            return await self._failed(exc, "Planned", serving)
        self.status["plan"] = self.ctx.plan_status(plan)
        if not plan.fits:
            err = NoFit(plan.reasons)
            self.conds.set("Planned", False, err.reason, plan.reason)
            return await self._failed(err, "Planned", serving)
        self.conds.set("Planned", True, "Planned", plan.reason)

        desired = self.ctx.desired_for(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            spec=spec,
            spec_json=spec_json,
            model=model,
            plan=plan,
        )
        engine_ready, build_error, applied = False, None, {}
        try:
            await self._ensure_cache(desired.children.cache_pvc, spec)
            engine_ready, build_error = await self._engine(plan, desired.children.build_job)
            applied = await self._serving_children(desired.serving, engine_ready)
            dep = applied.get(DEPLOYMENT.kind) or dep
            serving = _serving(dep)
            await self._prune_children(applied, serving, plan.engine_key, engine_ready)
        except KubeApiError as exc:
            # The API server refused a child: say so in the status, then let run() decide.
            self.api_error = exc
        self._serving_status(serving, plan)
        if SERVICE_KEY in applied:
            self.status["endpoint"] = endpoint(name=self.name, namespace=self.namespace, spec=spec)
        elif "endpoint" in self.old_status:
            self.status["endpoint"] = self.old_status["endpoint"]
        # The pods follow the new plan (and its frontend) only once its engine is ready.
        oai = openai_endpoint(name=self.name, namespace=self.namespace, spec=spec, plan=plan)
        if SERVICE_KEY in applied and engine_ready:
            if oai is not None:
                self.status["openaiEndpoint"] = oai
        elif "openaiEndpoint" in self.old_status:
            self.status["openaiEndpoint"] = self.old_status["openaiEndpoint"]

        phase = self._phase(serving, engine_ready, build_error)
        self._available(serving)
        await self._finish(phase)
        if self.api_error is not None:
            raise self.api_error
        if build_error is not None and phase == "Failed":
            return Outcome(phase, build_error)
        return Outcome(phase, retry_after=self.retry_after)

    # -- engine -----------------------------------------------------------------------------

    async def _ensure_cache(self, pvc: dict[str, Any], spec: ChatModelSpec) -> None:
        """Create the shared cache volume once; afterwards only owner references change.

        Its spec is immutable once bound, and ChatModels sharing it may ask for different
        sizes, so it is never re-applied. With deletePolicy Delete the ChatModel becomes one
        of its owners, and the garbage collector removes it with the last of them.
        """
        name = pvc["metadata"]["name"]
        # One pass at a time per volume: ChatModels created together must not all race to
        # create it (a 409 each) or overwrite each other's owner references.
        async with self.ctx.engine_locks.setdefault(
            (self.namespace, "pvc/" + name), asyncio.Lock()
        ):
            await self._ensure_cache_locked(pvc, spec, name)

    async def _ensure_cache_locked(
        self, pvc: dict[str, Any], spec: ChatModelSpec, name: str
    ) -> None:
        obs = self.ctx.lookup(PVC, self.namespace, name)
        if obs is None:
            body, _ = kube.with_hash(pvc)
            created = await self.ctx.client.create(body)
            if created is not None:
                self.ctx.wrote(kube.summarize(created))
            else:  # created by another client meanwhile; its watch event will follow
                self.ctx.wrote(
                    kube.summarize({**body, "metadata": {**body["metadata"], "uid": "?"}})
                )
            return
        wants_owner = spec.cache.delete_policy == "Delete"
        if wants_owner == (self.uid in obs.owners):
            return
        if obs.resource_version is None:  # someone else's create, not watched yet
            self.retry_after = 1.0
            return
        refs = [dict(r) for r in obs.owner_refs if r.get("uid") != self.uid]
        if wants_owner:
            # Not the controller: several ChatModels may own the shared volume.
            refs.append({**pvc["metadata"]["ownerReferences"][0], "controller": False})
        patch = {"metadata": {"ownerReferences": refs, "resourceVersion": obs.resource_version}}
        patched = await self.ctx.client.merge_patch(PVC, self.namespace, name, patch)
        if patched is not None:
            self.ctx.wrote(kube.summarize(patched))

    async def _engine(
        self, plan: Plan, job_body: dict[str, Any]
    ) -> tuple[bool, EngineBuildFailed | None]:
        """Make sure the engine for the planned key is built or being built (once per key)."""
        ns, key, ctx = self.namespace, plan.engine_key, self.ctx
        name = job_name(key)
        ctx.waiters.setdefault((ns, key), set()).add(self.name)
        old_engine = self.old_status.get("engine") or {}
        remembered = old_engine.get("key") == key and old_engine.get("ready") is True
        lock = ctx.engine_locks.setdefault((ns, key), asyncio.Lock())
        async with lock:
            job = ctx.lookup(JOB, ns, name)
            state = job.job if job is not None else None
            attempt = job.attempt if job is not None else 0
            self.status["engine"] = {"key": key, "ready": False, "job": name, "attempts": attempt}
            if (state is not None and state.complete) or (
                remembered and (job is None or not state or not state.failed)
            ):
                self._record_build(job, "succeeded")
                self.status["engine"]["ready"] = True
                self.conds.set("EngineBuilding", False, "Built", f"engine {key} is built")
                self.conds.set("EngineReady", True, "Built", f"engine {key} is built and cached")
                self.conds.set("EngineBuildFailed", False, "Built", "")
                ctx.waiters.get((ns, key), set()).discard(self.name)
                return True, None
            self.conds.set("EngineReady", False, "Building", f"engine {key} is not built yet")
            if job is None:
                created = await self._create_job(job_body, 1)
                self.status["engine"]["attempts"] = 1
                self.conds.set(
                    "EngineBuilding", True, "Building", f"Job {name} is building engine {key}"
                )
                self.conds.set("EngineBuildFailed", False, "Building", "")
                if created is None:
                    self.retry_after = 5.0
                return False, None
            if state is None or not state.failed:
                self.conds.set(
                    "EngineBuilding", True, "Building", f"Job {name} is building engine {key}"
                )
                self.conds.set("EngineBuildFailed", False, "Building", "")
                return False, None
            return await self._build_failed(plan, job, job_body)

    async def _create_job(self, job_body: dict[str, Any], attempt: int) -> Observed | None:
        meta = job_body["metadata"]
        body = {
            **job_body,
            "metadata": {
                **meta,
                "annotations": {**meta.get("annotations", {}), BUILD_ATTEMPT: str(attempt)},
            },
        }
        created = await self.ctx.client.create(body)
        if created is None:
            return None
        obs = kube.summarize(created)
        self.ctx.wrote(obs)
        return obs

    async def _build_failed(
        self, plan: Plan, job: Observed, job_body: dict[str, Any]
    ) -> tuple[bool, EngineBuildFailed | None]:
        s = self.ctx.settings
        state = job.job
        assert state is not None
        self._record_build(job, "failed", state.reason)
        why = state.reason or "Failed"
        detail = f"{why}: {state.message}" if state.message else why
        if job.attempt >= s.build_attempts:
            err = EngineBuildFailed(
                f"engine {plan.engine_key}: Job {job.name} failed {job.attempt} times, last: "
                f"{detail}; fix: read the Job's pod logs (kubectl logs job/{job.name}), correct "
                "the cause, then delete the Job to build again"
            )
            self.conds.set("EngineBuilding", False, why, "")
            self.conds.set("EngineBuildFailed", True, why, err.message)
            return False, err
        backoff = min(s.build_backoff_s * 2 ** (job.attempt - 1), s.build_backoff_max_s)
        wait = backoff - _elapsed_since(state.finished_at, self.now)
        if wait > 0:
            self.conds.set("EngineBuilding", False, "RetryBackoff", f"retrying in {wait:.0f}s")
            self.conds.set(
                "EngineBuildFailed",
                True,
                why,
                f"attempt {job.attempt} of {s.build_attempts} failed: {detail}; "
                f"retrying after {backoff:.0f}s",
            )
            self.retry_after = wait
            return False, None
        await self.ctx.client.delete(JOB, self.namespace, job.name, uid=job.uid)
        self.ctx.forget_written(JOB.kind, self.namespace, job.name)
        created = await self._create_job(job_body, job.attempt + 1)
        self.status["engine"]["attempts"] = job.attempt + 1
        if created is None:  # the old Job is still being removed
            self.retry_after = 2.0
        self.conds.set(
            "EngineBuilding",
            True,
            "BuildRetried",
            f"attempt {job.attempt + 1} of {s.build_attempts}",
        )
        self.conds.set(
            "EngineBuildFailed",
            True,
            why,
            f"attempt {job.attempt} of {s.build_attempts} failed: {detail}; "
            f"started attempt {job.attempt + 1}",
        )
        return False, None

    def _record_build(
        self,
        job: Observed | None,
        result: Literal["succeeded", "failed"],
        reason: str | None = None,
    ) -> None:
        if job is None or job.job is None or job.uid in self.ctx.builds_recorded:
            return
        self.ctx.builds_recorded.add(job.uid)
        seconds = None
        if job.job.started_at and job.job.completed_at:
            seconds = _elapsed_since(
                job.job.started_at,
                datetime.fromisoformat(job.job.completed_at.replace("Z", "+00:00")),
            )
        metrics.record_engine_build(
            result=result, seconds=seconds, reason=_reason(reason) if reason else None
        )

    # -- serving ----------------------------------------------------------------------------

    async def _serving_children(
        self, objects: Iterable[tuple[dict[str, Any], str]], engine_ready: bool
    ) -> dict[str, Observed]:
        """Apply what differs. The Deployment and its ConfigMap wait for the engine: before
        the first build there is nothing to serve, and during a switch the old pods keep
        serving the old engine untouched until the new one is ready."""
        applied: dict[str, Observed] = {}
        for body, digest in objects:
            k = kube.kind_of(body)
            if not engine_ready and k in (DEPLOYMENT, CONFIGMAP):
                continue
            if k in OPTIONAL_KINDS and k not in self.ctx.served:
                message = f"{k.kind} requested but the {k.group} API is not served; skipped"
                self._tell_once("MissingCRD", message)
                continue
            applied[_key(k)] = await self._apply(k, body, digest)
        return applied

    def _tell_once(self, reason: str, message: str) -> None:
        """A Warning that no condition carries: told once per operator process."""
        key = (self.namespace, self.name, reason, message)
        if key not in self.ctx.told:
            self.ctx.told.add(key)
            self.events.append(("Warning", reason, message))

    async def _apply(self, k: Kind, body: dict[str, Any], digest: str) -> Observed:
        current = self.ctx.lookup(k, self.namespace, body["metadata"]["name"])
        if current is not None and current.applied_hash == digest:
            return current
        obs = kube.summarize(await self.ctx.client.apply(body))
        self.ctx.wrote(obs)
        return obs

    async def _prune_children(
        self, applied: Mapping[str, Observed], serving: _Serving, key: str, engine_ready: bool
    ) -> None:
        """Delete children the spec no longer asks for. Model repositories of an old engine go
        only once no pod can need them: after the rollout to the new engine completed."""
        rolled_out = engine_ready and serving.exists and serving.key == key and not serving.rolling
        for k in _PRUNABLE:
            for obs in list(self.ctx.children.owned_by(k, self.namespace, self.uid)):
                current = applied.get(_key(k))
                if k is CONFIGMAP:
                    keep = obs.engine_key in (key, serving.key) or not rolled_out
                    if keep or (current is not None and current.name == obs.name):
                        continue
                elif current is not None and current.name == obs.name:
                    continue
                await self.ctx.client.delete(k, self.namespace, obs.name, uid=obs.uid)
                self.ctx.forget_written(k.kind, self.namespace, obs.name)

    # -- status -----------------------------------------------------------------------------

    def _serving_status(self, serving: _Serving, plan: Plan | None) -> None:
        self.status["replicas"] = serving.replicas
        self.status["readyReplicas"] = serving.ready
        self.status["selector"] = ",".join(
            f"{k}={v}" for k, v in sorted(selector_labels(self.name).items())
        )
        gpus = (
            plan.gpus_per_replica
            if plan is not None
            else int((self.old_status.get("plan") or {}).get("gpusPerReplica") or 0)
        )
        self.status["gpus"] = serving.replicas * gpus

    def _available(self, serving: _Serving) -> None:
        if serving.available > 0:
            self.conds.set(
                "Available",
                True,
                "MinimumReplicasAvailable",
                f"{serving.available} of {serving.desired} replicas available",
            )
        elif serving.exists:
            self.conds.set(
                "Available",
                False,
                "NoReplicasAvailable",
                f"0 of {serving.desired} replicas available",
            )
        else:
            self.conds.set(
                "Available", False, "NotDeployed", "the serving Deployment does not exist yet"
            )

    def _phase(
        self, serving: _Serving, engine_ready: bool, build_error: EngineBuildFailed | None
    ) -> Phase:
        old = self.old_status.get("phase")
        if build_error is not None:
            return "Failed"
        if not engine_ready:
            return "BuildingEngine"
        if serving.stuck:
            return "Degraded"
        if not serving.exists or serving.rolling:
            return "Deploying"
        if serving.available >= serving.desired:
            return "Ready"
        return "Degraded" if serving.available > 0 or old in ("Ready", "Degraded") else "Deploying"

    async def _failed(self, err: ChatModelError, stage: str, serving: _Serving) -> Outcome:
        """Invalid or infeasible: say why, touch no child (old pods keep serving)."""
        for type_ in ("Planned", "EngineReady") if stage == "Validated" else ("EngineReady",):
            self.conds.set(
                type_, None, "NotPlanned" if type_ == "EngineReady" else "NotValidated", ""
            )
        # What was there before is still there: keep reporting it.
        for k in ("engine", "endpoint", "openaiEndpoint"):
            if k in self.old_status:
                self.status[k] = self.old_status[k]
        if "plan" not in self.status and stage == "Validated" and "plan" in self.old_status:
            self.status["plan"] = self.old_status["plan"]
        self._available(serving)
        await self._finish("Failed")
        return Outcome("Failed", err)

    async def _finish(self, phase: Phase) -> None:
        c = self.conds
        problems: list[str] = [
            t for t in ("Validated", "Planned") if t in c.new and not c.is_true(t)
        ]
        if c.new.get("EngineBuildFailed", {}).get("status") == "True" and phase == "Failed":
            problems.append("EngineBuildFailed")
        if problems:
            first = c.new[problems[0]]
            c.set("Ready", False, first["reason"], first["message"])
        elif self.api_error is not None:
            c.set("Ready", False, self.api_error.api_reason, self.api_error.message)
        elif c.is_true("Available"):
            c.set("Ready", True, "Serving", c.new["Available"]["message"])
        else:
            c.set("Ready", False, phase, f"phase {phase}")
        self.status["phase"] = phase
        self.status["observedGeneration"] = self.generation
        self.status["conditions"] = c.as_list()
        status = _prune(self.status)
        key = (self.namespace, self.name)
        if status == self.old_status:
            self.ctx.held.pop(key, None)
        elif (wait := self._settle(phase)) is not None:
            # Not yet: a later pass (at the latest the poke below) writes it, or the next phase.
            for type_, reason, message in self.events:  # warnings no condition carries
                await self.ctx.client.post_event(
                    involved=self.body, type_=type_, reason=reason, message=redact(message)
                )
            self.retry_after = wait if self.retry_after is None else min(wait, self.retry_after)
            metrics.observe_chatmodel(self._sample(phase, status))
            return
        passed = self.ctx.held.pop(key, (0.0, []))[1]
        events = self._transition_events(phase, [p for p in passed if p != phase])
        if status != self.old_status:
            patch = {"status": {**dict.fromkeys(self.old_status), **status}}
            written = await self.ctx.client.merge_patch(
                kube.CHATMODEL, self.namespace, self.name, patch, subresource="status"
            )
            if written is not None:
                self.ctx.written[(self.namespace, self.name)] = written
        for type_, reason, message in events:
            await self.ctx.client.post_event(
                involved=self.body, type_=type_, reason=reason, message=redact(message)
            )
        metrics.observe_chatmodel(self._sample(phase, status))

    def _sample(self, phase: Phase, status: Mapping[str, Any]) -> metrics.ChatModelSample:
        spec = self.spec
        scaling = spec.autoscaling if spec is not None and spec.autoscaling.enabled else None
        return metrics.ChatModelSample(
            namespace=self.namespace,
            name=self.name,
            phase=phase,
            ready=self.conds.is_true("Ready"),
            gpus_requested=int(status.get("gpus") or 0),
            replicas_desired=int(status.get("replicas") or 0),
            replicas_ready=int(status.get("readyReplicas") or 0),
            autoscaling_metric=scaling.metric if scaling else None,
            autoscaling_target=scaling.effective_target() if scaling else None,
            min_replicas=scaling.min_replicas if scaling else None,
            max_replicas=scaling.max_replicas if scaling else None,
        )

    def _settle(self, phase: Phase) -> float | None:
        """Seconds an in-between status may still wait before it is written, or None to write
        it now. It waits only while nothing is wrong and the status is new or describes the
        current generation (after a spec change, `observedGeneration` must move at once, or
        `kubectl wait --for=condition=Ready` would return on the old generation's Ready)."""
        settle = self.ctx.settings.status_settle_s
        if settle <= 0 or phase not in _IN_BETWEEN or self.api_error is not None:
            return None
        if self.old_status and self.old_status.get("observedGeneration") != self.generation:
            return None
        c = self.conds
        if any(
            (cur := c.new.get(t)) is not None and cur["status"] == bad and c.changed(t)
            for t, bad in _ERRORS
        ):
            return None
        now = time.monotonic()
        since, passed = self.ctx.held.setdefault((self.namespace, self.name), (now, []))
        left = since + settle - now
        if left <= 0:
            return None
        if not passed or passed[-1] != phase:
            passed.append(phase)
        return left

    def _transition_events(
        self, phase: Phase, passed: list[str] | None = None
    ) -> list[tuple[str, str, str]]:
        """One Event per phase transition written and per new or changed error; phases that
        passed while the status settled are named in the Event of the one written."""
        out = list(self.events)
        c = self.conds
        for type_, bad in _ERRORS:
            cur = c.new.get(type_)
            if cur is not None and cur["status"] == bad and c.changed(type_):
                out.append(("Warning", cur["reason"], cur["message"]))
        if self.api_error is not None and c.changed("Ready"):
            out.append(("Warning", "ApiError", self.api_error.message))
        old = self.old_status.get("phase")
        if phase != old:
            warning = phase in ("Failed", "Degraded")
            if not (warning and out):  # a Failed transition is already told by its error
                detail = c.new.get("Ready", {}).get("message", "")
                steps = [p for p in passed or () if p != old]
                via = f" (through {', '.join(steps)})" if steps else ""
                out.append(
                    (
                        "Warning" if warning else "Normal",
                        phase,
                        f"{old or 'New'} -> {phase}{via}: {detail}",
                    )
                )
        return out


SERVICE_KEY = "Service"
# Conditions that carry an error, with the status that means it.
_ERRORS = (("Validated", "False"), ("Planned", "False"), ("EngineBuildFailed", "True"))


def _key(k: Kind) -> str:
    return k.kind


# --- the entry point -----------------------------------------------------------------------


async def run(body: Mapping[str, Any], ctx: Context, *, cause: Cause) -> Outcome:
    """One pass for one ChatModel; passes for the same ChatModel never overlap.

    Raises ``kopf.PermanentError`` for a spec that cannot be served as written (not from the
    resync timer: the status already says so, and the timer must keep running to notice a
    fix made elsewhere, such as a deleted build Job) and ``kopf.TemporaryError`` when the API
    server keeps failing.
    """
    meta = body.get("metadata") or {}
    key = (meta.get("namespace") or "", meta.get("name") or "")
    lock = ctx.locks.setdefault(key, asyncio.Lock())
    started = time.monotonic()
    async with lock, ctx.slots():
        if (
            cause in ("child", "timer", "retry")
            and ctx.latest is not None
            and ctx.latest(*key) is None
        ):
            return Outcome("Pending")  # deleted meanwhile: its children go with it
        try:
            outcome = await _Pass(ctx.newest(key, body), ctx, cause).run()
        except (TransientError, KubeApiError) as exc:
            permanent = isinstance(exc, KubeApiError) and exc.permanent
            metrics.record_reconcile(
                result="permanent_error" if permanent else "temporary_error",
                seconds=time.monotonic() - started,
                reason=exc.reason,
            )
            message = redact(str(exc))
            if permanent:
                raise kopf.PermanentError(message) from None
            raise kopf.TemporaryError(message, delay=ctx.settings.retry_delay_s) from None
    seconds = time.monotonic() - started
    if outcome.error is not None:
        metrics.record_reconcile(
            result="permanent_error", seconds=seconds, reason=outcome.error.reason
        )
        if cause != "timer":
            raise kopf.PermanentError(redact(outcome.error.message))
        return outcome
    metrics.record_reconcile(result="success", seconds=seconds)
    if outcome.retry_after is not None and ctx.scheduler is not None:
        ctx.scheduler.poke(key[0], key[1], delay=outcome.retry_after)
    return outcome


# --- passes started by children ------------------------------------------------------------


__all__ = [
    "Context",
    "ObservedChildren",
    "Outcome",
    "Settings",
    "redact",
    "run",
]
