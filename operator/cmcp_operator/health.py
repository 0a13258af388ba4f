"""``/healthz`` and ``/readyz`` of the operator process, leader and followers alike.

A follower waiting for the Lease is healthy (the kubelet must not restart it); it is also
ready, since taking over is its job. The leader is ready once kopf reports its watches up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class Health:
    """The process's role and readiness, served over HTTP."""

    def __init__(self) -> None:
        self.role = "starting"  # starting | follower | leader | stopping
        self.kopf_ready = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def _body(self, ok: bool) -> web.Response:
        payload: dict[str, Any] = {"role": self.role, "watching": self.kopf_ready.is_set()}
        return web.Response(
            status=200 if ok else 503, text=json.dumps(payload), content_type="application/json"
        )

    async def healthz(self, _: web.Request) -> web.Response:
        return self._body(self.role != "stopping")

    async def readyz(self, _: web.Request) -> web.Response:
        ok = self.role == "follower" or (self.role == "leader" and self.kopf_ready.is_set())
        return self._body(ok)

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
