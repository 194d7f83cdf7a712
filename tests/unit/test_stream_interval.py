"""What our Python engines share to send fewer responses (chatmodel_helpers): the stream interval
(every token while few streams are active; under load, tokens held until the interval's count or
delay, never held when the next token is not expected within the delay), the text stream,
which sends no response without text and counts its tokens in the next one, and the outbox
(every send from one thread, in order, and which streams still have a response waiting)."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import pytest

from chatmodel_operator.triton import textproc

sys.modules.setdefault("chatmodel_textproc", textproc)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model_repository/common"))
import chatmodel_helpers  # noqa: E402

MS = 1_000_000  # ns


@pytest.mark.parametrize(
    ("held", "held_for_ms", "active", "gap_ms", "due"),
    [
        pytest.param(0, 0, 32, 1, False, id="nothing-held"),
        pytest.param(1, 0, 15, 1, True, id="few-streams-every-token"),
        pytest.param(1, 0, 16, 1, False, id="under-load-held"),
        pytest.param(3, 10, 32, 1, False, id="under-load-below-count"),
        pytest.param(4, 0, 32, 1, True, id="count-reached"),
        pytest.param(2, 49, 32, 1, True, id="next-token-would-miss-the-delay"),
        pytest.param(1, 0, 32, 60, True, id="engine-slower-than-the-delay"),
    ],
)
def test_due(held: int, held_for_ms: int, active: int, gap_ms: int, due: bool) -> None:
    interval = chatmodel_helpers.StreamInterval(max_tokens=4, max_delay_ms=50, min_streams=16)
    now = 10_000 * MS
    assert interval.due(held, now - held_for_ms * MS, active, now, gap_ms * MS) is due


def test_without_parameters_every_token_goes_at_once() -> None:
    interval = chatmodel_helpers.StreamInterval.from_parameters({})
    assert interval.due(1, 0, 1000, 0, 0)


def test_text_stream_sends_no_empty_text_and_counts_its_tokens_in_the_next() -> None:
    table = textproc.token_table(
        ["<0xE4>", "<0xBD>", "<0xA0>", "a"], style="sentencepiece", special_ids=set()
    )
    latency = types.SimpleNamespace(first=lambda ms: None, gap=lambda ms, n: None)
    stream = chatmodel_helpers.TextStream(table.decoder(), latency, arrival_ns=1)  # type: ignore[arg-type]
    deltas = [stream.delta([i], final=False) for i in (0, 1, 2, 3)]
    assert deltas == [None, None, ("你".encode(), 3), (b"a", 1)]
    # The last response goes out even empty: it ends the stream.
    assert stream.delta([0], final=False) is None
    assert stream.delta([], final=True) == (b"", 1)  # an incomplete character is dropped


class SlowSender:
    """A stream's response sender that takes ``delay`` seconds per send, as Triton does."""

    def __init__(self, log: list[tuple[str, object]], name: str, delay: float = 0.0) -> None:
        self.log, self.name, self.delay = log, name, delay
        self.started = threading.Event()
        self.release = threading.Event()

    def send(self, response: object = None, flags: int = 0) -> None:
        self.started.set()
        if self.delay:
            assert self.release.wait(5)
        self.log.append((self.name, response))


def test_outbox_sends_in_order_from_one_thread_and_says_which_stream_waits() -> None:
    log: list[tuple[str, object]] = []
    threads: set[str] = set()
    outbox = chatmodel_helpers.Outbox()
    slow, fast = SlowSender(log, "slow", delay=1.0), SlowSender(log, "fast")
    outbox.send(slow, 1)
    assert slow.started.wait(5)
    outbox.send(fast, 2)
    outbox.call(lambda: threads.add(threading.current_thread().name))
    # Triton has not taken the slow stream's response: both streams wait behind it.
    assert outbox.waiting(slow) and outbox.waiting(fast)
    slow.release.set()
    outbox.close()
    assert log == [("slow", 1), ("fast", 2)]
    assert not outbox.waiting(slow) and not outbox.waiting(fast)
    assert threads == {"send"}


def test_outbox_goes_on_after_a_failed_send() -> None:
    log: list[tuple[str, object]] = []

    class Gone:
        def send(self, response: object = None, flags: int = 0) -> None:
            raise RuntimeError("the client went away")

    outbox = chatmodel_helpers.Outbox()
    gone = Gone()
    outbox.send(gone, 1)
    outbox.send(SlowSender(log, "next"), 2)
    outbox.close()
    assert log == [("next", 2)]
    assert not outbox.waiting(gone)
