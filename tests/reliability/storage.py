"""Real storage faults for audit tests: a full tmpfs, an ext4 volume that shuts down (EIO) or
whose log is made immutable (EPERM) while the gateway has it open.

Mounting needs CAP_SYS_ADMIN and loop devices (root in CI and here); without them the tests
that use these helpers skip and say why. A read-only *remount* cannot be produced while the
log is open for writing (the kernel refuses it with EBUSY), so "storage goes read-only under a
running gateway" is produced as the two ways ext4 really stops taking writes: an emergency
shutdown after an I/O error, and the immutable attribute.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.test_audit_storage import tmpfs

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2

__all__ = ["ext4_volume", "fill", "frozen", "set_immutable", "shutdown", "tmpfs"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def ext4_volume(mountpoint: Path, size_mb: int = 32) -> Iterator[Path]:
    """A fresh ext4 file system on a loop device, mounted at ``mountpoint``."""
    image = mountpoint.with_name(mountpoint.name + ".img")
    with image.open("wb") as f:
        f.truncate(size_mb << 20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 image here: {made.stderr.strip()}")
    loop = _run("losetup", "-f", "--show", str(image))
    if loop.returncode != 0:
        pytest.skip(f"no loop device here (needs CAP_SYS_ADMIN): {loop.stderr.strip()}")
    device = loop.stdout.strip()
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        mounted = _run("mount", "-t", "ext4", device, str(mountpoint))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount ext4 here: {mounted.stderr.strip()}")
        try:
            yield mountpoint
        finally:
            if _run("umount", str(mountpoint)).returncode != 0:
                _run("umount", "-l", str(mountpoint))
    finally:
        _run("losetup", "-d", device)
        image.unlink(missing_ok=True)


def shutdown(mountpoint: Path) -> None:
    """Shut the ext4 file system down as after a fatal I/O error: every write gets EIO."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


@contextlib.contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """``fsfreeze``: the file system stops answering (every write, even of zero bytes, waits)
    until the block ends — a volume that hangs rather than fails."""
    done = _run("fsfreeze", "-f", str(mountpoint))
    if done.returncode != 0:
        pytest.skip(f"cannot freeze a file system here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("fsfreeze", "-u", str(mountpoint))


def set_immutable(path: Path, on: bool) -> None:
    """``chattr ±i``: writes through already open descriptors get EPERM."""
    done = _run("chattr", "+i" if on else "-i", str(path))
    if done.returncode != 0:
        raise RuntimeError(f"chattr failed: {done.stderr.strip()}")


def fill(directory: Path) -> Path:
    """Write a filler file until the volume is full; returns it (delete it to free space)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(chunk)
            f.flush()
    with contextlib.suppress(OSError), filler.open("ab") as f:
        while True:  # the last partial block
            f.write(b"\0" * 512)
            f.flush()
    return filler
