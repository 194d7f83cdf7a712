"""What the operator process keeps between reconcile passes: settings, the observed children
with its own recent writes layered on top, and memoized pure work (checkpoint configs, plans,
rendered objects), so that a resync of an unchanged ChatModel costs almost nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from chatmodel_operator.adapters import kube
from chatmodel_operator.adapters.checkpoint import read_model_files
from chatmodel_operator.adapters.kube import (
    Kind,
    KubeClient,
    Observed,
)
from chatmodel_operator.api import ChatModelSpec
from chatmodel_operator.catalog import find_known, parse_source
from chatmodel_operator.conditions import prune_status
from chatmodel_operator.errors import (
    ChatModelError,
    UnknownModel,
)
from chatmodel_operator.plan import Plan, plan_model
from chatmodel_operator.render import (
    Children,
    render_children,
)

if TYPE_CHECKING:
    from chatmodel_operator.scheduling import Scheduler

log = logging.getLogger(__name__)


ChildKey = tuple[str, str, str]  # kind, namespace, name


class ObservedChildren(Protocol):
    """Existing children, as kopf's indexes see them (handlers.py implements it)."""

    def get(self, kind: Kind, namespace: str, name: str) -> Observed | None: ...

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> Iterable[Observed]: ...

    def pods(
        self, namespace: str, *, job: str | None = None, instance: str | None = None
    ) -> Iterable[Observed]:
        """Our pods: those of one build Job, or the serving pods of one ChatModel."""
        ...


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


# What started a pass: a kopf change handler, the resync, a child's watch event, a retry.
Cause = Literal["create", "update", "resume", "timer", "child", "retry"]


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
    # The Triton model repository builder (render.repository.build_repository_for unless replaced).
    build_repository: Callable[..., Mapping[Any, str]] | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    engine_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # Our own writes, until the watch catches up (so a pass right after a write neither
    # repeats it nor creates a shared Job a second time).
    fresh: dict[ChildKey, tuple[Observed, float]] = field(default_factory=dict)
    # The child states each ChatModel last acted on; a watch event that changes one pokes it.
    seen: dict[ChildKey, tuple[Any, ...]] = field(default_factory=dict)
    # The metadata.generation each child had after our last apply: a higher one means someone
    # else changed its spec (a user's `kubectl edit`), so our fields are applied again even
    # though the applied-hash annotation still matches.
    applied_generation: dict[ChildKey, int] = field(default_factory=dict)
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
        self.applied_generation[(obj.kind, obj.namespace, obj.name)] = obj.generation

    def drifted(self, obj: Observed) -> bool:
        """Whether a child's spec was changed by someone else since our last apply (its
        generation moved on). The first sight of a child (after a restart) sets the mark."""
        key = (obj.kind, obj.namespace, obj.name)
        ours = self.applied_generation.setdefault(key, obj.generation)
        return obj.generation > ours

    def forget_written(self, kind: str, namespace: str, name: str) -> None:
        self.fresh.pop((kind, namespace, name), None)

    def gone(self, obj: Observed) -> None:
        """A child was deleted: forget what we knew about it."""
        key = (obj.kind, obj.namespace, obj.name)
        self.seen.pop(key, None)
        self.applied_generation.pop(key, None)
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
            hit = (plan, prune_status(plan.to_status()))
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
            from chatmodel_operator.render.repository import build_repository_for as build

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
