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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import kopf

from chatmodel_operator import blockers, metrics
from chatmodel_operator.adapters import kube
from chatmodel_operator.adapters.kube import (
    BUILD_ATTEMPT,
    CONFIGMAP,
    DEPLOYMENT,
    HPA,
    INFERENCE_POOL,
    JOB,
    NETWORK_POLICY,
    OPTIONAL_KINDS,
    PVC,
    SCALED_OBJECT,
    SERVICE_MONITOR,
    Kind,
    KubeApiError,
    Observed,
)
from chatmodel_operator.api import ChatModelSpec, parse_chatmodel
from chatmodel_operator.conditions import (
    Conditions,
    prune_status,
    reason_of,
    redact,
)
from chatmodel_operator.context import (
    Cause,
    Context,
    ModelFiles,
    ObservedChildren,
    ReadingCheckpoint,
    Settings,
)
from chatmodel_operator.errors import (
    ChatModelError,
    EngineBuildFailed,
    NoFit,
    SpecErrors,
    TransientError,
)
from chatmodel_operator.metrics import Phase
from chatmodel_operator.plan import Plan
from chatmodel_operator.render import (
    deployment_name,
    endpoint,
    inference_pool_name,
    job_name,
    openai_endpoint,
    selector_labels,
)
from chatmodel_operator.render.routing import pool_readiness

log = logging.getLogger(__name__)


# Phases on the way somewhere: their status may wait for the next one (Settings.status_settle_s).
_IN_BETWEEN: frozenset[str] = frozenset({"Pending", "Planning", "BuildingEngine", "Deploying"})
# A build Job with no pod after this long may have had it refused (its FailedCreate Event is
# read then), and is checked again this often while it still has none.
_NO_POD_GRACE_S = 3.0
_NO_POD_RECHECK_S = 10.0
# The scheduler's first answer is often transient: a pod created before the PV controller
# bound its claim is "unschedulable" for a second. Reported once it has lasted this long.
_UNSCHEDULABLE_GRACE_S = 10.0
# Kinds a pass may delete when the spec no longer asks for them.
_PRUNABLE = (CONFIGMAP, INFERENCE_POOL, HPA, SCALED_OBJECT, SERVICE_MONITOR, NETWORK_POLICY)


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
        self.claim_name: str | None = None  # the cache PersistentVolumeClaim's
        # What the cluster says stops the pods (build or serving), for conditions and phase.
        self.blocker: blockers.Blocker | None = None

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
        self.claim_name = desired.children.cache_pvc["metadata"]["name"]
        try:
            await self._ensure_cache(desired.children.cache_pvc, spec)
            engine_ready, build_error = await self._engine(plan, desired.children.build_job)
            applied = await self._serving_children(desired.serving, engine_ready)
            dep = applied.get(DEPLOYMENT.kind) or dep
            serving = _serving(dep)
            await self._prune_children(applied, serving, plan.engine_key, engine_ready)
            if (
                engine_ready
                and serving.exists
                and (serving.available < serving.desired or serving.rolling)
            ):
                self.blocker = blockers.serving_blocker(
                    deployment_name=deployment_name(self.name),
                    deployment=dep.deployment if dep is not None else None,
                    pods=self._settled(self.ctx.children.pods(self.namespace, instance=self.name)),
                    gpu_product=plan.gpu_product,
                )
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

        self._inference_pool(spec, plan, applied)
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
                if state is not None and not state.complete:
                    self.blocker = await self._build_blocker(plan, job)
                    if self.blocker is not None:
                        self.conds.set(
                            "EngineReady", False, self.blocker.reason, self.blocker.message
                        )
                return False, None
            return await self._build_failed(plan, job, job_body)

    async def _build_blocker(self, plan: Plan, job: Observed) -> blockers.Blocker | None:
        """Why the build Job's pod does not run. A Job whose pod admission refused has no pod
        and no condition: the reason is only in the Job controller's FailedCreate Event, read
        here once the Job has had a few seconds to make its pod, then every few seconds while
        it still has none."""
        pods = list(self.ctx.children.pods(self.namespace, job=job.name))
        failed_create = None
        settled = self._settled(pods)
        if not pods and job.job is not None and job.job.active == 0:
            age = _elapsed_since(job.created, self.now)
            if age < _NO_POD_GRACE_S:
                self.retry_after = _NO_POD_GRACE_S - age
            else:
                events = await self.ctx.client.events_about(
                    self.namespace, job.uid, reason="FailedCreate"
                )
                if events:
                    failed_create = str(events[-1].get("message") or "FailedCreate")
                self.retry_after = _NO_POD_RECHECK_S
        claim = self.ctx.lookup(PVC, self.namespace, self.claim_name) if self.claim_name else None
        return blockers.build_blocker(
            job_name=job.name,
            pods=settled,
            claim=claim,
            failed_create=failed_create,
            gpu_product=plan.gpu_product,
        )

    def _settled(self, pods: Iterable[Observed]) -> list[Observed]:
        """The pods whose unschedulable state has lasted past the grace; a pass is due when
        the others' grace ends."""
        out = []
        for p in pods:
            if p.pod is not None and p.pod.unschedulable:
                age = _elapsed_since(p.pod.unschedulable_since, self.now)
                if age < _UNSCHEDULABLE_GRACE_S:
                    wait = _UNSCHEDULABLE_GRACE_S - age
                    self.retry_after = min(self.retry_after or wait, wait)
                    continue
            out.append(p)
        return out

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
            result=result, seconds=seconds, reason=reason_of(reason) if reason else None
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
            if (
                k in (HPA, SCALED_OBJECT)
                and _key(DEPLOYMENT, deployment_name(self.name)) not in applied
                and self.ctx.lookup(DEPLOYMENT, self.namespace, deployment_name(self.name)) is None
            ):
                # An autoscaler whose target does not exist yet only fails (the HPA controller
                # posts FailedGetScale every few seconds while the engine builds).
                continue
            if k in OPTIONAL_KINDS and k not in self.ctx.served:
                if k is not INFERENCE_POOL:  # its condition says so, with a Warning of its own
                    message = f"{k.kind} requested but the {k.group} API is not served; skipped"
                    self._tell_once("MissingCRD", message)
                continue
            applied[_key(k, body["metadata"]["name"])] = await self._apply(k, body, digest)
        return applied

    def _tell_once(self, reason: str, message: str) -> None:
        """A Warning that no condition carries: told once per operator process."""
        key = (self.namespace, self.name, reason, message)
        if key not in self.ctx.told:
            self.ctx.told.add(key)
            self.events.append(("Warning", reason, message))

    async def _apply(self, k: Kind, body: dict[str, Any], digest: str) -> Observed:
        current = self.ctx.lookup(k, self.namespace, body["metadata"]["name"])
        if current is not None and current.applied_hash == digest and not self.ctx.drifted(current):
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
            wanted = {o.name for o in applied.values() if o.kind == k.kind}
            for obs in list(self.ctx.children.owned_by(k, self.namespace, self.uid)):
                if k is CONFIGMAP:
                    keep = obs.engine_key in (key, serving.key) or not rolled_out
                    if keep or obs.name in wanted:
                        continue
                elif obs.name in wanted:
                    continue
                await self.ctx.client.delete(k, self.namespace, obs.name, uid=obs.uid)
                self.ctx.forget_written(k.kind, self.namespace, obs.name)

    # -- status -----------------------------------------------------------------------------

    def _inference_pool(
        self, spec: ChatModelSpec, plan: Plan, applied: Mapping[str, Observed]
    ) -> None:
        """InferencePoolReady: what the gateways say of the pool, or why there is none."""
        if spec.routing.inference_pool is None:
            return  # the condition goes with the field
        pool = inference_pool_name(self.name)
        if INFERENCE_POOL not in self.ctx.served:
            self.conds.set(
                "InferencePoolReady",
                False,
                "InferencePoolAPIMissing",
                "spec.routing.inferencePool is set, but the cluster does not serve "
                f"{INFERENCE_POOL.api_version} InferencePool; fix: install the Gateway API "
                "Inference Extension's CRDs (v1.0 or later) and grant the operator the "
                "inferencepools resource (chart value rbac.inferencePools); the pool is "
                "created as soon as the API is served",
            )
            return
        if not plan.openai_frontend:
            self.conds.set(
                "InferencePoolReady",
                False,
                "NoOpenAIFrontend",
                f"InferencePool {pool} routes to the OpenAI port, but the pods run plain "
                f"tritonserver ({plan.openai_frontend_reason}); fix: use an image that ships "
                "Triton's OpenAI frontend, or set spec.serving.openai to Enabled",
            )
            return
        obs = applied.get(INFERENCE_POOL.kind)
        if obs is None:
            self.conds.set(
                "InferencePoolReady", None, "NotCreated", f"InferencePool {pool} not created yet"
            )
            return
        r = pool_readiness(pool, obs.pool or ())
        status = {"True": True, "False": False}.get(r.status)
        self.conds.set("InferencePoolReady", status, r.reason, r.message)

    def _idle(self, serving: _Serving) -> bool:
        """Scaled to zero by the autoscaler, as spec.autoscaling.minReplicas 0 allows."""
        a = self.spec.autoscaling if self.spec is not None else None
        return (
            a is not None
            and a.enabled
            and a.min_replicas == 0
            and serving.exists
            and serving.desired == 0
            and not serving.rolling
        )

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
        b = self.blocker
        if b is not None and b.reason in blockers.SERVING_REASONS and serving.available == 0:
            self.conds.set("Available", False, b.reason, b.message)
        elif self._idle(serving):
            self.conds.set(
                "Available",
                True,
                "ScaledToZero",
                "0 replicas while idle: requests wait in the router, whose queue wakes the "
                "Deployment",
            )
        elif serving.available > 0:
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
        if self.blocker is not None:
            # Nothing serves: Blocked. Old pods serve while the change cannot roll: Degraded.
            return "Blocked" if serving.available == 0 else "Degraded"
        if not engine_ready:
            return "BuildingEngine"
        if serving.stuck:
            return "Degraded"
        if not serving.exists or serving.rolling:
            return "Deploying"
        if self._idle(serving):
            return "Idle"
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
        elif self.blocker is not None and phase in ("Blocked", "Degraded"):
            c.set("Ready", c.is_true("Available"), self.blocker.reason, self.blocker.message)
        elif c.is_true("Available"):
            reason = "Idle" if phase == "Idle" else "Serving"
            c.set("Ready", True, reason, c.new["Available"]["message"])
        else:
            c.set("Ready", False, phase, f"phase {phase}")
        self.status["phase"] = phase
        self.status["observedGeneration"] = self.generation
        self.status["conditions"] = c.as_list()
        status = prune_status(self.status)
        changed = status != self.old_status
        wait = self._settle(phase) if changed else None
        if wait is not None:
            # Not yet: a later pass (at the latest the poke below) writes it, or the next
            # phase. Only the warnings no condition carries go out now.
            events = list(self.events)
            self.retry_after = wait if self.retry_after is None else min(wait, self.retry_after)
        else:
            passed = self.ctx.held.pop((self.namespace, self.name), (0.0, []))[1]
            events = self._transition_events(phase, passed)
            if changed:
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
        if self._new_errors():
            return None
        now = time.monotonic()
        since, passed = self.ctx.held.setdefault((self.namespace, self.name), (now, []))
        left = since + settle - now
        if left <= 0:
            return None
        if not passed or passed[-1] != phase:
            passed.append(phase)
        return left

    def _new_errors(self) -> list[dict[str, Any]]:
        """The error conditions of this pass that are new or changed."""
        c = self.conds
        out = [
            cur
            for type_, bad in _ERRORS
            if (cur := c.new.get(type_)) is not None and cur["status"] == bad and c.changed(type_)
        ]
        # What the cluster says stops the pods, told once per change of its message. Ready
        # carries it whether nothing serves (Blocked) or old pods still do (Degraded).
        ready = c.new.get("Ready")
        if ready is not None and ready["reason"] in blockers.REASONS and c.changed("Ready"):
            out.append(ready)
        return out

    def _transition_events(self, phase: Phase, passed: list[str]) -> list[tuple[str, str, str]]:
        """One Event per phase transition written and per new or changed error; phases that
        passed while the status settled are named in the Event of the one written."""
        out = list(self.events)
        out += [("Warning", cur["reason"], cur["message"]) for cur in self._new_errors()]
        c = self.conds
        if self.api_error is not None and c.changed("Ready"):
            out.append(("Warning", "ApiError", self.api_error.message))
        old = self.old_status.get("phase")
        if phase != old:
            warning = phase in ("Failed", "Degraded")
            if not (warning and out):  # a Failed transition is already told by its error
                detail = c.new.get("Ready", {}).get("message", "")
                steps = [p for p in passed if p not in (old, phase)]
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
_ERRORS = (
    ("Validated", "False"),
    ("Planned", "False"),
    ("EngineBuildFailed", "True"),
    ("InferencePoolReady", "False"),
)


def _key(k: Kind, name: str) -> str:
    """Key of an applied child: its kind, and its name too for kinds a ChatModel has several
    of (the serving and build NetworkPolicies)."""
    return f"{k.kind}/{name}" if k is NETWORK_POLICY else k.kind


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
    "ModelFiles",
    "ObservedChildren",
    "Outcome",
    "Settings",
    "redact",
    "run",
]
