"""Every pod the operator renders passes the Pod Security Standard restricted (every example,
layout and option that touches a pod, tests/renders.py); the opt-outs break exactly what they
say; the root filesystem is read-only with every writer pointed at a writable volume; the hub
token reaches only the download container."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from tests.pod_security import BASELINE, containers, pod_templates, violations
from tests.renders import LAYOUTS, _merge, _render, configurations, layouts_covered, pods

from chatmodel_operator import rbac
from chatmodel_operator.api import parse_spec
from chatmodel_operator.errors import SpecErrors
from chatmodel_operator.render.paths import RUNTIME_CACHE_MOUNT, SCRATCH_MOUNT
from chatmodel_operator.render.security import TRITON_GID, TRITON_UID, WRITABLE_PATHS

REPO = Path(__file__).resolve().parents[2]
PODS = list(pods())
BASE = {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}


def test_the_matrix_covers_every_layout_and_both_pod_kinds() -> None:
    assert layouts_covered() == set(LAYOUTS)
    kinds = {pid.split("/")[1] for pid, _ in PODS}
    assert kinds == {"Deployment", "Job"}
    assert len(configurations()) >= 25


@pytest.mark.parametrize(("pid", "obj"), PODS, ids=[pid for pid, _ in PODS])
def test_every_rendered_pod_passes_restricted(pid: str, obj: dict[str, Any]) -> None:
    [(pod, annotations)] = list(pod_templates(obj))
    assert violations(pod, annotations, "restricted") == {}
    assert pod["automountServiceAccountToken"] is False
    for c in containers(pod):
        assert c["securityContext"]["readOnlyRootFilesystem"] is not ("writable-root" in pid)


def _pod(spec: dict[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    rendered = _render("m", spec)
    assert rendered is not None
    obj = next(o for o in rendered.objects if o["kind"] == kind)
    return obj["spec"]["template"]["spec"]


def test_root_opt_out_breaks_exactly_the_non_root_controls() -> None:
    spec = _merge(
        BASE, {"serving": {"securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"}}}
    )
    for kind in ("Deployment", "Job"):
        pod = _pod(spec, kind)
        assert set(violations(pod, level="restricted")) == {
            "Running as Non-root",
            "Running as Non-root user",
        }
        assert violations(pod, level="baseline") == {}


def test_file_source_breaks_only_the_host_path_control() -> None:
    # file:// is mounted from the node: the one thing it costs is the hostPath volume.
    spec = _merge(BASE, {"model": {"source": "file:///models/yi", "family": "yi-chat"}})
    for kind in ("Deployment", "Job"):
        pod = _pod(spec, kind)
        assert set(violations(pod, level="restricted")) == {"HostPath Volumes", "Volume Types"}


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
        for pod, _ in pod_templates(obj):
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


# --- the checker itself: each control fires on the one thing it forbids --------------------

_C = "containers"
MUTATIONS: list[tuple[str, str, Any]] = [
    ("HostProcess", "securityContext.windowsOptions", {"hostProcess": True}),
    ("Host Namespaces", "hostPID", True),
    ("Privileged Containers", f"{_C}.securityContext.privileged", True),
    ("Capabilities (baseline)", f"{_C}.securityContext.capabilities.add", ["SYS_ADMIN"]),
    ("HostPath Volumes", "volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
    ("Host Ports", f"{_C}.ports", [{"containerPort": 80, "hostPort": 80}]),
    ("AppArmor", f"{_C}.securityContext.appArmorProfile", {"type": "Unconfined"}),
    ("SELinux", "securityContext.seLinuxOptions", {"type": "spc_t"}),
    ("/proc Mount Type", f"{_C}.securityContext.procMount", "Unmasked"),
    ("Seccomp (baseline)", f"{_C}.securityContext.seccompProfile", {"type": "Unconfined"}),
    ("Sysctls", "securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
    ("Volume Types", "volumes", [{"name": "n", "nfs": {"server": "s", "path": "/"}}]),
    ("Privilege Escalation", f"{_C}.securityContext.allowPrivilegeEscalation", True),
    ("Running as Non-root", f"{_C}.securityContext.runAsNonRoot", False),
    ("Running as Non-root user", f"{_C}.securityContext.runAsUser", 0),
    ("Capabilities (restricted)", f"{_C}.securityContext.capabilities.drop", ["NET_RAW"]),
]


@pytest.mark.parametrize(("control", "path", "value"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_control_catches_what_it_forbids(control: str, path: str, value: Any) -> None:
    pod = copy.deepcopy(_pod(BASE))
    node: Any = pod
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key][0] if key == _C else node.setdefault(key, {})
    node[leaf] = value
    found = violations(pod, level="restricted")
    assert control in found, found
    if control in BASELINE:
        assert control in violations(pod, level="baseline")
