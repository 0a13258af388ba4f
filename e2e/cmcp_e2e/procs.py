"""Child processes of a test cluster: spawn each in its own session, find them again
from a pid file (another shell), and kill whole process groups.

A record keeps the kernel start time next to the pid, so a recycled pid is never
mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcRecord:
    """One component process: it leads its own session and process group (pgid == pid)."""

    name: str
    pid: int
    start_time: int
    log: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the rest follows the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(rec: ProcRecord) -> bool:
    """True while the recorded process exists (not a zombie) and is the same process."""
    fields = _stat_fields(rec.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == rec.start_time


def group_members(pgids: Iterable[int]) -> list[int]:
    """Live pids whose process group is one of ``pgids`` and whose session is that group."""
    wanted = set(pgids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields: 0 state, 1 ppid, 2 pgrp, 3 session
        if fields and fields[0] != "Z" and int(fields[2]) in wanted and fields[2] == fields[3]:
            found.append(int(entry.name))
    return found


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it if the test process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    name: str, argv: Sequence[str], log: Path, *, tie_to_parent: bool
) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start ``argv`` in a new session with output to ``log``.

    ``tie_to_parent`` asks the kernel to kill it when this process dies (pytest runs);
    ``make cluster-up`` leaves it off so the cluster outlives the command.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )
    started = start_time(proc.pid)
    return proc, ProcRecord(name, proc.pid, started or 0, str(log))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(records: Sequence[ProcRecord], *, grace: float = 10.0, reap: Callable[[], None]) -> None:
    """SIGTERM every group (last started first), wait, then SIGKILL what is left.

    ``reap`` collects exited children of this process (zombies) while waiting.
    Only groups whose leader is still the recorded process (same pid and start
    time) are signalled: a recycled pid is never touched.
    """
    groups = [r.pid for r in reversed(records) if is_running(r)]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not group_members(groups):
            return
        time.sleep(0.1)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while group_members(groups) and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, *, avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct free loopback ports below the kernel's ephemeral range.

    Ephemeral ports (32768+) are what outgoing connections use, so a port picked
    there can be taken by any client between the check and the bind; the caller
    still retries when a component reports the port taken.
    """
    rng = random.SystemRandom()
    chosen: list[int] = []
    taken = set(avoid)
    while len(chosen) < count:
        port = rng.randrange(20000, 32000)
        if port not in taken and port_free(port):
            chosen.append(port)
            taken.add(port)
    return chosen
