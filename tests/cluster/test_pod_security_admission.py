"""Every pod template the operator renders (every example, layout and option that touches a pod,
tests/renders.py) is admitted by the API server's own Pod Security admission at `restricted`,
and the opt-outs break exactly the controls they say: server-side dry runs, so nothing is
scheduled and the whole matrix takes seconds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tests.cluster.admin import PODS as PODS_RES
from tests.cluster.admin import Admin
from tests.renders import BASE, _merge, _render, pods

SERVICE_ACCOUNTS = ("", "v1", "serviceaccounts")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
BASELINE = {"pod-security.kubernetes.io/enforce": "baseline"}
PODS = list(pods())


def _as_pod(obj: dict[str, Any], name: str) -> dict[str, Any]:
    template = obj["spec"]["template"]
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": template["spec"],
    }


def _dry_run(admin: Admin, ns: str, obj: dict[str, Any], name: str = "p") -> str | None:
    """None when admission takes the pod, else its refusal."""
    pod = _as_pod(obj, name)
    account = pod["spec"].get("serviceAccountName")
    if account and admin.get(SERVICE_ACCOUNTS, ns, account) is None:
        admin.create(SERVICE_ACCOUNTS, ns, {"metadata": {"name": account}})
    refused = admin.dry_run_create(PODS_RES, ns, pod)
    return None if refused is None else refused[1]


def _controls(refusal: str | None) -> set[str]:
    """The controls a PodSecurity refusal names: 'violates PodSecurity "restricted:latest":
    allowPrivilegeEscalation != false (...), runAsNonRoot != true (...)'."""
    assert refusal is not None and "violates PodSecurity" in refusal, refusal
    listed = refusal.split('":', 1)[1]
    return {c.strip() for c in re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)", "", listed).split(",")}


def _object(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    rendered = _render("m", spec)
    assert rendered is not None
    return next(o for o in rendered.objects if o["kind"] == kind)


def test_the_matrix_has_both_pod_kinds() -> None:
    assert {pid.split("/")[1] for pid, _ in PODS} == {"Deployment", "Job"}


@pytest.mark.namespace_labels(**RESTRICTED)
def test_every_rendered_pod_is_admitted_under_restricted(admin: Admin, ns: str) -> None:
    refused = {pid: why for pid, obj in PODS if (why := _dry_run(admin, ns, obj)) is not None}
    assert refused == {}
    # The namespace enforces: a bare privileged pod is refused there, so the above means something.
    bare = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    assert "runAsNonRoot != true" in _controls(_dry_run(admin, ns, bare))


@pytest.mark.namespace_labels(**RESTRICTED)
def test_the_root_opt_out_breaks_exactly_the_non_root_controls(admin: Admin, ns: str) -> None:
    spec = _merge(
        BASE, {"serving": {"securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"}}}
    )
    for kind in ("Deployment", "Job"):
        controls = _controls(_dry_run(admin, ns, _object(spec, kind)))
        assert {c.split(" ")[0] for c in controls} == {"runAsNonRoot", "runAsUser=0"}, controls


@pytest.mark.namespace_labels(**BASELINE)
def test_the_root_opt_out_is_admitted_at_the_level_it_declares(admin: Admin, ns: str) -> None:
    spec = _merge(
        BASE, {"serving": {"securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"}}}
    )
    for kind in ("Deployment", "Job"):
        assert _dry_run(admin, ns, _object(spec, kind)) is None


@pytest.mark.namespace_labels(**RESTRICTED)
def test_a_file_source_breaks_only_the_volume_type_control(admin: Admin, ns: str) -> None:
    # file:// is mounted from the node: the one thing it costs is the hostPath volume. At
    # restricted, admission names it once, as a volume type (its restricted volume check
    # overrides baseline's hostPath check).
    spec = _merge(BASE, {"model": {"source": "file:///models/yi", "family": "yi-chat"}})
    for kind in ("Deployment", "Job"):
        refusal = _dry_run(admin, ns, _object(spec, kind))
        assert _controls(refusal) == {"restricted volume types"}, refusal
        assert 'restricted volume type "hostPath"' in str(refusal)


@pytest.mark.namespace_labels(**BASELINE)
def test_a_file_source_is_refused_at_baseline_too(admin: Admin, ns: str) -> None:
    # Why the spec refuses file:// under a declared level of baseline or restricted.
    spec = _merge(BASE, {"model": {"source": "file:///models/yi", "family": "yi-chat"}})
    assert _controls(_dry_run(admin, ns, _object(spec, "Deployment"))) == {"hostPath volumes"}
