"""Our models' latency histograms (chatmodel_helpers.TokenLatency): counted in the model's
process and sent to Triton as the counters of a classic histogram's series, at most every
FLUSH_S while busy and at once when the model is idle, because every custom-metric call is a
blocking round trip to Triton's process on the thread that sends the responses."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from chatmodel_operator.triton import textproc

sys.modules.setdefault("chatmodel_textproc", textproc)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model_repository/common"))
import chatmodel_helpers  # noqa: E402


class Counter:
    def __init__(self, family: str, labels: dict[str, str]) -> None:
        self.family, self.labels, self.value = family, labels, 0.0

    def increment(self, value: float) -> None:
        assert value > 0, "a counter only goes up"
        self.value += value
        MetricFamily.calls += 1


class MetricFamily:
    """pb_utils.MetricFamily: every counter made, and every call into Triton counted."""

    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    made: ClassVar[list[Counter]] = []
    kinds: ClassVar[dict[str, str]] = {}
    calls = 0

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name
        MetricFamily.kinds[name] = kind

    def Metric(self, labels: dict[str, str]) -> Counter:  # noqa: N802 (Triton's name)
        counter = Counter(self.name, labels)
        MetricFamily.made.append(counter)
        return counter


def series() -> dict[tuple[str, str], float]:
    """What Triton would export: (series name, le or "") -> value."""
    return {(c.family, c.labels.get("le", "")): c.value for c in MetricFamily.made}


@pytest.fixture
def latency(monkeypatch: pytest.MonkeyPatch) -> chatmodel_helpers.TokenLatency:
    MetricFamily.made, MetricFamily.kinds, MetricFamily.calls = [], {}, 0
    pb = types.SimpleNamespace(MetricFamily=MetricFamily)
    clock = [0]
    monkeypatch.setattr(chatmodel_helpers.time, "monotonic_ns", lambda: clock[0])
    made = chatmodel_helpers.TokenLatency(pb, "ensemble", flush_s=1.0)
    made.clock = clock  # type: ignore[attr-defined]
    return made


def test_the_series_are_a_histograms_as_counters_under_the_models_label(latency: Any) -> None:
    for name in (chatmodel_helpers.TTFT_METRIC, chatmodel_helpers.ITL_METRIC):
        for suffix in ("_bucket", "_sum", "_count"):
            assert MetricFamily.kinds[name + suffix] == MetricFamily.COUNTER
    itl = [c for c in MetricFamily.made if c.family == "chatmodel_inter_token_latency_ms_bucket"]
    les = [c.labels["le"] for c in itl]
    assert les == [f"{b:g}" for b in chatmodel_helpers.ITL_BUCKETS_MS] + ["+Inf"]
    assert all(c.labels["model"] == "ensemble" for c in MetricFamily.made)


def test_observations_wait_for_the_flush_interval_then_go_out_cumulative(latency: Any) -> None:
    latency.clock[0] = 2_000_000_000  # long after the last flush (at creation): due at once
    latency.first(30.0)
    assert series()[("chatmodel_time_to_first_token_ms_count", "")] == 1
    calls = MetricFamily.calls
    latency.clock[0] += 500_000_000  # half an interval: counted here, not sent
    latency.gap(8.0, 4)  # 2 ms per token: le is inclusive, so in the "2" bucket
    latency.gap(30.0, 1)
    latency.gap(5000.0, 1)
    assert MetricFamily.calls == calls
    assert series()[("chatmodel_inter_token_latency_ms_count", "")] == 0
    latency.clock[0] += 500_000_000
    latency.gap(0.5, 1)  # due: everything counted goes out
    got = series()
    bucket = "chatmodel_inter_token_latency_ms_bucket"
    assert [got[(bucket, le)] for le in ("1", "2", "5", "20", "40", "2560", "+Inf")] == [
        1,
        2,
        2,
        2,
        3,
        3,
        4,
    ]
    assert got[("chatmodel_inter_token_latency_ms_count", "")] == 4
    assert got[("chatmodel_inter_token_latency_ms_sum", "")] == pytest.approx(5032.5)
    # Only the series that moved: 13 buckets and both totals of the ITL histogram.
    assert MetricFamily.calls - calls == 13 + 2


def test_flush_sends_what_is_counted_at_once_and_nothing_twice(latency: Any) -> None:
    latency.gap(3.0, 1)
    assert series()[("chatmodel_inter_token_latency_ms_count", "")] == 0
    latency.flush()
    assert series()[("chatmodel_inter_token_latency_ms_count", "")] == 1
    calls = MetricFamily.calls
    latency.flush()  # nothing new: no round trip
    assert MetricFamily.calls == calls
    latency.gap(3.0, 1)
    latency.flush()
    got = series()
    assert got[("chatmodel_inter_token_latency_ms_count", "")] == 2
    assert got[("chatmodel_inter_token_latency_ms_bucket", "2")] == 0
    assert got[("chatmodel_inter_token_latency_ms_bucket", "5")] == 2
    # The one observation moved three buckets of its own and the +Inf one, and both totals.
    assert MetricFamily.calls - calls == (len(chatmodel_helpers.ITL_BUCKETS_MS) - 2) + 1 + 2


def test_a_response_without_tokens_is_not_observed(latency: Any) -> None:
    latency.gap(3.0, 0)
    latency.flush()
    assert MetricFamily.calls == 0


def test_a_due_flush_is_handed_to_the_sending_thread_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine's observations are made on its generating thread; the flush, a round trip to
    Triton, is handed to the thread that sends (Outbox.call), once however many observations
    come before it runs."""
    MetricFamily.made, MetricFamily.kinds, MetricFamily.calls = [], {}, 0
    clock = [0]
    monkeypatch.setattr(chatmodel_helpers.time, "monotonic_ns", lambda: clock[0])
    handed: list[Any] = []
    pb = types.SimpleNamespace(MetricFamily=MetricFamily)
    latency = chatmodel_helpers.TokenLatency(pb, "ensemble", defer=handed.append)
    clock[0] = 2_000_000_000
    latency.first(30.0)
    latency.gap(4.0, 2)
    assert len(handed) == 1 and MetricFamily.calls == 0
    handed[0]()  # the sending thread runs it
    assert series()[("chatmodel_inter_token_latency_ms_count", "")] == 1
    assert series()[("chatmodel_time_to_first_token_ms_count", "")] == 1
    clock[0] += 1_000_000_000
    latency.gap(4.0, 2)
    assert len(handed) == 2
