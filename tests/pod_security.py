"""The Pod Security Standards (baseline and restricted) as a checker of pod specs, written from
the published standard, https://kubernetes.io/docs/concepts/security/pod-security-standards/
(policy version latest, Kubernetes 1.33): one function per control, named as the page names it.

``violations(pod_spec, annotations, level)`` returns one line per broken control, so a test can
assert there are none, or exactly the ones an opt-out asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

Pod = Mapping[str, Any]

# Baseline, "Capabilities": what containers may add beyond the runtime's defaults.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Baseline, "SELinux": the allowed types (empty, or one of these); user and role must be unset.
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
# Baseline, "Sysctls": the safe set.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# Restricted, "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_VOLUME_META = frozenset({"name"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def containers(pod: Pod) -> Iterator[Mapping[str, Any]]:
    """Every container the standard covers: containers, initContainers, ephemeralContainers."""
    for key in ("containers", "initContainers", "ephemeralContainers"):
        yield from pod.get(key) or ()


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


# --- baseline ------------------------------------------------------------------------------


def host_process(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = []
    if (_sc(pod).get("windowsOptions") or {}).get("hostProcess"):
        found.append("pod windowsOptions.hostProcess")
    for c in containers(pod):
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{c['name']}: windowsOptions.hostProcess")
    return found


def host_namespaces(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [field for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]


def privileged_containers(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [f"{c['name']}: privileged" for c in containers(pod) if _sc(c).get("privileged")]


def capabilities_baseline(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [
        f"{c['name']}: adds {cap}"
        for c in containers(pod)
        for cap in (_sc(c).get("capabilities") or {}).get("add") or ()
        if cap not in BASELINE_CAPABILITIES
    ]


def host_path_volumes(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [f"volume {v['name']}: hostPath" for v in pod.get("volumes") or () if "hostPath" in v]


def host_ports(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [
        f"{c['name']}: hostPort {p['hostPort']}"
        for c in containers(pod)
        for p in c.get("ports") or ()
        if p.get("hostPort")
    ]


def apparmor(pod: Pod, annotations: Mapping[str, str]) -> list[str]:
    found = [
        f"annotation {k}={v}"
        for k, v in annotations.items()
        if k.startswith(APPARMOR_ANNOTATION)
        and v != "runtime/default"
        and not v.startswith("localhost/")
    ]
    profiles = [("pod", _sc(pod))] + [(c["name"], _sc(c)) for c in containers(pod)]
    for who, sc in profiles:
        kind = (sc.get("appArmorProfile") or {}).get("type")
        if kind not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{who}: appArmorProfile {kind}")
    return found


def selinux(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = []
    for who, sc in [("pod", _sc(pod))] + [(c["name"], _sc(c)) for c in containers(pod)]:
        opts = sc.get("seLinuxOptions") or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            found.append(f"{who}: seLinuxOptions.type {opts['type']}")
        found += [f"{who}: seLinuxOptions.{k}" for k in ("user", "role") if opts.get(k)]
    return found


def proc_mount(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [
        f"{c['name']}: procMount {_sc(c)['procMount']}"
        for c in containers(pod)
        if _sc(c).get("procMount", "Default") != "Default"
    ]


def seccomp_baseline(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = []
    for who, sc in [("pod", _sc(pod))] + [(c["name"], _sc(c)) for c in containers(pod)]:
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{who}: seccompProfile Unconfined")
    return found


def sysctls(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [
        f"sysctl {s['name']}"
        for s in _sc(pod).get("sysctls") or ()
        if s["name"] not in SAFE_SYSCTLS
    ]


# --- restricted ----------------------------------------------------------------------------


def volume_types(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = []
    for v in pod.get("volumes") or ():
        sources = set(v) - _VOLUME_META
        found += [f"volume {v['name']}: {s}" for s in sorted(sources - RESTRICTED_VOLUMES)]
    return found


def privilege_escalation(pod: Pod, _: Mapping[str, str]) -> list[str]:
    return [
        f"{c['name']}: allowPrivilegeEscalation is not false"
        for c in containers(pod)
        if _sc(c).get("allowPrivilegeEscalation") is not False
    ]


def running_as_non_root(pod: Pod, _: Mapping[str, str]) -> list[str]:
    """runAsNonRoot true on the pod, or on every container; no container may say false."""
    pod_says = _sc(pod).get("runAsNonRoot")
    found = []
    for c in containers(pod):
        says = _sc(c).get("runAsNonRoot")
        if says is False or (says is None and pod_says is not True):
            found.append(f"{c['name']}: runAsNonRoot is not true")
    if pod_says is False:
        found.append("pod: runAsNonRoot false")
    return found


def running_as_non_root_user(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = ["pod: runAsUser 0"] if _sc(pod).get("runAsUser") == 0 else []
    return found + [
        f"{c['name']}: runAsUser 0" for c in containers(pod) if _sc(c).get("runAsUser") == 0
    ]


def seccomp_restricted(pod: Pod, _: Mapping[str, str]) -> list[str]:
    """RuntimeDefault or Localhost on the pod, or on every container; never Unconfined."""
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = (_sc(pod).get("seccompProfile") or {}).get("type")
    found = []
    for c in containers(pod):
        kind = (_sc(c).get("seccompProfile") or {}).get("type")
        if kind is not None and kind not in allowed:
            found.append(f"{c['name']}: seccompProfile {kind}")
        elif kind is None and pod_type not in allowed:
            found.append(f"{c['name']}: no RuntimeDefault or Localhost seccomp profile")
    return found


def capabilities_restricted(pod: Pod, _: Mapping[str, str]) -> list[str]:
    found = []
    for c in containers(pod):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            found.append(f"{c['name']}: does not drop ALL capabilities")
        found += [
            f"{c['name']}: adds {cap}" for cap in caps.get("add") or () if cap != "NET_BIND_SERVICE"
        ]
    return found


Control = Callable[[Pod, Mapping[str, str]], list[str]]
BASELINE: dict[str, Control] = {
    "HostProcess": host_process,
    "Host Namespaces": host_namespaces,
    "Privileged Containers": privileged_containers,
    "Capabilities (baseline)": capabilities_baseline,
    "HostPath Volumes": host_path_volumes,
    "Host Ports": host_ports,
    "AppArmor": apparmor,
    "SELinux": selinux,
    "/proc Mount Type": proc_mount,
    "Seccomp (baseline)": seccomp_baseline,
    "Sysctls": sysctls,
}
RESTRICTED: dict[str, Control] = {
    **BASELINE,
    "Volume Types": volume_types,
    "Privilege Escalation": privilege_escalation,
    "Running as Non-root": running_as_non_root,
    "Running as Non-root user": running_as_non_root_user,
    "Seccomp (restricted)": seccomp_restricted,
    "Capabilities (restricted)": capabilities_restricted,
}
LEVELS = {"baseline": BASELINE, "restricted": RESTRICTED}


def violations(
    pod: Pod, annotations: Mapping[str, str] | None = None, level: str = "restricted"
) -> dict[str, list[str]]:
    """Control name -> what breaks it, for the controls of ``level`` that ``pod`` breaks."""
    out = {}
    for name, control in LEVELS[level].items():
        found = control(pod, annotations or {})
        if found:
            out[name] = found
    return out


def pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[Pod, Mapping[str, str]]]:
    """The pod spec (and its annotations) of a Pod, Deployment, Job or anything with a
    template; nothing for other kinds."""
    if obj.get("kind") == "Pod":
        yield obj["spec"], (obj.get("metadata") or {}).get("annotations") or {}
        return
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, Mapping) and "spec" in template:
        yield template["spec"], (template.get("metadata") or {}).get("annotations") or {}
