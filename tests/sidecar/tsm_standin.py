"""A stand-in for the kernel's configfs-tsm report interface, in a plain directory.

There is no SEV-SNP or TDX guest here, and configfs cannot be mounted without the kernel's
``tsm`` module, so this thread plays the kernel's part: when a report entry is created
(``mkdir``) it adds the attribute files — ``provider`` (regular file) and ``generation``,
``outblob``, ``auxblob`` as named pipes, so each read is answered at the moment it happens,
after the caller wrote ``inblob``, exactly as the kernel generates the report on the read. It
answers with fixed *real* reports from ../shared/evidence; those do not carry the caller's
report data, which the tests use to show the provider passes them on untouched and the
verifier rejects them for the binding alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Entry:
    path: Path
    reads: int = 0


@dataclass
class FakeTsmKernel:
    """Serves ``outblob``/``auxblob`` for every entry created under ``root``."""

    root: Path
    provider: str
    outblob: bytes
    auxblob: bytes | None = None
    generation_bump: int = 0  # > 0: another writer "writes" the entry between two reads
    inblobs: list[bytes] = field(default_factory=list)
    _entries: dict[Path, Entry] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _setup(self, path: Path) -> None:
        (path / "provider").write_text(self.provider + "\n")
        names = ["generation", "outblob"] + (["auxblob"] if self.auxblob is not None else [])
        for name in names:
            os.mkfifo(path / name)
        self._entries[path] = Entry(path)

    def _content(self, entry: Entry, name: str) -> bytes:
        inblob = entry.path / "inblob"
        written = inblob.exists() and inblob.stat().st_size > 0
        if name == "generation":
            entry.reads += 1
            bump = self.generation_bump if entry.reads > 1 else 0
            return f"{int(written) + bump}\n".encode()
        if name == "outblob":
            self.inblobs.append(inblob.read_bytes() if written else b"")
            return self.outblob
        return self.auxblob or b""

    def _serve_once(self) -> None:
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and path not in self._entries:
                self._setup(path)
        for entry in list(self._entries.values()):
            for name in ("generation", "outblob", "auxblob"):
                fifo = entry.path / name
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno in (errno.ENXIO, errno.ENOENT):
                        continue  # nobody is reading it now (or it does not exist)
                    raise
                try:
                    # A fresh pipe at the same path before answering: the reader holding this
                    # one gets exactly one answer, the next read of the file the next one.
                    os.unlink(fifo)
                    os.mkfifo(fifo)
                    os.set_blocking(fd, True)
                    os.write(fd, self._content(entry, name))
                finally:
                    os.close(fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._serve_once()
            time.sleep(0.001)

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeTsmKernel]:
        self.root.mkdir(parents=True, exist_ok=True)
        thread = threading.Thread(target=self._run, name="fake-tsm-kernel", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)
