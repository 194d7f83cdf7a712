"""A stand-in for the llm-d router (its endpoint picker) as Prometheus sees it: the flow-control
queue gauge ``llm_d_epp_flow_control_queue_size{inference_pool, model_name, priority}`` (llm-d
router docs/metrics.md), served on 127.0.0.1.

Like the router, it exports a series only for what it has queued: a pool with nothing held (or
with no pods behind it) has no series at all, the trap the KEDA trigger must survive.
"""

from __future__ import annotations

from typing import Self

from tests.prometheus.promharness import LOOPBACK, free_port

QUEUE_SIZE = "llm_d_epp_flow_control_queue_size"


class FakeRouter:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.queue = Gauge(
            QUEUE_SIZE,
            "Requests held in the flow-control queue",
            ["inference_pool", "model_name", "priority"],
            registry=self.registry,
        )
        self.held: set[tuple[str, str, str]] = set()
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr=LOOPBACK, registry=self.registry
        )

    def hold(self, pool: str, n: int, *, model: str = "ensemble", priority: int = 0) -> None:
        """``n`` requests for ``pool`` wait in the queue of one priority band."""
        key = (pool, model, str(priority))
        self.queue.labels(*key).set(n)
        self.held.add(key)

    def forget(self, pool: str) -> None:
        """The pool's series go away, as when the router drops an empty queue."""
        for key in [k for k in self.held if k[0] == pool]:
            self.queue.remove(*key)
            self.held.discard(key)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
