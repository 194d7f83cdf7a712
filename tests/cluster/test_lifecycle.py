"""Covers the ChatModel lifecycle against the emulated cluster: create to Ready."""

from __future__ import annotations

import pytest
from conftest import CM, NS, SMALL_SPEC, chatmodel, phase_of, status_of, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]


async def test_create_to_ready(api, controllers, operator):
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await wait_for(lambda: phase_of(api, "xverse") == "Ready", 15)
    st = status_of(api, "xverse")
    print(st)
