"""The hardening of every pod the operator renders (every example, layout and option that touches
a pod, tests/renders.py): the root filesystem is read-only with every writer pointed at a writable
volume, no ServiceAccount token, the settings that would break restricted are refused with the
field and the fix, and the hub token reaches only the download container. Whether the API
server's Pod Security admission takes them is tested on the real one:
tests/cluster/test_pod_security_admission.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.renders import (
    BASE,
    LAYOUTS,
    _merge,
    _render,
    configurations,
    containers,
    layouts_covered,
    pod_templates,
    pods,
)

from chatmodel_operator import rbac
from chatmodel_operator.api import parse_spec
from chatmodel_operator.errors import SpecErrors
from chatmodel_operator.render.paths import RUNTIME_CACHE_MOUNT, SCRATCH_MOUNT
from chatmodel_operator.render.security import TRITON_GID, TRITON_UID, WRITABLE_PATHS

REPO = Path(__file__).resolve().parents[2]
PODS = list(pods())


def test_the_matrix_covers_every_layout_and_both_pod_kinds() -> None:
    assert layouts_covered() == set(LAYOUTS)
    kinds = {pid.split("/")[1] for pid, _ in PODS}
    assert kinds == {"Deployment", "Job"}
    assert len(configurations()) >= 25


@pytest.mark.parametrize(("pid", "obj"), PODS, ids=[pid for pid, _ in PODS])
def test_every_rendered_pod_is_read_only_and_has_no_token(pid: str, obj: dict[str, Any]) -> None:
    # Pod Security admission itself checks these pods: tests/cluster/test_pod_security_admission.
    [pod] = list(pod_templates(obj))
    assert pod["automountServiceAccountToken"] is False
    for c in containers(pod):
        assert c["securityContext"]["readOnlyRootFilesystem"] is not ("writable-root" in pid)


def _pod(spec: dict[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    rendered = _render("m", spec)
    assert rendered is not None
    obj = next(o for o in rendered.objects if o["kind"] == kind)
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("security_context", "field"),
    [
        ({"runAsUser": 0}, "spec.serving.securityContext.runAsUser"),
        ({"runAsUser": 0, "podSecurityLevel": "restricted"}, "runAsUser"),
        ({"runAsUser": -1}, "spec.serving.securityContext.runAsUser"),
        ({"podSecurityLevel": "none"}, "spec.serving.securityContext.podSecurityLevel"),
        ({"runAsNonRoot": False}, "spec.serving.securityContext.runAsNonRoot"),
    ],
)
def test_settings_that_break_restricted_are_refused_with_field_and_fix(
    security_context: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecErrors) as err:
        parse_spec(_merge(BASE, {"serving": {"securityContext": security_context}}))
    message = str(err.value)
    assert field in message and "fix:" in message


def test_a_file_source_under_a_declared_level_that_forbids_it_is_refused() -> None:
    spec = {
        "model": {"source": "file:///m"},
        "serving": {"securityContext": {"podSecurityLevel": "baseline"}},
    }
    with pytest.raises(SpecErrors, match=r"podSecurityLevel.*hostPath.*pvc://"):
        parse_spec(spec)


def test_default_ids_are_the_triton_images_user_and_custom_ids_are_used() -> None:
    pod = _pod(BASE)
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (TRITON_UID, TRITON_GID, 1000)
    assert sc["fsGroupChangePolicy"] == "OnRootMismatch" and sc["runAsNonRoot"] is True
    custom = _merge(BASE, {"serving": {"securityContext": {"runAsUser": 5000, "runAsGroup": 6}}})
    for kind in ("Deployment", "Job"):
        sc = _pod(custom, kind)["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (5000, 6, 6)


def _writable_mounts(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    kinds = {v["name"]: v for v in pod["volumes"]}
    return [
        m["mountPath"]
        for m in container["volumeMounts"]
        if not m.get("readOnly")
        and ("emptyDir" in kinds[m["name"]] or m["name"] in ("cache", "runtime-cache"))
    ]


@pytest.mark.parametrize(("pid", "obj"), PODS[:: max(1, len(PODS) // 12)], ids=lambda x: str(x))
def test_every_path_variable_points_into_a_writable_volume(pid: str, obj: dict[str, Any]) -> None:
    pod = obj["spec"]["template"]["spec"]
    vllm = any(e["name"] == "VLLM_CACHE_ROOT" for c in containers(pod) for e in c.get("env") or ())
    for c in containers(pod):
        env = {e["name"]: e.get("value") for e in c.get("env") or ()}
        writable = _writable_mounts(c, pod)
        assert SCRATCH_MOUNT in writable
        assert "/dev/shm" in writable or c["name"] != "triton"
        for p in WRITABLE_PATHS:
            if p.vllm_only and not vllm:
                assert p.env not in env
                continue
            # llmapi pods keep what they compile at start-up on the volume instead.
            value = env[p.env]
            assert value == p.value or value.startswith(RUNTIME_CACHE_MOUNT + "/")
            if value.startswith("/"):
                assert any(value == w or value.startswith(w + "/") for w in writable), (
                    c["name"],
                    p.env,
                )
        assert any(env["HF_HOME"].startswith(w + "/") for w in writable)
        if "workingDir" in c:
            assert c["workingDir"] in writable


def test_docs_list_every_writable_path_the_pods_set() -> None:
    doc = (REPO / "docs/security.md").read_text()
    for p in WRITABLE_PATHS:
        assert f"| `{p.env}`" in doc, p.env
    assert "| `HF_HOME`" in doc


def test_vllm_pods_get_vllms_cache_variables_and_others_do_not() -> None:
    vllm = _pod(_merge(BASE, {"engine": {"backend": "vllm"}}))["containers"][0]["env"]
    trt = _pod(BASE)["containers"][0]["env"]
    assert {"name": "VLLM_NO_USAGE_STATS", "value": "1"} in vllm
    assert not any(e["name"].startswith("VLLM_") for e in trt)


# --- secrets -------------------------------------------------------------------------------


def test_the_hub_token_reaches_only_the_download_container() -> None:
    spec = _merge(BASE, {"model": {"credentialsSecret": "hub-token"}})
    rendered = _render("m", spec)
    assert rendered is not None
    refs: list[tuple[str, str, Any]] = []
    for obj in rendered.objects:
        for pod in pod_templates(obj):
            assert "hub-token" not in json.dumps(pod.get("volumes") or [])
            for c in containers(pod):
                assert "envFrom" not in c
                for e in c.get("env") or ():
                    if "hub-token" in json.dumps(e):
                        refs.append((obj["kind"], c["name"], e))
        if obj["kind"] not in ("Job",):
            assert "hub-token" not in json.dumps(obj), obj["kind"]
    assert refs == [
        (
            "Job",
            "download",
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "HF_TOKEN"}},
            },
        )
    ]


def test_the_operator_cannot_read_secrets_so_no_token_reaches_status_events_or_logs() -> None:
    # The operator only names the Secret in a secretKeyRef; the kubelet reads it. Without a
    # rule that lets it read Secrets, no token can reach the status, an Event or a log line.
    for verb in ("get", "list", "watch"):
        assert not rbac.allows("", "secrets", verb)
    assert all(rule["resources"] != ["secrets"] for rule in rbac.rules())
