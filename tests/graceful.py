"""Stopping the project's long-running test tools without leaving their processes behind.

The benchmark, soak and reliability tools start real peers (gateways, MCP servers, a control
plane) and stop them in ``finally`` blocks and context managers. Ctrl-C runs those; SIGTERM
(``kill``, ``timeout``, a CI job's time limit) by default ends the tool at once and leaves
every peer running, where it would hold ports and disturb the next measurement.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any

GRACE_SECONDS = 30.0


def sigterm_as_interrupt() -> None:
    """Make SIGTERM end this tool the way Ctrl-C does (``KeyboardInterrupt``), so that its
    cleanup runs and the processes it started are stopped."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_tool(
    cmd: Sequence[str], *, timeout: float, grace: float = GRACE_SECONDS, **popen: Any
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` for a child that starts processes of its own: on a timeout or an
    interrupt the child gets SIGTERM and ``grace`` seconds to stop them (``subprocess.run``
    would SIGKILL it and orphan them), then SIGKILL. Raises what ``subprocess.run`` raises."""
    with subprocess.Popen(cmd, **popen) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:  # the timeout, or this tool being interrupted
            proc.terminate()
            try:
                proc.communicate(timeout=grace)  # reading on: a child blocked on a full pipe
            except subprocess.TimeoutExpired:  # would not get to its cleanup
                proc.kill()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
