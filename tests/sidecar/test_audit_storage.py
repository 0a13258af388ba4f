"""Audit storage failures, produced for real: a full tmpfs (ENOSPC), a read-only mount (EROFS),
a directory the gateway's user may not write (EACCES), and the log file removed underneath.

Mounting needs CAP_SYS_ADMIN (root in CI and here); without it those tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmcp_sidecar.audit import LOG_FILE, AuditLog, AuditUnavailable, LifecycleEntry
from cmcp_verifier import audit

from .trailkit import call, cmcp_verify


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def _big(i: int) -> LifecycleEntry:
    return LifecycleEntry(event="filler", details={"n": i, "pad": "x" * 6000})


@pytest.mark.parametrize("where", ["thread", "loop"])
async def test_disk_full_fails_every_pending_and_later_append(tmp_path: Path, where: str) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        log = await AuditLog.open(mnt, instance_id="gw")
        log.sync_here_when(lambda entries: where == "loop")
        acked: list[int] = []
        errors: list[AuditUnavailable] = []

        async def one(i: int) -> None:
            try:
                acked.append((await log.append(_big(i))).seq)
            except AuditUnavailable as exc:
                errors.append(exc)

        await asyncio.gather(*(one(i) for i in range(120)))  # ~720 KiB into 256 KiB
        assert errors, "the tmpfs never filled up"
        assert {e.code for e in errors} == {"audit.disk_full"}
        assert not log.healthy and log.failure is not None
        assert log.failure.code == "audit.disk_full" and "full" in log.failure.message
        with pytest.raises(AuditUnavailable) as later:
            await log.append(call("s"))
        assert later.value.code == "audit.disk_full"
        await log.close()
        # Space comes back: the chain reopens, verified; a torn tail (if the failed write left
        # one) is set aside and recorded; everything acknowledged is still there.
        assert _run("mount", "-o", "remount,size=4m", str(mnt)).returncode == 0
        async with await AuditLog.open(mnt, instance_id="gw") as log:
            assert log.length >= len(acked)
            await log.append(call("s"))
        records = audit.read_log((mnt / LOG_FILE).read_bytes())
        assert {r.entry["seq"] for r in records} >= set(acked)
        assert cmcp_verify("audit", str(mnt / LOG_FILE)).returncode == 0


async def test_read_only_storage_refuses_to_open(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        async with await AuditLog.open(mnt, instance_id="gw") as log:
            await log.append(call("s"))
        assert _run("mount", "-o", "remount,ro", str(mnt)).returncode == 0
        with pytest.raises(AuditUnavailable) as err:
            await AuditLog.open(mnt, instance_id="gw")
        assert err.value.code == "audit.read_only"
        assert "read-only" in err.value.message and str(mnt) in err.value.message


def test_unwritable_directory_gives_a_clear_error(tmp_path: Path) -> None:
    """As an unprivileged user (root bypasses permissions, so the child drops to nobody)."""
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir(mode=0o755)  # owned by root: nobody may not create the log in it
    os.chmod(tmp_path, 0o755)
    script = textwrap.dedent(
        f"""
        import asyncio, concurrent.futures.thread, json, os
        from cmcp_sidecar.audit import AuditLog, AuditUnavailable
        # Everything is imported before dropping privileges (the interpreter lives under /root).
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        try:
            asyncio.run(AuditLog.open({str(audit_dir)!r}, instance_id="gw"))
        except AuditUnavailable as exc:
            print(json.dumps({{"code": exc.code, "message": exc.message, "hint": exc.hint}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)
    assert error["code"] == "audit.permission_denied"
    assert str(audit_dir) in error["message"] and "Permission denied" in error["message"]
    assert "write access" in error["hint"]


async def test_log_file_removed_while_open(tmp_path: Path) -> None:
    log = await AuditLog.open(tmp_path, instance_id="gw")
    await log.append(call("s"))
    (tmp_path / LOG_FILE).unlink()
    with pytest.raises(AuditUnavailable) as err:
        await log.append(call("s"))
    assert err.value.code == "audit.file_removed"
    assert not log.healthy and log.failure is not None
    assert log.failure.code == "audit.file_removed"
    await log.close()
