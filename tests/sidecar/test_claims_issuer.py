"""The claim issuer: modes, claim sessions of both protocol eras, storage and serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cmcp_sidecar.claims import DirectorySink, claim_name
from cmcp_sidecar.claims import issuer as issuer_module
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from .trailkit import call, trail


def _verified(claim: bytes, log: bytes) -> bool:
    report = verify_claim(claim, ClaimPolicy(allow_software=True, audit_log=log))
    return report.verified


def _claim_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_session_mode_claim_on_close_stored_served_and_kept(tmp_path: Path) -> None:
    async with trail(tmp_path) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="9f1c2d3e", principal="p")
        assert sid == "9f1c2d3e"
        for _ in range(3):
            await t.log.append(call(sid))
        assert _claim_files(t.claims_dir) == []  # nothing before the session ends
        claim = await t.issuer.close_session(sid)
        assert claim is not None and _verified(claim, await t.export())
        assert await t.issuer.latest(sid) == claim
        assert await t.issuer.close_session(sid) == claim  # closing twice: same claim
        assert t.issuer.claim_session_id(mcp_session_id=sid, principal="p") is None
        files = _claim_files(t.claims_dir)
        assert [f.name for f in files] == [f"{claim_name(sid, 3)}.json"]
        assert files[0].read_bytes() == claim
        assert not list(t.claims_dir.glob(".*.tmp"))  # atomic write left nothing behind
    # A restarted gateway still serves the stored claim.
    async with trail(tmp_path) as t2:
        assert await t2.issuer.latest(sid) == claim
        assert await t2.issuer.latest("unknown") is None


async def test_claims_of_sessions_beyond_the_index_are_found_in_the_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(issuer_module, "INDEX_KEPT", 2)
    sessions = ["s-1", "s-10", "S-1", "s", "s-2"]  # names that share prefixes
    async with trail(tmp_path) as t:
        claims = {}
        for sid in sessions:
            assert t.issuer.claim_session_id(mcp_session_id=sid, principal="p") == sid
            for _ in range(len(claims) + 1):
                await t.log.append(call(sid))
            claims[sid] = await t.issuer.close_session(sid)
        assert len(t.issuer._index) == 2  # only the two newest are held in memory
        for sid in sessions:
            assert await t.issuer.latest(sid) == claims[sid], sid
        assert await t.issuer.latest("s-3") is None


async def test_call_mode_claims_every_call(tmp_path: Path) -> None:
    async with trail(tmp_path, mode="call") as t:
        sid = t.issuer.claim_session_id(mcp_session_id="c1", principal="p")
        for decision in ("allow", "deny", "allow"):
            await t.log.append(call(sid, decision))
            await _until(lambda: t.issuer.stats.issued.get("call", 0) >= t.log.length)
        files = _claim_files(t.claims_dir)
        assert len(files) == 3
        log = await t.export()
        newest = await t.issuer.latest(sid or "")
        assert newest is not None and parse_json(newest)["gateway"]["call_summary"]["calls"] == 3
        assert all(_verified(f.read_bytes(), log) for f in files)


async def test_interval_mode_claims_active_sessions_periodically(tmp_path: Path) -> None:
    async with trail(tmp_path, mode="interval", interval_seconds=0.4) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="i1", principal="p")
        await t.log.append(call(sid))
        await _until(lambda: t.issuer.stats.issued.get("interval", 0) >= 1)
        await t.log.append(call(sid))
        await _until(lambda: t.issuer.stats.issued.get("interval", 0) >= 2)
        log = await t.export()
        lengths = sorted(
            parse_json(f.read_bytes())["gateway"]["audit_chain"]["length"]
            for f in _claim_files(t.claims_dir)
        )
        assert lengths[:2] == [1, 2]
        assert all(_verified(f.read_bytes(), log) for f in _claim_files(t.claims_dir))


async def test_stateless_claim_sessions_per_principal_and_interval(tmp_path: Path) -> None:
    async with trail(tmp_path, interval_seconds=0.8) as t:
        ended: list[str] = []
        t.issuer.stateless_ended = ended.append
        now = time.time()
        a = t.issuer.claim_session_id(mcp_session_id=None, principal="team-a/agent", now=now)
        b = t.issuer.claim_session_id(mcp_session_id=None, principal="team-b/agent", now=now)
        assert a and b and a != b and a.startswith("st-") and a == a.lower()
        assert (
            t.issuer.claim_session_id(mcp_session_id=None, principal="team-a/agent", now=now) == a
        )
        assert claim_name(a, 1) == f"{a}-1"  # usable as a file and object name as is
        await t.log.append(call(a))
        await t.log.append(call(b))
        # At the end of the interval both sessions are claimed without anyone closing them.
        await _until(lambda: t.issuer.stats.issued.get("interval_end", 0) >= 2)
        log = await t.export()
        claims = [await t.issuer.latest(s) for s in (a, b)]
        assert all(c is not None and _verified(c, log) for c in claims)
        assert parse_json(claims[0] or b"")["gateway"]["session_kind"] == "stateless-interval"
        assert sorted(ended) == sorted([a, b])  # what depends on a session may let go of it
        mcp = t.issuer.claim_session_id(mcp_session_id="m1", principal="p") or ""
        await t.log.append(call(mcp))
        await t.issuer.close_session(mcp)  # an MCP session may go on: not told
        assert sorted(ended) == sorted([a, b])
        later = t.issuer.claim_session_id(mcp_session_id=None, principal="team-a/agent")
        assert later != a


async def test_idle_sessions_are_claimed(tmp_path: Path) -> None:
    async with trail(tmp_path, idle_timeout_seconds=0.3) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="idle-1", principal="p")
        await t.log.append(call(sid))
        await _until(lambda: t.issuer.stats.issued.get("idle", 0) == 1)
        claim = await t.issuer.latest(sid or "")
        assert claim is not None and _verified(claim, await t.export())
        assert t.issuer.open_sessions() == []


async def test_entries_after_the_final_claim_get_one_more_claim(tmp_path: Path) -> None:
    async with trail(tmp_path) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="late-1", principal="p")
        await t.log.append(call(sid))
        first = await t.issuer.close_session(sid or "")
        await t.log.append(call(sid))  # a call that was still in flight at close
        await _until(lambda: t.issuer.stats.issued.get("late", 0) == 1)
        newest = await t.issuer.latest(sid or "")
        assert newest != first and newest is not None
        assert parse_json(newest)["gateway"]["call_summary"]["calls"] == 2
        assert _verified(newest, await t.export())


async def test_shutdown_claims_open_sessions(tmp_path: Path) -> None:
    async with trail(tmp_path) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="open-1", principal="p")
        await t.log.append(call(sid))
        issuer = t.issuer
    assert issuer.stats.issued == {"shutdown": 1}
    assert len(_claim_files(tmp_path / "claims")) == 1


async def test_unwritable_claims_dir_is_retried_and_served_meanwhile(tmp_path: Path) -> None:
    async with trail(tmp_path) as t:
        blocker = tmp_path / "blocked"
        blocker.write_text("a file where the claims directory should be")
        t.issuer.sink = DirectorySink(blocker / "claims")
        sid = t.issuer.claim_session_id(mcp_session_id="w1", principal="p")
        await t.log.append(call(sid))
        claim = await t.issuer.close_session(sid or "")
        assert claim is not None and t.issuer.stats.write_failures >= 1
        assert t.issuer.stats.unwritten == 1
        assert await t.issuer.latest(sid or "") == claim  # served from memory
        blocker.unlink()
        blocker.mkdir()
        await _until(lambda: t.issuer.stats.unwritten == 0, timeout=10)
        assert (blocker / "claims" / f"{claim_name(sid or '', 1)}.json").read_bytes() == claim


async def test_a_restart_reads_only_each_sessions_newest_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newest = {}
    async with trail(tmp_path, mode="call") as t:
        for sid, calls in (("c1", 4), ("c2", 3)):
            assert t.issuer.claim_session_id(mcp_session_id=sid, principal="p") == sid
            for _ in range(calls):
                await t.log.append(call(sid))
                await _until(lambda: t.issuer.stats.issued.get("call", 0) >= t.log.length)
            newest[sid] = await t.issuer.latest(sid)
        assert len(_claim_files(t.claims_dir)) == 7
    reads: list[str] = []
    listings: list[int] = []
    get, names = DirectorySink.get, DirectorySink.names

    async def counted_get(self: DirectorySink, name: str) -> bytes | None:
        reads.append(name)
        return await get(self, name)

    async def counted_names(self: DirectorySink) -> list[str]:
        listings.append(1)
        return await names(self)

    monkeypatch.setattr(DirectorySink, "get", counted_get)
    monkeypatch.setattr(DirectorySink, "names", counted_names)
    async with trail(tmp_path, mode="call") as t2:
        assert sorted(reads) == [claim_name("c1", 4), claim_name("c2", 7)]
        for sid, claim in newest.items():
            assert await t2.issuer.latest(sid) == claim
        assert await t2.issuer.latest("c3") is None
        assert len(listings) == 1  # a miss is not looked for in the sink: nothing else is there


async def test_a_restart_finds_claims_of_sessions_whose_names_collide(tmp_path: Path) -> None:
    # "S-1" is not a valid name, so its claims are named "s-1-<hash>-<length>"; a session whose
    # id is that very prefix shares the name prefix.
    twin = claim_name("S-1", 0).removesuffix("-0")
    claims = {}
    async with trail(tmp_path, mode="call") as t:
        for sid in ("S-1", twin, "S-1"):
            assert t.issuer.claim_session_id(mcp_session_id=sid, principal="p") == sid
            await t.log.append(call(sid))
            await _until(lambda: t.issuer.stats.issued.get("call", 0) >= t.log.length)
            claims[sid] = await t.issuer.latest(sid)
    async with trail(tmp_path, mode="call") as t2:
        for sid, claim in claims.items():
            assert claim is not None and await t2.issuer.latest(sid) == claim, sid
