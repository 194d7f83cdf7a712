"""Fixtures for the autoscaling tier: the loop of tests/autoscaling/stack.py, once for the
package, skipped (with the reason) where this machine cannot make a network namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.autoscaling.stack import Loop, running_loop, why_not

from cluster import interrupt_on_sigterm


@pytest.fixture(scope="package")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    problem = why_not()
    if problem:
        pytest.skip(problem)
    interrupt_on_sigterm()
    with running_loop(Path(tmp_path_factory.mktemp("autoscaling"))) as parts:
        yield parts
