"""Passes that no kopf change handler starts: a child changed, a backoff ran out, the
resync came round. Also how a standby replica knows it stands by."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from chatmodel_operator.adapters.kube import Kind
from chatmodel_operator.context import Cause, Context
from chatmodel_operator.errors import ChatModelError

log = logging.getLogger(__name__)


def outranked(peers: Mapping[str, Any], priority: int, now: datetime | None = None) -> bool:
    """Whether another live kopf peer outranks us (kopf's rule: the highest priority acts;
    equal priorities all pause). Our own entry is the one with our priority."""
    now = now or datetime.now(UTC)
    live = []
    for peer in peers.values():
        if not isinstance(peer, Mapping):
            continue
        try:
            seen = datetime.fromisoformat(str(peer.get("lastseen")))
            lifetime = float(peer.get("lifetime", 60))
        except (TypeError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if (now - seen).total_seconds() < lifetime:
            live.append(int(peer.get("priority", 0)))
    return any(p > priority for p in live) or live.count(priority) > 1


class Scheduler:
    """Runs the passes no kopf change handler starts: a child changed, a backoff ran out, or
    the periodic resync came round.

    The resync is this loop rather than a ``kopf.timer``: kopf puts a finalizer on every
    object a timer serves, which costs a write per ChatModel and blocks its deletion while the
    operator is down (the stuck-finalizer trouble of other operators). Pokes for the same
    ChatModel coalesce; a poke during its pass runs one more pass after it.
    """

    def __init__(
        self,
        ctx: Context,
        lookup: Callable[[str, str], Mapping[str, Any] | None],
        run_pass: Callable[..., Awaitable[Any]],
        *,
        workers: int = 8,
        resync_seconds: float | None = None,
        keys: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.lookup = lookup
        self.run_pass = run_pass
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.keys = keys
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._cause: dict[tuple[str, str], Cause] = {}
        self._running: set[tuple[str, str]] = set()
        self._dirty: dict[tuple[str, str], Cause] = {}
        self._later: list[tuple[float, tuple[str, str], Cause]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"chatmodel-worker-{i}")
            for i in range(self.workers)
        ]
        self._tasks.append(asyncio.create_task(self._timer(), name="chatmodel-delays"))
        if self.resync_seconds and self.keys is not None:
            self._tasks.append(asyncio.create_task(self._resync(), name="chatmodel-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def poke(
        self, namespace: str, name: str, *, delay: float = 0.0, cause: Cause = "child"
    ) -> None:
        key = (namespace, name)
        if delay > 0:
            heapq.heappush(self._later, (time.monotonic() + delay, key, cause))
            self._wakeup.set()
        elif key in self._running:
            self._dirty.setdefault(key, cause)
        elif key not in self._cause:
            self._cause[key] = cause
            self._queue.put_nowait(key)
        elif cause != "timer":
            self._cause[key] = cause  # a real change outranks the resync

    def follow_peers(self, kind: Kind, name: str, priority: int, every: float = 5.0) -> None:
        """Read kopf's peering object(s) now and then: kopf pauses its own handlers on a
        standby replica but tells nobody else, and its peering watch is its own."""
        self._tasks.append(asyncio.create_task(self._peers(kind, name, priority, every)))

    async def _peers(self, kind: Kind, name: str, priority: int, every: float) -> None:
        while True:
            if kind.namespaced:
                namespaces: set[str | None] = {ns for ns, _ in (self.keys() if self.keys else ())}
            else:
                namespaces = {None}
            standby: set[str | None] = set()
            for namespace in namespaces:
                with contextlib.suppress(ChatModelError):
                    peering = await self.ctx.client.get(kind, namespace, name)
                    if peering is not None and outranked(peering.get("status") or {}, priority):
                        standby.add(namespace)
            self.ctx.standby = standby
            await asyncio.sleep(every)

    def poke_all(self) -> None:
        """Every ChatModel, now: something they all depend on changed (an API appeared)."""
        for namespace, name in list(self.keys() if self.keys else ()):
            self.poke(namespace, name)

    def poke_waiters(self, namespace: str, engine_key: str | None) -> None:
        if engine_key:
            for name in list(self.ctx.waiters.get((namespace, engine_key), ())):
                self.poke(namespace, name)

    async def _resync(self) -> None:
        """Every ChatModel once per period, spread evenly so that the passes never bunch."""
        assert self.resync_seconds is not None and self.keys is not None
        while True:
            keys = list(self.keys())
            step = self.resync_seconds / max(len(keys), 1)
            for i, (namespace, name) in enumerate(keys):
                self.poke(namespace, name, delay=(i + 1) * step, cause="timer")
            await asyncio.sleep(self.resync_seconds)

    async def _timer(self) -> None:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                _, key, cause = heapq.heappop(self._later)
                self.poke(*key, cause=cause)
            timeout = self._later[0][0] - now if self._later else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            cause = self._cause.pop(key, "child")
            if self.ctx.stands_by(key[0]):
                continue  # the elected replica acts; kopf pauses this one's handlers too
            body = self.lookup(*key)
            if body is None:
                continue
            self._running.add(key)
            try:
                await self.run_pass(body, self.ctx, cause=cause)
            except kopf.TemporaryError as exc:
                self.poke(*key, delay=exc.delay or 10)
            except kopf.PermanentError:
                pass  # the status and an Event already say why
            except Exception:
                log.exception("reconcile of %s/%s failed", *key)
                self.poke(*key, delay=30)
            finally:
                self._running.discard(key)
            if key in self._dirty:
                self.poke(*key, cause=self._dirty.pop(key))
