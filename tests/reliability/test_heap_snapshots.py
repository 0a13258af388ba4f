"""The soak's heap profile: a traced process writes snapshots on SIGUSR2, and their
difference names the allocation site that grew."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .soak import HEAPSNAP, heap_growth, heap_report

# Grows a list by 2 000 strings of 1 000 bytes whenever stdin says so.
GROWER = """
import sys
kept = []
print("ready", flush=True)
for line in sys.stdin:
    kept.extend("x" * 1000 + str(i) for i in range(2000))
    print("grown", flush=True)
"""


def _snapshot(proc: subprocess.Popen[str], path: Path) -> None:
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.05)


def test_snapshots_on_sigusr2_name_what_grew(tmp_path: Path) -> None:
    script = tmp_path / "grower.py"
    script.write_text(GROWER)
    env = {**os.environ, "PYTHONPATH": str(HEAPSNAP), "CMCP_HEAP_SNAPSHOTS": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "ready\n"  # SIGUSR2 before start-up would kill it
            _snapshot(proc, tmp_path / "heap-1.snapshot")
            proc.stdin.write("grow\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "grown\n"
            _snapshot(proc, tmp_path / "heap-2.snapshot")
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    heap = heap_growth(tmp_path / "heap-1.snapshot", tmp_path / "heap-2.snapshot", top=3)
    grown = heap["top"][0]
    assert grown["traceback"][-1].endswith("grower.py:6")  # the generator building the strings
    assert grown["count_diff"] >= 2000 and grown["size_diff_kib"] >= 2000
    assert heap["traced_after_kib"] - heap["traced_before_kib"] >= 2000
    assert "grower.py:6" in heap_report(heap)


def test_without_the_variable_nothing_is_traced(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(HEAPSNAP)}
    env.pop("CMCP_HEAP_SNAPSHOTS", None)
    out = subprocess.run(
        [sys.executable, "-c", "import tracemalloc; print(tracemalloc.is_tracing())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
