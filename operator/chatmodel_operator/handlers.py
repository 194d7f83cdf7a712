"""Every kopf handler of the operator: wiring only (STYLE 2).

Create, update and resume call ``reconcile.run``, and so does the resync timer, which runs in
``scheduling.Scheduler`` (its docstring says why it is not a ``kopf.timer``). Children are
read from kopf indexes fed by watches (so a pass makes no GET requests), and a watch event
that changes a Job or Deployment a ChatModel waits on starts a pass through the scheduler.

``build_registry`` returns a fresh registry, so a test or a second operator in one process
gets its own handlers and settings instead of kopf's global registry.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import kopf

from chatmodel_operator import metrics, reconcile, scheduling
from chatmodel_operator.adapters import kube
from chatmodel_operator.adapters.kube import (
    CHILD_KINDS,
    INFERENCE_POOL,
    OPTIONAL_KINDS,
    POD,
    WATCHED_KINDS,
    Kind,
    Observed,
)
from chatmodel_operator.api.spec import GROUP, KIND, PLURAL, VERSION

if TYPE_CHECKING:
    from kubernetes_asyncio.client import Configuration

log = logging.getLogger(__name__)

OURS = {kube.MANAGED_BY_LABEL: kube.FIELD_MANAGER}
PEERING_NAME = "chatmodel-operator"


@dataclass
class OperatorConfig:
    resync_seconds: float = 300.0
    clusterwide: bool = True
    settings: reconcile.Settings = field(default_factory=reconcile.Settings)
    retry: kube.RetryPolicy = field(default_factory=kube.RetryPolicy)
    workers: int = 8
    peering_poll_seconds: float = 5.0  # how soon a standby replica notices its role changed
    kopf_workers: int = 100  # kopf's per-object event workers at once (see configure)
    # Where the credentials come from (in-cluster, else the kubeconfig); tests may pass another.
    login: Callable[[], Awaitable[Configuration]] = kube.load_credentials
    model_files: Callable[[str], reconcile.ModelFiles] | None = None
    build_repository: Callable[..., Mapping[Any, str]] | None = None


class IndexedChildren:
    """``reconcile.ObservedChildren`` over the kopf indexes (one per child kind)."""

    def __init__(self, indexes: Mapping[str, kopf.Index[Any, Observed]]) -> None:
        self.indexes = indexes

    def get(self, kind: Kind, namespace: str, name: str) -> Observed | None:
        store = self.indexes[kind.plural].get(("n", namespace, name))
        return next(iter(store), None) if store else None

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> list[Observed]:
        return list(self.indexes[kind.plural].get(("o", namespace, uid)) or ())

    def pods(
        self, namespace: str, *, job: str | None = None, instance: str | None = None
    ) -> list[Observed]:
        key = ("job", namespace, job) if job is not None else ("server", namespace, instance)
        return list(self.indexes[POD.plural].get(key) or ())


def _index_id(k: Kind) -> str:
    return f"{k.plural}_index"


class GenerationDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled state", read from ``status.observedGeneration``.

    kopf's own storages copy the whole spec into an annotation after every create and update:
    one more write per change, repeating what ``observedGeneration`` (which every pass writes)
    already says. Here the spec counts as handled when the status describes its generation;
    a pass that fails before writing status leaves it unhandled, so kopf retries it. The
    update handler ignores kopf's diff (the reconcile is level-triggered), so the essence
    returned for an unhandled generation only has to differ from the current one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[Any, kopf.BodyEssence] | None = None

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        """kopf's essence, built once per object version (kopf asks for it twice per event)
        and without deep-copying the status first only to drop it (ours is the big part)."""
        if body.get("kind") != KIND:
            # Children have no change handlers, only indexes and event handlers: their
            # essence is never compared, and copying a Deployment per event is not free.
            return cast(kopf.BodyEssence, {})
        meta = body.get("metadata", {})
        key = (meta.get("uid"), meta.get("resourceVersion"), bool(extra_fields))
        if self._last is not None and self._last[0] == key and key[1] is not None:
            return self._last[1]
        lean = kopf.Body({k: body[k] for k in body if k != "status"})  # type: ignore[arg-type]
        essence = super().build(body=lean if not extra_fields else body, extra_fields=extra_fields)
        self._last = (key, essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        observed = body.get("status", {}).get("observedGeneration")
        if observed is None:
            return None  # never handled: kopf calls the create handler
        essence = self.build(body=body)
        if observed != body.get("metadata", {}).get("generation"):
            essence = {**essence, "spec": {"observedGeneration": observed}}  # type: ignore[typeddict-unknown-key]
        return essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to store: the pass wrote observedGeneration with its status."""


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage, minus a deep copy of every essence it is shown:
    the copy only protects what it removes, and there is usually nothing to remove."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        annotations = essence.get("metadata", {}).get("annotations", {})
        if not any(key.startswith(f"{self.prefix}/") for key in annotations):
            return essence
        return super().clear(essence=essence)


def configure(settings: kopf.OperatorSettings, *, workers: int = 100) -> None:
    """kopf settings: our field manager and annotations, no kopf Events, quick API retries."""
    # Retry progress in annotations: the CRD's status schema has no room for kopf's fields
    # (the API server would prune them). A "kopf." prefix, because with any other kopf adds a
    # "<prefix>/kopf-managed" marker annotation on the first pass: a write for nothing.
    settings.persistence.progress_storage = ProgressAnnotations(prefix=f"kopf.{GROUP}")
    settings.persistence.diffbase_storage = GenerationDiffBase()
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # never added: no deletion handlers
    # reconcile posts its own Events (one per transition); kopf's per-handler ones are noise.
    settings.posting.enabled = False
    settings.networking.error_backoffs = (0.2, 0.5, 1, 2, 5, 10)
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300  # watches are renewed every few minutes
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 4  # for sync handlers; the heavy ones are async
    # kopf runs one worker per object with events, without limit by default: 500 ChatModels
    # created at once and their thousands of children all decoding events together doubled
    # the operator's memory. 100 workers that leave soon after their object goes quiet keep
    # it under 160 MB at 500 ChatModels and finish as fast (bench/reconcile.py).
    settings.queueing.worker_limit = workers
    settings.queueing.idle_timeout = 0.5


def build_registry(config: OperatorConfig | None = None) -> kopf.OperatorRegistry:
    cfg = config or OperatorConfig()
    registry = kopf.OperatorRegistry()
    cm = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    async def startup(
        settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **kw: Any
    ) -> None:
        configure(settings, workers=cfg.kopf_workers)
        configuration = await cfg.login()
        client = kube.KubeClient(configuration, retry=cfg.retry, relogin=cfg.login)
        info = await connection_info(configuration)
        await _choose_peering(client, settings, logger, clusterwide=cfg.clusterwide)
        indexes = {k.plural: kw[_index_id(k)] for k in (*CHILD_KINDS, *WATCHED_KINDS)}
        ctx = reconcile.Context(
            client=client, children=IndexedChildren(indexes), settings=cfg.settings
        )
        if cfg.model_files is not None:
            ctx.model_files = cfg.model_files
        ctx.build_repository = cfg.build_repository
        ctx.served = {k for k in OPTIONAL_KINDS if await client.served(k.api_version, k.plural)}
        logger.info(
            "optional APIs served: %s",
            ", ".join(sorted(k.kind for k in ctx.served)) or "none (they are picked up later)",
        )
        ctx.latest = _chatmodel_lookup(kw["chatmodels_index"])
        # The resync timer: every ChatModel through reconcile.run once per resync period.
        ctx.scheduler = scheduling.Scheduler(
            ctx,
            ctx.latest,
            reconcile.run,
            workers=cfg.workers,
            resync_seconds=cfg.resync_seconds,
            keys=lambda: list(kw["chatmodels_index"]),
        )
        ctx.scheduler.start()
        memo.ctx, memo.info = ctx, info
        if not settings.peering.standalone:
            # kopf pauses its handlers on a standby replica; the scheduler must pause too.
            peering = kube.CLUSTER_KOPF_PEERING if cfg.clusterwide else kube.KOPF_PEERING
            ctx.scheduler.follow_peers(
                peering, PEERING_NAME, settings.peering.priority, every=cfg.peering_poll_seconds
            )

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        ctx: reconcile.Context | None = getattr(memo, "ctx", None)
        if ctx is not None and ctx.scheduler is not None:
            await ctx.scheduler.stop()
        if ctx is not None:
            await ctx.client.close()

    @kopf.on.login(registry=registry)
    async def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        # The same credentials our client uses; fresh ones after kopf saw a 401.
        info: kopf.ConnectionInfo | None = getattr(memo, "info", None)
        memo.info = None
        return info or await connection_info(await cfg.login())

    @kopf.index(*cm, registry=registry, id="chatmodels_index")
    async def chatmodels_index(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): body}

    for k in CHILD_KINDS:
        kopf.index(
            k.group, k.version, k.plural, labels=OURS, registry=registry, id=_index_id(k), param=k
        )(_child_index)

    kopf.index(
        POD.group, POD.version, POD.plural, labels=OURS, registry=registry, id=_index_id(POD)
    )(_pod_index)

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", registry=registry)
    async def crd_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        # An optional API installed (or removed) after the start: use it from the next pass.
        ctx = getattr(memo, "ctx", None)
        if ctx is None:
            return
        kind = _optional_kind(body)
        if kind is None:
            return
        established = type != "DELETED" and _established(body)
        if established == (kind in ctx.served):
            return
        (ctx.served.add if established else ctx.served.discard)(kind)
        logger_ = logging.getLogger(__name__)
        logger_.info("%s API %s", kind.kind, "now served" if established else "removed")
        if ctx.scheduler is not None:
            ctx.scheduler.poke_all()

    @kopf.on.event(
        INFERENCE_POOL.group,
        INFERENCE_POOL.version,
        INFERENCE_POOL.plural,
        labels=OURS,
        registry=registry,
    )
    async def inference_pool_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        # A gateway wrote the pool's status (Accepted, ResolvedRefs): InferencePoolReady.
        ctx = getattr(memo, "ctx", None)
        if ctx is None:
            return
        obs = _observed(type, body)
        if ctx.changed(obs) and ctx.scheduler is not None and obs.instance:
            ctx.scheduler.poke(obs.namespace, obs.instance)
        if type == "DELETED":
            ctx.gone(obs)

    @kopf.on.event(POD.group, POD.version, POD.plural, labels=OURS, registry=registry)
    async def pod_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        ctx = getattr(memo, "ctx", None)
        if ctx is None:
            return
        obs = _observed(type, body)
        if type == "DELETED":
            ctx.gone(obs)
            return
        if not ctx.changed(obs) or ctx.scheduler is None or obs.pod is None:
            return
        if obs.pod.job is not None:
            ctx.scheduler.poke_waiters(obs.namespace, obs.engine_key)
        elif obs.instance:
            ctx.scheduler.poke(obs.namespace, obs.instance)

    @kopf.on.create(*cm, registry=registry)
    async def create(body: kopf.Body, memo: Any, **_: Any) -> None:
        await reconcile.run(body, memo.ctx, cause="create")

    @kopf.on.update(*cm, registry=registry)
    async def update(body: kopf.Body, memo: Any, **_: Any) -> None:
        await reconcile.run(body, memo.ctx, cause="update")

    @kopf.on.resume(*cm, registry=registry)
    async def resume(body: kopf.Body, memo: Any, **_: Any) -> None:
        await reconcile.run(body, memo.ctx, cause="resume")

    @kopf.on.event(*cm, registry=registry)
    async def chatmodel_gone(
        type: str, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        if type == "DELETED" and getattr(memo, "ctx", None) is not None:
            memo.ctx.forget(namespace or "", name)
            metrics.forget_chatmodel(namespace or "", name)

    @kopf.on.event("batch", "v1", "jobs", labels=OURS, registry=registry)
    async def job_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        ctx, obs = memo.ctx, _observed(type, body)
        if ctx.changed(obs) and ctx.scheduler is not None:
            ctx.scheduler.poke_waiters(obs.namespace, obs.engine_key)
        if type == "DELETED":
            ctx.gone(obs)

    @kopf.on.event("apps", "v1", "deployments", labels=OURS, registry=registry)
    async def deployment_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        ctx, obs = memo.ctx, _observed(type, body)
        if ctx.changed(obs) and ctx.scheduler is not None and obs.instance:
            # A deletion is often the garbage collector following its deleted ChatModel,
            # whose own event may come a moment later on another watch: let it arrive first.
            ctx.scheduler.poke(obs.namespace, obs.instance, delay=1.0 if type == "DELETED" else 0)
        if type == "DELETED":
            ctx.gone(obs)

    return registry


async def _child_index(body: kopf.Body, memo: Any, **_: Any) -> dict[Any, Observed]:
    obs = kube.summarize(body)
    keys: list[Any] = [("n", obs.namespace, obs.name)]
    keys += [("o", obs.namespace, uid) for uid in obs.owners]
    return dict.fromkeys(keys, obs)


async def _pod_index(body: kopf.Body, **_: Any) -> dict[Any, Observed]:
    obs = kube.summarize(body)
    if obs.pod is None:
        return {}
    if obs.pod.job is not None:
        return {("job", obs.namespace, obs.pod.job): obs}
    if obs.instance and obs.pod.component == "server":
        return {("server", obs.namespace, obs.instance): obs}
    return {}


def _optional_kind(crd: Mapping[str, Any]) -> Kind | None:
    spec = crd.get("spec") or {}
    group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
    return next((k for k in OPTIONAL_KINDS if (k.group, k.plural) == (group, plural)), None)


def _established(crd: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or ()
    )


def _observed(type_: str, body: kopf.Body) -> Observed:
    obs = kube.summarize(body)
    # A deleted child reads as absent: the same digest the pass records for a missing one.
    return (
        Observed(
            **{
                **obs.__dict__,
                "resource_version": None,
                "job": None,
                "deployment": None,
                "pod": None,
                "pool": None,
            }
        )
        if type_ == "DELETED"
        else obs
    )


async def connection_info(configuration: Configuration) -> kopf.ConnectionInfo:
    """kopf's watches log in as our client does: the same server, CA, client certificate and
    (freshly refreshed) token that ``kubernetes_asyncio`` loaded, so both always act as one
    identity. Its loaders write inline kubeconfig data to files, so paths are enough. The
    mapping is kopf's ``login_via_async_client``'s, from our Configuration rather than the
    library's process-wide default (which reads ``$KUBECONFIG`` once, at import)."""
    auth = await kube.authorization(configuration)
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme=auth[0] if auth else None,
        token=auth[1] if auth else None,
        proxy_url=configuration.proxy,
    )


def _chatmodel_lookup(index: kopf.Index[Any, kopf.Body]) -> Callable[[str, str], kopf.Body | None]:
    def lookup(namespace: str, name: str) -> kopf.Body | None:
        store = index.get((namespace, name))
        return next(iter(store), None) if store else None

    return lookup


async def _choose_peering(
    client: kube.KubeClient,
    settings: kopf.OperatorSettings,
    logger: kopf.Logger,
    *,
    clusterwide: bool,
) -> None:
    """Elect one active replica when kopf's peering is set up (the chart does it for more than
    one replica), else run standalone and say so once: a second replica would then act on
    every ChatModel too."""
    if clusterwide:
        kind = kube.CLUSTER_KOPF_PEERING
        # The CRD may be installed for every release; the object is what says "elect".
        joined = await client.served(kind.api_version, kind.plural) and (
            await client.get(kind, None, PEERING_NAME) is not None
        )
    else:
        kind = kube.KOPF_PEERING
        joined = await client.served(kind.api_version, kind.plural)
    if joined:
        settings.peering.standalone = False
        settings.peering.name = PEERING_NAME
        settings.peering.priority = random.randint(1, 1_000_000)  # equal priorities pause all
        logger.info(
            "kopf peering %r (%s) found: one replica is elected to act", PEERING_NAME, kind.plural
        )
    else:
        settings.peering.standalone = True
        logger.warning(
            "kopf peering %r (%s.kopf.dev) not found: running standalone; run one replica, or "
            "install kopf's peering CRD and object to elect one",
            PEERING_NAME,
            kind.plural,
        )
