"""The audit log: durable appends, group commit, reopen/continue, export, bad input."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cmcp_sidecar.audit import (
    LOG_FILE,
    Appended,
    AuditCorrupt,
    AuditLog,
    AuditUnavailable,
    FaultEntry,
    FsyncMode,
    LifecycleEntry,
    OperationEntry,
    json_digest,
)
from cmcp_sidecar.audit import writer as writer_module
from cmcp_verifier import audit
from cmcp_verifier.digests import ZERO_DIGEST
from cmcp_verifier.errors import InputError

from .trailkit import BUNDLE, call, cmcp_verify


@pytest.mark.parametrize("fsync", ["every", "batch"])
async def test_appends_are_chained_durable_and_verifiable(tmp_path: Path, fsync: FsyncMode) -> None:
    log = await AuditLog.open(tmp_path, instance_id="gw-1", fsync=fsync)
    results = [await log.append(call("s1", d)) for d in ("allow", "deny", "redact", "error")]
    assert [r.seq for r in results] == [0, 1, 2, 3]
    assert (log.root, log.tip, log.length) == (results[0].hash, results[-1].hash, 4)
    # Durable on return: the bytes are in the file before close.
    records = audit.read_log((tmp_path / LOG_FILE).read_bytes())
    assert [r.hash for r in records] == [r.hash for r in results]
    assert records[1].entry["instance"] == "gw-1" and records[1].entry["decision"] == "deny"
    await log.close()
    done = cmcp_verify("audit", str(tmp_path / LOG_FILE))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_reopen_verifies_and_continues_the_chain(tmp_path: Path) -> None:
    async with await AuditLog.open(tmp_path, instance_id="gw-1") as log:
        first = [await log.append(call("s1")) for _ in range(3)]
    async with await AuditLog.open(tmp_path, instance_id="gw-1") as log:
        assert (log.root, log.tip, log.length) == (first[0].hash, first[-1].hash, 3)
        assert log.torn == ()
        nxt = await log.append(call("s2"))
        assert nxt.seq == 3
    records = audit.read_log((tmp_path / LOG_FILE).read_bytes())
    assert records[3].entry["prev"] == first[-1].hash
    assert audit.verify_chain(records).length == 4


async def test_group_commit_shares_syncs_and_every_syncs_each(tmp_path: Path) -> None:
    modes: tuple[tuple[FsyncMode, bool], ...] = (("batch", True), ("every", False))
    for fsync, expect_shared in modes:
        log = await AuditLog.open(tmp_path / fsync, instance_id="gw", fsync=fsync)
        results = await asyncio.gather(*(log.append(call(f"s{i % 4}")) for i in range(200)))
        assert sorted(r.seq for r in results) == list(range(200))
        if expect_shared:
            assert log.syncs < 100, f"group commit did not group: {log.syncs} syncs"
        else:
            assert log.syncs == 200
        await log.close()
        summary = audit.verify_chain(audit.read_log((tmp_path / fsync / LOG_FILE).read_bytes()))
        assert summary.length == 200


async def test_batch_delay_is_bounded_and_a_full_batch_does_not_wait(tmp_path: Path) -> None:
    log = await AuditLog.open(
        tmp_path, instance_id="gw", fsync="batch", batch_max_delay_ms=300, batch_max_entries=8
    )
    started = time.monotonic()
    await log.append(call("s"))  # alone: waits for companions, at most the delay
    alone = time.monotonic() - started
    assert 0.25 <= alone < 2.0
    started = time.monotonic()
    await asyncio.gather(*(log.append(call("s")) for _ in range(8)))  # a full batch
    assert time.monotonic() - started < 0.25
    await log.close()


async def test_export_whole_chain_and_one_session(tmp_path: Path) -> None:
    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        for i in range(10):
            await log.append(call("a" if i % 3 else "b"))
        whole = b"".join([line async for line in log.export()])
        only_b = [line async for line in log.export("b")]
    assert whole == (tmp_path / LOG_FILE).read_bytes()
    assert [audit.decode_line(x[:-1]).entry["seq"] for x in only_b] == [0, 3, 6, 9]


async def test_entry_rules_are_enforced_before_anything_is_written(tmp_path: Path) -> None:
    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        with pytest.raises(ValueError, match="chain fields"):
            await log.append({"kind": "call", "seq": 7, "decision": "allow"})
        with pytest.raises(ValueError, match="decision"):
            await log.append({"kind": "call", "session": "s"})
        with pytest.raises(ValueError, match="session"):
            await log.append({"kind": "list", "session": 5})
        # No canonical form (a float where the format allows integers only): refused alone,
        # the chain goes on without a gap.
        with pytest.raises(InputError):
            await log.append({"kind": "lifecycle", "session": None, "ratio": 0.5})
        with pytest.raises(InputError) as err:
            await log.append({"kind": "lifecycle", "session": None, "x": "y" * (1 << 20)})
        assert err.value.code == "audit.entry_too_large"
        ok = await log.append(call("s"))
        assert ok.seq == 0 and log.healthy


def test_builders_produce_entries_the_verifier_reads() -> None:
    entries = [
        call("s", "redact", arguments=json_digest({"q": 1.25}), labels=("internal",)),
        OperationEntry(
            kind="list",
            session="s",
            principal="p",
            method="tools/list",
            decision="allow",
            mode="advisory",
            forwarded=True,
            bundle=BUNDLE,
        ),
        FaultEntry(session=None, error="mcp.batch_rejected", forwarded=False, method="tools/call"),
        LifecycleEntry(event="bundle_loaded", details={"hash": BUNDLE}),
    ]
    prev = ZERO_DIGEST
    lines = []
    for seq, e in enumerate(entries):
        line, prev = audit.encode_entry(
            {"v": 1, "seq": seq, "prev": prev, "ts_ms": 1, "instance": "i", **e.fields()}
        )
        lines.append(line)
    records = audit.read_log(b"".join(lines))
    assert audit.verify_chain(records).sessions["s"].counts["redact"] == 1
    assert "result" not in records[0].entry  # absent optional members are left out
    assert records[3].entry["details"] == {"hash": BUNDLE}


def test_json_digest_is_rfc8785() -> None:
    assert json_digest({"b": 1, "a": [1.0, "x"]}) == json_digest({"a": [1, "x"], "b": 1})
    with pytest.raises(InputError):
        json_digest(float("nan"))


async def _log_with(tmp_path: Path, n: int) -> bytes:
    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        for i in range(n):
            await log.append(call(f"s{i}"))
    return (tmp_path / LOG_FILE).read_bytes()


async def test_corrupted_middle_refuses_to_open_and_names_the_line(tmp_path: Path) -> None:
    data = await _log_with(tmp_path, 5)
    lines = data.splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    (tmp_path / LOG_FILE).write_bytes(b"".join(lines))
    with pytest.raises(AuditCorrupt) as err:
        await AuditLog.open(tmp_path, instance_id="gw")
    assert "line 3" in err.value.message and err.value.code == "audit.corrupt"
    assert "lines 1-2" in (err.value.hint or "")


async def test_removed_entry_and_damaged_last_line_refuse_to_open(tmp_path: Path) -> None:
    data = await _log_with(tmp_path, 5)
    lines = data.splitlines(keepends=True)
    (tmp_path / LOG_FILE).write_bytes(b"".join(lines[:3] + lines[4:]))
    with pytest.raises(AuditCorrupt, match="line 4"):
        await AuditLog.open(tmp_path, instance_id="gw")
    # A complete final line (it has its newline) that does not verify is damage, not a torn
    # write: refused too, never truncated away.
    damaged = [*lines[:4], lines[4][:40] + b"X" + lines[4][41:]]
    (tmp_path / LOG_FILE).write_bytes(b"".join(damaged))
    with pytest.raises(AuditCorrupt, match="line 5"):
        await AuditLog.open(tmp_path, instance_id="gw")
    assert (tmp_path / LOG_FILE).read_bytes() == b"".join(damaged)


async def test_torn_tail_is_set_aside_truncated_and_recorded(tmp_path: Path) -> None:
    data = await _log_with(tmp_path, 3)
    torn = b'{"entry":{"decision":"allow","forwarded":tr'
    (tmp_path / LOG_FILE).write_bytes(data + torn)
    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        assert [t.offset for t in log.torn] == [len(data)]
        assert log.length == 4  # three entries and the recovery entry
        after = await log.append(call("s9"))
    aside = tmp_path / f"{LOG_FILE}.torn-{len(data)}"
    assert aside.read_bytes() == torn
    records = audit.read_log((tmp_path / LOG_FILE).read_bytes())
    recovery = records[3].entry
    assert recovery["kind"] == "recovery" and recovery["reason"] == "torn_tail"
    assert recovery["torn"]["bytes"] == len(torn) and recovery["torn"]["saved_as"] == aside.name
    assert records[4].hash == after.hash
    assert cmcp_verify("audit", str(tmp_path / LOG_FILE)).returncode == 0


async def test_second_writer_on_the_same_chain_is_refused(tmp_path: Path) -> None:
    async with await AuditLog.open(tmp_path, instance_id="gw"):
        with pytest.raises(AuditUnavailable) as err:
            await AuditLog.open(tmp_path, instance_id="gw-2")
        assert err.value.code == "audit.locked"


async def test_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = await AuditLog.open(tmp_path, instance_id="gw")
    await log.close()
    assert not log.healthy
    with pytest.raises(AuditUnavailable) as err:
        await log.append(call("s"))
    assert err.value.code == "audit.closed"


@pytest.mark.parametrize("fsync", ["every", "batch"])
async def test_close_writes_everything_queued_before_it(tmp_path: Path, fsync: FsyncMode) -> None:
    log = await AuditLog.open(tmp_path, instance_id="gw", fsync=fsync, batch_max_delay_ms=20)
    appends = [asyncio.create_task(log.append(call("s"))) for _ in range(40)]
    await asyncio.sleep(0)  # every append is queued; none can be durable yet
    await log.close()
    seqs = [appended.seq for appended in await asyncio.gather(*appends)]
    assert seqs == list(range(40))
    assert audit.verify_chain(audit.read_log((tmp_path / LOG_FILE).read_bytes())).length == 40


async def test_cancelled_appender_does_not_disturb_the_chain(tmp_path: Path) -> None:
    async with await AuditLog.open(tmp_path, instance_id="gw", batch_max_delay_ms=50) as log:
        task = asyncio.create_task(log.append(call("s")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        nxt = await log.append(call("s"))
    records = audit.read_log((tmp_path / LOG_FILE).read_bytes())
    assert audit.verify_chain(records).length == nxt.seq + 1


async def test_then_follows_every_durable_entry_even_for_a_cancelled_appender(
    tmp_path: Path,
) -> None:
    done: list[Appended] = []

    def broken(appended: Appended) -> None:
        raise RuntimeError("follow-up bug")

    async with await AuditLog.open(tmp_path, instance_id="gw", batch_max_delay_ms=50) as log:
        task = asyncio.create_task(log.append(call("s"), then=done.append))
        await asyncio.sleep(0.01)  # queued, held by the batch delay
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        nxt = await log.append(call("s"), then=broken)  # its bug does not hold it up
        assert done == [Appended(nxt.seq - 1, done[0].hash)]


async def test_observers_see_durable_records_in_order_and_cannot_block_appends(
    tmp_path: Path,
) -> None:
    seen: list[int] = []

    def broken(record: audit.AuditRecord) -> None:
        raise RuntimeError("observer bug")

    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        log.subscribe(lambda r: seen.append(r.entry["seq"]))
        log.subscribe(broken)
        results = await asyncio.gather(*(log.append(call("s")) for _ in range(20)))
        assert sorted(r.seq for r in results) == list(range(20))
    assert seen == list(range(20))


class _SyncThreads:
    """Which threads ran ``fdatasync`` on the log (instrumentation around the real call;
    ``delay_s`` stands for a slow disk, which tmpfs cannot produce)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        self.delay_s = 0.0
        real = os.fdatasync

        def recorded(fd: int) -> None:
            self.names.append(threading.current_thread().name)
            if self.delay_s:
                time.sleep(self.delay_s)
            real(fd)

        monkeypatch.setattr(writer_module.os, "fdatasync", recorded)


@pytest.mark.parametrize("fsync", ["every", "batch"])
async def test_an_idle_loop_writes_and_syncs_its_entries_itself(
    tmp_path: Path, fsync: FsyncMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _SyncThreads(monkeypatch)
    asked: list[int] = []

    def idle(entries: int) -> bool:
        asked.append(entries)
        return True

    async with await AuditLog.open(tmp_path, instance_id="gw", fsync=fsync) as log:
        log.sync_here_when(idle)
        first = await log.append(call("s"))
        group = await asyncio.gather(*(log.append(call("s")) for _ in range(10)))
        assert first.seq == 0 and [a.seq for a in group] == list(range(1, 11))
        assert (log.length, log.tip) == (11, group[-1].hash)
    assert asked == [1, 10]
    loop_thread = threading.current_thread().name
    assert syncs.names == [loop_thread] * (11 if fsync == "every" else 2)
    records = audit.read_log((tmp_path / LOG_FILE).read_bytes())
    assert audit.verify_chain(records).length == 11


async def test_a_busy_loop_leaves_syncing_to_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _SyncThreads(monkeypatch)
    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        log.sync_here_when(lambda entries: entries >= 5)  # "5 requests in flight"
        alone = await log.append(call("s"))  # 1 < 5: others could run meanwhile
        together = await asyncio.gather(*(log.append(call("s")) for _ in range(5)))
        assert alone.seq == 0 and [a.seq for a in together] == [1, 2, 3, 4, 5]
    assert syncs.names == ["cmcp-audit-writer", threading.current_thread().name]


async def test_storage_that_syncs_fast_is_synced_on_the_loop_even_when_others_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    monkeypatch.setattr(writer_module, "PROBE_EVERY", 4)
    syncs = _SyncThreads(monkeypatch)
    loop, thread = threading.current_thread().name, "cmcp-audit-writer"
    with tempfile.TemporaryDirectory(dir=shm) as directory:
        async with await AuditLog.open(Path(directory), instance_id="gw") as log:
            log.sync_here_when(lambda entries: False)  # always others in flight
            for _ in range(8):
                await log.append(call("s"))
            # Four groups on the thread, then one timed on the loop: tmpfs is fast.
            assert syncs.names == [thread] * 4 + [loop] * 4
            syncs.delay_s = 0.001  # the storage slows down: back to the thread
            for _ in range(8):
                await log.append(call("s"))
            assert syncs.names[8:] == [loop] + [thread] * 4 + [loop] + [thread] * 2
            assert log.syncs_by_place() == {"loop": 6, "thread": 10}


async def test_a_broken_idle_hint_falls_back_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _SyncThreads(monkeypatch)

    def broken(entries: int) -> bool:
        raise RuntimeError("hint bug")

    async with await AuditLog.open(tmp_path, instance_id="gw") as log:
        log.sync_here_when(broken)
        assert (await log.append(call("s"))).seq == 0
    assert syncs.names == ["cmcp-audit-writer"]


async def test_a_storage_failure_on_the_loop_fails_the_group_and_later_appends(
    tmp_path: Path,
) -> None:
    log = await AuditLog.open(tmp_path, instance_id="gw")
    log.sync_here_when(lambda entries: True)
    await log.append(call("s"))
    (tmp_path / LOG_FILE).unlink()
    results = await asyncio.gather(
        *(log.append(call("s")) for _ in range(3)), return_exceptions=True
    )
    assert [getattr(r, "code", r) for r in results] == ["audit.file_removed"] * 3
    assert log.failure is not None and log.failure.code == "audit.file_removed"
    with pytest.raises(AuditUnavailable):
        await log.append(call("s"))
    await log.close()


async def test_the_loop_keeps_groups_within_batch_max_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _SyncThreads(monkeypatch)
    async with await AuditLog.open(tmp_path, instance_id="gw", batch_max_entries=4) as log:
        log.sync_here_when(lambda entries: True)
        done = await asyncio.gather(*(log.append(call("s")) for _ in range(10)))
        assert [a.seq for a in done] == list(range(10))
    assert len(syncs.names) == 3  # 4 + 4 + 2
