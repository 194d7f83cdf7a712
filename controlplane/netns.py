"""A network namespace of our own, for what needs an address that is not loopback.

The API server refuses loopback addresses in EndpointSlices, so an aggregated API (KEDA's
metrics server) must be reached on another address; the only other addresses a test may use
are those of a namespace it made. As root: ``ip netns add``, ``lo`` up, a 10.x/32 address on
that ``lo``. Nothing outside the namespace reaches into it, and it is removed at the end.

``entered()`` moves the calling thread into the namespace (setns(2)), so every process it
starts, every thread those start and every socket it opens are inside, with no
``ip netns exec`` in front of each command; on leaving, the thread goes back where it was.

Standard library only, like cluster.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
PREFIX = "chm-"


def _setns(path: str | int) -> None:
    fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        if not isinstance(path, int):
            os.close(fd)


def unavailable() -> str | None:
    """Why this process cannot make a network namespace, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    # Root in a container may still lack CAP_SYS_ADMIN: try it.
    name = f"{PREFIX}probe-{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@dataclass
class NetNamespace:
    name: str
    address: str  # a 10.x address, /32 on the namespace's lo

    @classmethod
    def for_this_process(cls, tag: str, address: str = "10.77.0.1") -> NetNamespace:
        """A name no other run uses (this process id); the address is private to it."""
        return cls(f"{PREFIX}{tag}-{os.getpid()}", address)

    def create(self) -> NetNamespace:
        remove_stale(self.name.rsplit("-", 1)[0])
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/32", "dev", "lo")
        except RuntimeError:
            self.delete()
            raise
        return self

    @contextlib.contextmanager
    def entered(self) -> Iterator[NetNamespace]:
        """The calling thread inside the namespace for the block (and what it starts)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(f"/run/netns/{self.name}")
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(home)

    def processes(self) -> list[int]:
        return _pids(self.name)

    def delete(self, grace: float = 10.0) -> list[int]:
        """Stops whatever still runs inside (every one of them started by us: the namespace
        is ours), then removes the namespace. Returns the pids it had to stop."""
        left = _pids(self.name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids(self.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while _pids(self.name) and time.monotonic() < deadline:
                time.sleep(0.1)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        return left


def remove_stale(prefix: str) -> None:
    """Namespaces a killed run of ours left behind: its process id is gone and nothing runs
    inside."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(re.escape(prefix) + r"-(\d+)", name)
        if m and not Path(f"/proc/{m.group(1)}").exists() and not _pids(name):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
