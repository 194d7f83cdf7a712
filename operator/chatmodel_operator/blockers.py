"""Why the pods a ChatModel needs do not run, in the cluster's own words (pure).

The cluster says it where a ChatModel's owner does not look: the scheduler on the pod
(``PodScheduled=False``), admission in the ReplicaSet's ``ReplicaFailure`` condition (copied
to the Deployment) or in the Job controller's ``FailedCreate`` Event, the volume controller by
leaving a claim ``Pending``. These functions turn those observations into one reason and one
message for the ChatModel's conditions, with the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chatmodel_operator.adapters.kube import DeploymentState, Observed

# The reasons a condition carries when the cluster, not the spec, stops the pods.
PODS_FORBIDDEN = "PodsForbidden"
PODS_NOT_CREATED = "PodsNotCreated"
PODS_UNSCHEDULABLE = "PodsUnschedulable"
BUILD_PODS_FORBIDDEN = "BuildPodsForbidden"
BUILD_PODS_NOT_CREATED = "BuildPodsNotCreated"
BUILD_PODS_UNSCHEDULABLE = "BuildPodsUnschedulable"
CACHE_UNBOUND = "CacheUnbound"
SERVING_REASONS = frozenset({PODS_FORBIDDEN, PODS_NOT_CREATED, PODS_UNSCHEDULABLE})
BUILD_REASONS = frozenset(
    {BUILD_PODS_FORBIDDEN, BUILD_PODS_NOT_CREATED, BUILD_PODS_UNSCHEDULABLE, CACHE_UNBOUND}
)
REASONS = SERVING_REASONS | BUILD_REASONS


@dataclass(frozen=True)
class Blocker:
    reason: str
    message: str


def _forbidden(message: str) -> bool:
    return "forbidden" in message.lower()


def _not_created_fix(message: str, what: str) -> str:
    if "PodSecurity" in message:
        return (
            f"fix: the namespace's Pod Security level refuses the {what} pods; label the "
            "namespace for a level they meet, or remove the opt-out from "
            "spec.serving.securityContext"
        )
    if "quota" in message.lower():
        return "fix: raise the namespace's ResourceQuota or lower what the ChatModel asks for"
    return "fix: see the message; the pods are created as soon as the cluster accepts them"


def _unschedulable_fix(product: str | None) -> str:
    where = f" labelled nvidia.com/gpu.product={product}" if product else ""
    return (
        f"fix: add nodes{where} with free nvidia.com/gpu, or change spec.resources.gpu "
        "(kubectl describe pod names each node's reason)"
    )


def _first_unschedulable(pods: Iterable[Observed]) -> str | None:
    for p in pods:
        if p.pod is not None and p.pod.unschedulable:
            return p.pod.unschedulable
    return None


def build_blocker(
    *,
    job_name: str,
    pods: Iterable[Observed],
    claim: Observed | None,
    failed_create: str | None,
    gpu_product: str | None,
) -> Blocker | None:
    """Why the build Job's pod does not run, or None when nothing is known to stop it."""
    if failed_create:
        forbidden = _forbidden(failed_create)
        return Blocker(
            BUILD_PODS_FORBIDDEN if forbidden else BUILD_PODS_NOT_CREATED,
            f"Job {job_name} cannot create its pod: {failed_create}; "
            + _not_created_fix(failed_create, "build"),
        )
    unschedulable = _first_unschedulable(pods)
    if unschedulable is None:
        return None
    if claim is not None and claim.claim_phase == "Pending":
        return Blocker(
            CACHE_UNBOUND,
            f"the cache PersistentVolumeClaim {claim.name} is Pending, so the build pod of Job "
            f"{job_name} cannot start: {unschedulable}; fix: set spec.cache.storageClassName "
            "to a StorageClass that provisions volumes, or create a PersistentVolume the "
            "claim can bind",
        )
    return Blocker(
        BUILD_PODS_UNSCHEDULABLE,
        f"the build pod of Job {job_name} cannot be scheduled: {unschedulable}; "
        + _unschedulable_fix(gpu_product),
    )


def serving_blocker(
    *,
    deployment_name: str,
    deployment: DeploymentState | None,
    pods: Iterable[Observed],
    gpu_product: str | None,
) -> Blocker | None:
    """Why serving pods are missing, or None when nothing is known to stop them."""
    if deployment is not None and deployment.replica_failure:
        message = deployment.replica_failure
        return Blocker(
            PODS_FORBIDDEN if _forbidden(message) else PODS_NOT_CREATED,
            f"Deployment {deployment_name} cannot create pods: {message}; "
            + _not_created_fix(message, "serving"),
        )
    unschedulable = _first_unschedulable(pods)
    if unschedulable is None:
        return None
    return Blocker(
        PODS_UNSCHEDULABLE,
        f"pods of Deployment {deployment_name} cannot be scheduled: {unschedulable}; "
        + _unschedulable_fix(gpu_product),
    )
