"""Least privilege for every pod the operator creates (pure): who the containers run as, what
they may do, and where they may write.

Every pod passes the Pod Security Standard ``restricted`` unless the spec opts out
(``spec.serving.securityContext.podSecurityLevel``), and the root filesystem is read-only: every
path the servers and their libraries write to is the ``scratch`` emptyDir (HOME, TMPDIR, the
compile and kernel caches), the cache volume, or ``/dev/shm``. ``WRITABLE_PATHS`` lists each one
with the documentation that says where the program writes; docs/security.md prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatmodel_operator.api.spec import SecurityContextSpec
from chatmodel_operator.render.paths import SCRATCH_MOUNT

# NVIDIA's Triton images (tritonserver:*-trtllm-python-py3, *-vllm-python-py3, *-py3) create a
# user `triton-server` and the image build fails unless its uid and gid are both 1000: see
# triton-inference-server/server, build.py, the Dockerfile text of create_dockerfile_linux
# ("Create a user that can be used to run triton as non-root", commit e1db8a6, 2026-08). The
# server's files stay owned by root and readable by others, so any uid can run them; 1000 is
# the one the image declares.
TRITON_UID = 1000
TRITON_GID = 1000

SCRATCH_VOLUME = "scratch"
# Disk-backed, not memory: the kernel and compile caches reach hundreds of MiB, and memory is
# the GPU node's scarcest resource after the GPUs.
SERVING_SCRATCH_LIMIT = "8Gi"
BUILD_SCRATCH_LIMIT = "16Gi"
# Triton's Python backend passes every tensor between the server and its stub processes
# through /dev/shm; the container runtime's default of 64 MiB fails under load.
SHM_VOLUME = "dshm"
SHM_LIMIT = "4Gi"


@dataclass(frozen=True)
class WritablePath:
    """One place a program in the pods writes, how we point it at a writable volume, and the
    documentation that says so."""

    env: str  # the variable we set ("" where none: the path is fixed)
    value: str
    writer: str  # who writes there
    source: str  # where the fact comes from
    vllm_only: bool = False


_S = SCRATCH_MOUNT
WRITABLE_PATHS: tuple[WritablePath, ...] = (
    WritablePath(
        "HOME",
        _S,
        "everything that defaults to ~ (OpenMPI, pip, Matplotlib, TensorRT-LLM's and "
        "FlashInfer's JIT caches under ~/.cache)",
        "POSIX HOME; Python os.path.expanduser",
    ),
    WritablePath(
        "TMPDIR",
        _S,
        "Python tempfile, OpenMPI's session directory (TRTLLM_ORCHESTRATOR), vLLM's RPC "
        "sockets (VLLM_RPC_BASE_PATH defaults to tempfile.gettempdir())",
        "Python docs, tempfile.gettempdir; vllm-project/vllm vllm/envs.py",
    ),
    WritablePath(
        "XDG_CACHE_HOME",
        f"{_S}/.cache",
        "torch.hub and torch.utils.cpp_extension (TORCH_EXTENSIONS_DIR), Hugging Face's "
        "default HF_HOME, vLLM's default VLLM_CACHE_ROOT",
        "XDG Base Directory Specification; huggingface_hub docs, Environment variables "
        "(HF_HOME defaults to ~/.cache/huggingface unless XDG_CACHE_HOME is set)",
    ),
    WritablePath(
        "XDG_CONFIG_HOME",
        f"{_S}/.config",
        "vLLM's default VLLM_CONFIG_ROOT, Matplotlib's config",
        "XDG Base Directory Specification; vllm-project/vllm vllm/envs.py",
    ),
    WritablePath(
        "TORCHINDUCTOR_CACHE_DIR",
        f"{_S}/torchinductor",
        "PyTorch Inductor (torch.compile: FX graph, AOTAutograd, autotuning and Triton "
        "kernels); its default /tmp/torchinductor_<user> asks getpass for a user name, which "
        "fails for a uid without a passwd entry",
        "pytorch.org tutorial 'Compile Time Caching Configuration' (TORCHINDUCTOR_CACHE_DIR)",
    ),
    WritablePath(
        "TRITON_CACHE_DIR",
        f"{_S}/.triton/cache",
        "OpenAI Triton's compiled-kernel cache (vLLM, TensorRT-LLM's PyTorch backend)",
        "triton-lang/triton python/triton/knobs.py, cache_knobs: TRITON_CACHE_DIR, default "
        "$TRITON_HOME/.triton/cache, TRITON_HOME defaults to ~",
    ),
    WritablePath(
        "CUDA_CACHE_PATH",
        f"{_S}/.nv/ComputeCache",
        "the CUDA driver's JIT cache of PTX compiled for this GPU (default ~/.nv/ComputeCache)",
        "CUDA C++ Programming Guide, CUDA Environment Variables (CUDA_CACHE_PATH)",
    ),
    WritablePath(
        "PYTHONDONTWRITEBYTECODE",
        "1",
        "Python would try to write __pycache__ beside the model repository's model.py files, "
        "which are a read-only ConfigMap",
        "Python docs, Command line and environment (PYTHONDONTWRITEBYTECODE)",
    ),
    WritablePath(
        "VLLM_CACHE_ROOT",
        f"{_S}/.cache/vllm",
        "vLLM's torch.compile and kernel caches",
        "vllm-project/vllm vllm/envs.py and docs.vllm.ai Environment Variables "
        "(VLLM_CACHE_ROOT, default ~/.cache/vllm)",
        vllm_only=True,
    ),
    WritablePath(
        "VLLM_CONFIG_ROOT",
        f"{_S}/.config/vllm",
        "vLLM's usage-stats record and config",
        "vllm-project/vllm vllm/envs.py (VLLM_CONFIG_ROOT, default ~/.config/vllm)",
        vllm_only=True,
    ),
    WritablePath(
        "VLLM_NO_USAGE_STATS",
        "1",
        "vLLM would otherwise write ~/.config/vllm/usage_stats.json and send it to "
        "stats.vllm.ai, which a locked-down namespace blocks",
        "vllm-project/vllm vllm/envs.py (VLLM_NO_USAGE_STATS, VLLM_USAGE_STATS_SERVER)",
        vllm_only=True,
    ),
)
# Fixed paths, not set through the environment (docs/security.md lists them too).
FIXED_WRITABLE_PATHS: tuple[tuple[str, str, str], ...] = (
    (
        "/dev/shm",
        "Triton's Python backend: shared-memory regions between tritonserver and each stub",
        "triton-inference-server/python_backend README (shm-default-byte-size, Docker --shm-size)",
    ),
    (
        "/cache (build Job only)",
        "the download, convert and trtllm-build steps, HF_HOME of the download "
        "(the cache volume; read-only in the serving pods)",
        "render.paths",
    ),
    (
        "the build container's working directory",
        "trtllm-build writes its TensorRT timing cache to --output_timing_cache, "
        "default model.cache in the working directory: the build runs in the scratch volume",
        "NVIDIA/TensorRT-LLM tensorrt_llm/commands/build.py (--output_timing_cache)",
    ),
)


def writable_env(*, vllm: bool) -> list[dict[str, Any]]:
    """Environment that points every writer at the scratch volume."""
    return [{"name": p.env, "value": p.value} for p in WRITABLE_PATHS if vllm or not p.vllm_only]


def scratch_volume(size_limit: str) -> dict[str, Any]:
    return {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": size_limit}}


def scratch_mount() -> dict[str, Any]:
    return {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}


def shm_volume() -> dict[str, Any]:
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_LIMIT}}


def shm_mount() -> dict[str, Any]:
    return {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


def _ids(sc: SecurityContextSpec) -> tuple[int, int, int]:
    user = TRITON_UID if sc.run_as_user is None else sc.run_as_user
    group = TRITON_GID if sc.run_as_group is None else sc.run_as_group
    fs_group = group if sc.fs_group is None else sc.fs_group
    return user, group, fs_group


def pod_security_context(sc: SecurityContextSpec) -> dict[str, Any]:
    """The pod's securityContext: non-root ids, the cache volume's group (changed only when its
    top directory does not match already, so a large cache is not walked on every start)."""
    user, group, fs_group = _ids(sc)
    out: dict[str, Any] = {}
    if user != 0:
        out["runAsNonRoot"] = True
    out |= {
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": fs_group,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return out


def container_security_context(sc: SecurityContextSpec) -> dict[str, Any]:
    """Every container's securityContext. The pod-level fields are repeated where scanners
    (and readers of a single container) look for them."""
    user, _, _ = _ids(sc)
    out: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": sc.read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if user != 0:
        out["runAsNonRoot"] = True
    return out


def harden_pod(pod_spec: dict[str, Any], sc: SecurityContextSpec) -> dict[str, Any]:
    """``pod_spec`` with the pod securityContext, every container's, and no service-account
    token: nothing in these pods calls the Kubernetes API."""
    pod_spec["automountServiceAccountToken"] = False
    pod_spec["securityContext"] = pod_security_context(sc)
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key, ()):
            container["securityContext"] = container_security_context(sc)
    return pod_spec
