"""The long-running tools stop the processes they started when they are sent SIGTERM.

Without ``tests.graceful`` a ``kill`` or a ``timeout`` ends the tool at once and orphans its
gateway and MCP server, which then hold ports and disturb the next measurement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.graceful import run_tool
from tests.mcp.peers import REPO


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found |= {int(child)} | _descendants(int(child))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                alive.add(pid)
    return alive


def test_a_soak_sent_sigterm_stops_its_gateway_and_server(tmp_path: Path) -> None:
    soak = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.soak", "--minutes", "5", "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while not any(b"cmcp-config.yaml" in _cmdline(pid) for pid in started):  # the gateway
            assert soak.poll() is None, soak.stderr.read().decode() if soak.stderr else ""
            assert time.monotonic() < deadline, "the soak did not start its gateway"
            time.sleep(0.5)
            started = _descendants(soak.pid)
        time.sleep(3)  # under way: load, sampling
        started = _descendants(soak.pid)
        assert len(started) >= 2  # the MCP server and the gateway
        soak.send_signal(signal.SIGTERM)
        soak.wait(60)
        deadline = time.monotonic() + 30
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(started), "processes left running after the soak ended"
    finally:
        for pid in _alive(started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if soak.poll() is None:
            soak.kill()
            soak.wait()


CHILD = textwrap.dedent(
    """
    import sys, time
    from tests.graceful import sigterm_as_interrupt
    if sys.argv[2] == "graceful":
        sigterm_as_interrupt()
    else:
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    try:
        time.sleep(60)
    finally:
        open(sys.argv[1], "w").write("cleaned up")
    """
)


@pytest.mark.parametrize("behaviour", ["graceful", "deaf"])
def test_a_timed_out_tool_gets_sigterm_and_time_to_clean_up(tmp_path: Path, behaviour: str) -> None:
    marker = tmp_path / "marker"
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_tool(
            [sys.executable, "-c", CHILD, str(marker), behaviour],
            timeout=3,
            grace=2,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
        )
    took = time.monotonic() - began
    if behaviour == "graceful":
        assert marker.read_text() == "cleaned up"
        assert took < 4.5
    else:  # ignores SIGTERM: killed once the grace period is over
        assert not marker.exists()
        assert 4.5 < took < 10
