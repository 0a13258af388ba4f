"""The event loop ``cmcp start`` runs on: uvloop when installed, else asyncio's own.

uvloop (libuv) runs the same aiohttp server and client with less CPU per request: about
15 % less gateway CPU per ``tools/call`` and 20-30 % more calls per second at 8 clients on
the benchmark machine (docs/benchmarks.md). ``CMCP_EVENT_LOOP=asyncio`` keeps the standard
loop (for debugging, or a platform without uvloop wheels).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "CMCP_EVENT_LOOP"


def loop_name(env: dict[str, str] | None = None) -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` will use."""
    wanted = (env if env is not None else os.environ).get(ENV, "auto")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
