"""Where claims are kept: the :class:`ClaimSink` protocol and the directory sink.

A sink stores claim bytes under a name (``[a-z0-9][a-z0-9.-]*``, at most 253 characters —
valid as a file name and as a Kubernetes object name) durably before ``put`` returns, and
reads them back. :class:`DirectorySink` writes ``<dir>/<name>.json`` atomically (temporary
file, fsync, rename, fsync of the directory), so a crash leaves either the old state or the
whole claim, never a partial one. A Kubernetes ConfigMap sink implements the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path
from typing import Protocol

from cmcp_verifier.errors import CmcpError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")


class ClaimSinkError(CmcpError):
    """A claim could not be stored (the issuer retries with backoff)."""

    code = "claims.sink"


class ClaimSink(Protocol):
    """Durable storage for claims."""

    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` durably (replacing an older version)."""

    async def get(self, name: str) -> bytes | None:
        """The stored bytes, or None."""

    async def names(self) -> list[str]:
        """Every stored claim name."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"invalid claim name {name!r}")
    return name


class DirectorySink:
    """Claims as ``<name>.json`` files in one directory (``claims.dir``)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def put(self, name: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, check_name(name), data)
        except OSError as exc:
            raise ClaimSinkError(
                f"cannot write claim {name} to {self.directory}: {exc.strerror or exc}",
                hint="check claims.dir (space, permissions)",
            ) from None

    async def get(self, name: str) -> bytes | None:
        path = self.directory / f"{check_name(name)}.json"
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClaimSinkError(f"cannot read claim {name}: {exc.strerror or exc}") from None

    async def names(self) -> list[str]:
        def scan() -> list[str]:
            if not self.directory.is_dir():
                return []
            return sorted(
                p.name[: -len(".json")]
                for p in self.directory.iterdir()
                if p.name.endswith(".json") and NAME_RE.match(p.name[: -len(".json")])
            )

        return await asyncio.to_thread(scan)

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self.directory / f"{name}.json"
        tmp = self.directory / f".{name}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
