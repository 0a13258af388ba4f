"""Heap snapshots on demand for a process under test (the soak's ``--heap-profile``).

Put this directory first on ``PYTHONPATH`` and set ``CMCP_HEAP_SNAPSHOTS`` to a directory:
the interpreter then traces allocations from start-up (``tracemalloc``, a few frames each)
and, on every ``SIGUSR2``, writes ``heap-<n>.snapshot`` there (written under a temporary
name, then renamed, so a reader never sees half a file). Without the variable it does
nothing. Test tooling only: nothing in the product imports it.
"""

from __future__ import annotations

import itertools
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 8


def _install(directory: Path) -> None:
    tracemalloc.start(FRAMES)
    numbers = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        path = directory / f"heap-{next(numbers)}.snapshot"
        partial = path.with_suffix(".partial")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(path)

    signal.signal(signal.SIGUSR2, dump)


_target = os.environ.get("CMCP_HEAP_SNAPSHOTS")
if _target:
    _install(Path(_target))
