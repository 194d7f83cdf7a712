"""Real parts for the Prometheus tier and bench/autoscale.py: Prometheus, a CPU Triton, load.

Everything binds to 127.0.0.1 and every process is started in its own session and stopped by
its process group id, so a failing test leaves nothing behind. Load loops are bounded in both
request count and wall time.

The Triton here serves a trivial decoupled Python model ("chat") that streams a few tokens with
a fixed per-token delay, so queueing behaves like a one-slot LLM server. It exports the
TensorRT-LLM token family (nv_llm_output_token_len) and our inter-token latency histogram
(chatmodel_inter_token_latency_ms, through the helpers our models ship with) through the Python
backend's custom metrics, as the data plane's models do. Series only the GPU / TensorRT-LLM C++ backend or
a newer Triton export come from ``FakeTritonExporter`` (see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from chatmodel_operator.render.objects import TRITON_METRICS_CONFIG
from chatmodel_operator.runtime.server import find_tritonserver
from chatmodel_operator.triton.repository import default_sources, helper_modules

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def promtool_binary() -> str | None:
    return shutil.which("promtool")


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group (tritonserver's Python stubs are in it), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{_tail(log)}")


def _tail(log: Path, n: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- Prometheus ---------------------------------------------------------------------------------


@dataclass
class ScrapeJob:
    name: str
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    # The operator exports namespace/chatmodel labels of its own (kube-state-metrics style).
    honor_labels: bool = False


class Prometheus:
    """Debian's prometheus on loopback with a throwaway TSDB."""

    def __init__(
        self,
        workdir: Path,
        *,
        jobs: Sequence[ScrapeJob],
        rule_groups: list[dict[str, Any]],
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.rules_path = workdir / "rules.yaml"
        self.rules_path.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "rule_files": [str(self.rules_path)],
            "scrape_configs": [
                {
                    "job_name": j.name,
                    "honor_labels": j.honor_labels,
                    "static_configs": [{"targets": [f"{LOOPBACK}:{j.port}"], "labels": j.labels}],
                }
                for j in jobs
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.url}/-/ready", timeout, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the vector result (a scalar result comes back as one sample)."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an expression, None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr}: {len(result)} series")
        return float(result[0]["value"][1])

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def targets_up(self) -> dict[str, bool]:
        data = self._get("/api/v1/targets")
        return {t["labels"]["job"]: t["health"] == "up" for t in data["activeTargets"]}

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float, poll: float = 0.25
    ) -> float:
        """Seconds until ``check()`` holds; TimeoutError with ``what`` otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            time.sleep(poll)
        raise TimeoutError(f"{what}: not within {timeout}s\n{_tail(self.log)}")


# -- Triton on CPU -------------------------------------------------------------------------------

CHAT_CONFIG = """\
name: "chat"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "token" data_type: TYPE_INT32 dims: [ 1 ] } ]
# One instance: like an LLM engine at its batch limit, extra requests wait in Triton's queue.
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "token_seconds" value { string_value: "%(token_seconds)s" } }
"""

CHAT_MODEL = '''\
"""Streams max_tokens tokens, one every token_seconds: a stand-in for a one-slot LLM."""

import json
import time

import chatmodel_helpers
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.token_seconds = float(params["token_seconds"]["string_value"])
        # Same family and labels as the TensorRT-LLM backend's custom metric. The family must
        # outlive its metrics: keep it on self (a local would be collected and observe() fail).
        self.family = pb_utils.MetricFamily(
            name="nv_llm_output_token_len",
            description="Output token length per request",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.tokens = self.family.Metric(
            labels={"model": "chat", "version": "1",
                    "response_metric_type": "total_output_tokens"},
            buckets=[10, 50, 100, 500, 1000],
        )
        # Our models' latency histograms, from the helpers shipped beside them
        # (model_repository/common/chatmodel_helpers.py), timed between this model's tokens.
        self.latency = chatmodel_helpers.TokenLatency(pb_utils, "chat")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy()[0])
            last = None
            for i in range(n):
                time.sleep(self.token_seconds)
                out = pb_utils.Tensor("token", np.array([i], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse([out]))
                now = time.monotonic()
                if last is not None:
                    self.latency.gap((now - last) * 1000.0, 1)
                last = now
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            self.tokens.observe(n)
            self.latency.flush()  # idle: one request at a time
        return None
'''


class TritonServer:
    """The tritonserver binary from the nvidia-pytriton wheel, on CPU, serving ``chat``."""

    def __init__(self, workdir: Path, *, token_seconds: float = 0.01) -> None:
        self.workdir = workdir
        self.token_seconds = token_seconds
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = workdir / "tritonserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _layout(self) -> Path:
        repo = self.workdir / "repository"
        (repo / "chat" / "1").mkdir(parents=True, exist_ok=True)
        (repo / "chat" / "config.pbtxt").write_text(
            CHAT_CONFIG % {"token_seconds": self.token_seconds}
        )
        (repo / "chat" / "1" / "model.py").write_text(CHAT_MODEL)
        # The helpers our models import, beside the model as the repository ships them.
        for name, text in helper_modules(default_sources()):
            (repo / "chat" / "1" / name).write_text(text)
        return repo

    def start(self, timeout: float = 60) -> TritonServer:
        repo = self._layout()
        # The same binary, backend directory and environment as `chatmodel serve`: the stub
        # finds this venv's site-packages (numpy) through the python3 first on PATH, which
        # PYTHONPATH alone did not give it on a fresh machine.
        install = find_tritonserver()
        backends = [f"--backend-directory={install.backend_dir}"] if install.backend_dir else []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(install.binary),
                    f"--model-repository={repo}",
                    *backends,
                    f"--http-address={LOOPBACK}",
                    f"--http-port={self.http_port}",
                    f"--grpc-address={LOOPBACK}",
                    f"--grpc-port={self.grpc_port}",
                    f"--metrics-address={LOOPBACK}",
                    f"--metrics-port={self.metrics_port}",
                    "--allow-gpu-metrics=false",
                    "--allow-cpu-metrics=false",
                    # p50/p95 request latency and time to first token (newer Triton), as
                    # the pods ask for them.
                    *TRITON_METRICS_CONFIG,
                    "--exit-timeout-secs=3",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=install.env,
                start_new_session=True,
            )
        _wait_http(
            f"http://{LOOPBACK}:{self.http_port}/v2/models/chat/ready", timeout, self.proc, self.log
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


# -- load ----------------------------------------------------------------------------------------


def tiny_data_plane(work: Path, name: str, batch_slots: int) -> Any:
    """`chatmodel serve`'s LocalServer (not started) over a tiny Yi checkpoint: requests beyond
    ``batch_slots`` wait in the engine. The checkpoint is written by the CLI in a separate
    process, as a user would; a few training steps keep it fast (weights need not be good to
    queue)."""
    from chatmodel_operator.api import parse_chatmodel
    from chatmodel_operator.runtime.serve import LocalServer, prepare_local
    from chatmodel_operator.runtime.server import Ports

    ckpt = work / "checkpoint"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "chatmodel_operator.cli",
            "tiny-checkpoint",
            "--family",
            "yi-chat",
            "--train-steps",
            "5",
            str(ckpt),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    cm = parse_chatmodel(
        {
            "apiVersion": "serving.chatmodel.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": name},
            "spec": {"model": {"source": f"file://{ckpt}"}},
        }
    )
    return LocalServer(
        prepare_local(cm, max_batch_size=batch_slots), work / "serve", Ports.free(), None
    )


@dataclass
class LoadStats:
    completed: int = 0
    errors: int = 0
    first_token_seconds: list[float] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Clients:
    """``concurrency`` client threads, each sending one request after another (``_client``).

    Bounded: they stop after ``max_requests`` in total or ``max_seconds``, whichever comes
    first, or when ``stop()`` is called.
    """

    thread_name = "client"
    join_timeout = 35.0

    def __init__(self, *, concurrency: int, max_requests: int, max_seconds: float) -> None:
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _client(self) -> None:
        raise NotImplementedError

    def _claim(self) -> bool:
        """Count one more request in flight, unless the bound is reached."""
        with self.stats.lock:
            if self.stats.completed + self.stats.in_flight >= self.max_requests:
                return False
            self.stats.in_flight += 1
            return True

    def _finished(self, ok: bool) -> None:
        with self.stats.lock:
            self.stats.in_flight -= 1
            if ok:
                self.stats.completed += 1
            else:
                self.stats.errors += 1

    def start(self) -> Self:
        self._threads = [
            threading.Thread(target=self._client, name=f"{self.thread_name}-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.join_timeout)
        return self.stats

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Load(_Clients):
    """``concurrency`` clients, each streaming one request after another over gRPC; bounded
    like ``_Clients``. ``on_first_token`` sees each request's time to first token."""

    thread_name = "load"

    def __init__(
        self,
        grpc_port: int,
        *,
        concurrency: int,
        tokens: int = 5,
        max_requests: int = 5000,
        max_seconds: float = 60.0,
        on_first_token: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(
            concurrency=concurrency, max_requests=max_requests, max_seconds=max_seconds
        )
        self.url = f"{LOOPBACK}:{grpc_port}"
        self.tokens = tokens
        self.on_first_token = on_first_token

    def _client(self) -> None:
        import numpy as np
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.max_seconds
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = grpcclient.InferenceServerClient(self.url)
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if not self._claim():
                    return
                inp = grpcclient.InferInput("max_tokens", [1], "INT32")
                inp.set_data_from_numpy(np.array([self.tokens], dtype=np.int32))
                sent = time.monotonic()
                client.async_stream_infer("chat", [inp], enable_empty_final_response=True)
                first = True
                ok = True
                while True:
                    try:
                        result, error = responses.get(timeout=30)
                    except queue.Empty:
                        ok = False
                        break
                    if error is not None:
                        ok = False
                        break
                    if first:
                        first = False
                        if self.on_first_token is not None:
                            self.on_first_token(time.monotonic() - sent)
                    params = result.get_response().parameters
                    if params["triton_final_response"].bool_param:
                        break
                self._finished(ok)
        finally:
            client.stop_stream()
            client.close()


class GenerateLoad(_Clients):
    """``concurrency`` clients of Triton's generate_stream endpoint (the data plane's
    ensemble), one request after another; bounded like ``_Clients``. With ``stream`` the engine
    streams its tokens one response each, as for chat clients; without, it answers once."""

    thread_name = "generate"
    join_timeout = 65.0

    def __init__(
        self,
        http_url: str,
        *,
        model: str = "ensemble",
        concurrency: int,
        max_tokens: int = 64,
        max_requests: int = 2000,
        max_seconds: float = 60.0,
        stream: bool = False,
    ) -> None:
        super().__init__(
            concurrency=concurrency, max_requests=max_requests, max_seconds=max_seconds
        )
        self.url = f"{http_url}/v2/models/{model}/generate_stream"
        body = {"text_input": "Hello, who are you?", "max_tokens": max_tokens, "stream": stream}
        self.body = json.dumps(body)

    def _client(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._claim():
                return
            request = urllib.request.Request(self.url, data=self.body.encode(), method="POST")
            ok = True
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    text = resp.read().decode(errors="replace")
                ok = '"error"' not in text
            except OSError:
                ok = False
            self._finished(ok)


# -- series only GPU / TensorRT-LLM C++ backend / newer Triton export ---------------------------


class FakeTritonExporter:
    """Serves, in the documented format, series the CPU Triton of nvidia-pytriton cannot export.

    - ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max|free|used|tokens_per|fraction}``
      from the TensorRT-LLM C++ backend's custom metrics reporter (only on GPU);
    - ``nv_inference_first_response_histogram_ms`` from Triton's core, which the Triton 2.51
      bundled with nvidia-pytriton 0.7.0 does not have (newer Triton, histogram_latencies=true).

    The values are not invented: the time to first token is what the load clients measure
    against the real Triton, and KV-cache use follows the requests in flight.
    """

    BLOCKS = 64

    def __init__(self, *, model: str = "chat") -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.kv = Gauge(
            "nv_trt_llm_kv_cache_block_metrics",
            "TRT-LLM KV cache block metrics",
            ["model", "version", "kv_cache_block_type"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "nv_inference_first_response_histogram_ms",
            "Duration from request to first response in milliseconds",
            ["model", "version"],
            buckets=(10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        self.model = model
        self.ttft.labels(model=model, version="1")
        self.set_in_flight(0)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr=LOOPBACK, registry=self.registry)

    def set_in_flight(self, n: int) -> None:
        used = min(self.BLOCKS, 8 * n)  # 8 blocks per request: full at 8 in flight
        labels = {"model": self.model, "version": "1"}
        for kind, value in (
            ("max", self.BLOCKS),
            ("used", used),
            ("free", self.BLOCKS - used),
            ("tokens_per", 64),
            ("fraction", used / self.BLOCKS),
        ):
            self.kv.labels(**labels, kv_cache_block_type=kind).set(value)

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.labels(model=self.model, version="1").observe(seconds * 1000)

    def stop(self) -> None:
        self.server.shutdown()


@contextlib.contextmanager
def following_in_flight(exporter: FakeTritonExporter, load: Load) -> Iterator[None]:
    """Keep the fake KV-cache use in step with the load's requests in flight."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(0.1):
            exporter.set_in_flight(load.stats.in_flight)
        exporter.set_in_flight(0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(timeout=2)
