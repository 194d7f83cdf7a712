"""Starting and stopping a real ``tritonserver`` on a model repository written to disk.

In a Triton image the binary is ``/opt/tritonserver/bin/tritonserver`` with its backends next
to it. Elsewhere (a laptop, CI) it is the binary the ``nvidia-pytriton`` wheel ships, which
needs three things the wheel does not arrange by itself:

* a backend directory whose ``python`` backend holds the stub for this interpreter's version
  (the wheel keeps one stub per Python version apart): we link one up under a cache folder;
* ``LD_LIBRARY_PATH`` with this interpreter's ``LIBDIR`` first (the stub embeds libpython),
  then the wheel's ``nvidia_pytriton.libs``;
* this interpreter's ``bin`` first on ``PATH``: the stub finds its ``site-packages`` through
  the ``python3`` it finds there, and another Python's numpy breaks tensor transfer silently.

The command line itself comes from ``render.objects.tritonserver_args``, the one the serving
pods use.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from chatmodel_operator.render.objects import tritonserver_args

POD_TRITONSERVER = Path("/opt/tritonserver/bin/tritonserver")
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """tritonserver could not be found, or did not become ready; carries its log tail."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path | None  # None: the binary's own default (/opt/tritonserver/backends)
    env: Mapping[str, str]


def _pytriton_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).parent


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.symlink_to(src)


def find_tritonserver(cache_dir: Path | None = None) -> TritonInstall:
    """The image's tritonserver, else the pytriton wheel's (with its environment arranged)."""
    explicit = os.environ.get("CHATMODEL_TRITONSERVER")
    if explicit or POD_TRITONSERVER.exists():
        return TritonInstall(Path(explicit or POD_TRITONSERVER), None, dict(os.environ))
    root = _pytriton_root()
    if root is None or not (root / "tritonserver/bin/tritonserver").exists():
        raise ServerError(
            "no tritonserver: not in a Triton image and the nvidia-pytriton wheel is not "
            "installed; fix: pip install 'chatmodel-operator[serve]'"
        )
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"the pytriton wheel has no Python backend stub for Python {version}")
    cache = cache_dir or Path(tempfile.gettempdir()) / f"chatmodel-triton-{os.getuid()}"
    python_dir = cache / f"py{version}" / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _link(dist / "backends" / "python" / name, python_dir / name)
    _link(stub, python_dir / "triton_python_backend_stub")
    env = dict(os.environ)
    libs = [str(sysconfig.get_config_var("LIBDIR")), str(root.parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return TritonInstall(dist / "bin" / "tritonserver", python_dir.parent, env)


def write_repository(repo: Mapping[PurePosixPath, str], dest: Path) -> Path:
    """Write the repository into ``dest``, replacing what was there."""
    if dest.exists():
        shutil.rmtree(dest)
    for rel, text in sorted(repo.items()):
        path = dest / Path(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \S+: (.*?)\"?$")


def load_failures(log: str) -> list[str]:
    """``model: reason`` for each model Triton's log says failed to load (the reason's first
    line, which names the error), in the order of the log."""
    out = []
    for line in log.splitlines():
        match = _LOAD_FAILURE.search(line)
        if match:
            reason = match.group(2).split("\\n", 1)[0].strip()
            out.append(f"{match.group(1)}: {reason[:300]}")
    return out


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether something listens on ``port`` (bound as a server would, with SO_REUSEADDR, so
    that a port in TIME_WAIT counts as free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def _die_with_parent() -> None:
    """Child side of fork: get SIGTERM if the Python process that started us dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class TritonServer:
    """A tritonserver process: ``with TritonServer(repo_dir, ports) as server: ...``."""

    def __init__(
        self,
        repository: Path,
        ports: Ports,
        *,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        install: TritonInstall | None = None,
    ) -> None:
        self.repository = repository
        self.ports = ports
        self.install = install or find_tritonserver()
        self.log_path = log_path or repository.parent / "tritonserver.log"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        args = [
            str(self.install.binary),
            *tritonserver_args(
                http_port=self.ports.http,
                grpc_port=self.ports.grpc,
                metrics_port=self.ports.metrics,
                repository=str(self.repository),
            ),
            # Several servers may share one machine (tests): their Python backends' shared
            # memory regions must not collide.
            f"--backend-config=python,shm-region-prefix-name=chatmodel{os.getpid()}p{self.ports.http}_",
            "--exit-timeout-secs=5",
            # A server on a workstation or a CI machine answers this machine only (in a pod
            # the rendered arguments leave Triton on every interface, behind the Service).
            *(f"--{api}-address={LOOPBACK}" for api in ("http", "grpc", "metrics")),
        ]
        if self.install.backend_dir is not None:
            args.append(f"--backend-directory={self.install.backend_dir}")
        return args + self.extra_args

    def start(self) -> TritonServer:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            env=dict(self.install.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
        )
        log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                failures = load_failures(self.log())
                why = (
                    "; ".join(f"could not load {f}" for f in failures)
                    if failures
                    else f"\n{self.log_tail()}\n"
                )
                raise ServerError(
                    f"tritonserver exited with status {self.process.returncode}: {why} "
                    f"(its log: {self.log_path})"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (Triton finishes in-flight requests, up to --exit-timeout-secs), then
        SIGKILL if it is still there after ``timeout_s``."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        # Whatever is left of its group: the server if it did not stop in time, and Python
        # backend stubs that outlived it (a stub busy in a BLS thread was seen to linger).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
