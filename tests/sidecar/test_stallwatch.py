"""The stall watchdog names what holds the event loop, once, and says when it turns again.

The loop is real and really held: a blocking ``time.sleep`` in a function of the test stands
in for a system call that does not return (the frozen-volume case runs for real in
tests/reliability/test_fail_closed.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cmcp_sidecar.stallwatch import StallWatch


def hung_storage_call(seconds: float) -> None:
    time.sleep(seconds)


async def test_a_held_loop_is_named_counted_and_its_recovery_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls: list[int] = []
    watch = StallWatch(
        asyncio.get_running_loop(), threshold=0.3, tick=0.05, on_stall=lambda: stalls.append(1)
    )
    with caplog.at_level(logging.INFO, logger="cmcp_sidecar.stallwatch"):
        watch.start()
        try:
            await asyncio.sleep(0.4)  # turning: nothing to say
            assert caplog.records == []
            hung_storage_call(1.0)
            await asyncio.sleep(0.3)  # the thread sees the heartbeat again
        finally:
            watch.stop()
    stalled, recovered = caplog.records
    assert stalled.levelno == logging.ERROR and stalled.event == "loop_stalled"  # type: ignore[attr-defined]
    assert stalled.where.startswith("hung_storage_call (")  # type: ignore[attr-defined]
    assert "test_a_held_loop" in stalled.stack  # type: ignore[attr-defined]
    assert not hasattr(stalled, "hint")  # not the audit storage
    assert recovered.event == "loop_recovered" and recovered.held_s >= 0.9  # type: ignore[attr-defined]
    assert stalls == [1]


async def test_a_loop_that_keeps_turning_is_never_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StallWatch(asyncio.get_running_loop(), threshold=0.5, tick=0.02)
    with caplog.at_level(logging.INFO, logger="cmcp_sidecar.stallwatch"):
        watch.start()
        for _ in range(20):
            hung_storage_call(0.05)  # short holds, each well under the threshold
            await asyncio.sleep(0.03)
        watch.stop()
    assert caplog.records == []
