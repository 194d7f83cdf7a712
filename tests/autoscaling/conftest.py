"""Fixtures for the autoscaling tier: the loop of tests/autoscaling/stack.py, once for the
package, skipped (with the reason) where this machine cannot make a network namespace."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.autoscaling.stack import Loop, running_loop, why_not


def _interrupt_on_sigterm() -> None:
    """A SIGTERM (CI's timeout, `timeout`) ends pytest as Ctrl-C does, so the teardown below
    still stops every process and removes the namespace."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="package")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    problem = why_not()
    if problem:
        pytest.skip(problem)
    _interrupt_on_sigterm()
    with running_loop(Path(tmp_path_factory.mktemp("autoscaling"))) as parts:
        yield parts
