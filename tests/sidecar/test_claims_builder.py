"""Claims the gateway builds pass the verifier and the reference TRACE schema validator;
tampering with the log or the claim is detected."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from cmcp_sidecar.audit import json_digest
from cmcp_sidecar.claims import (
    APPRAISAL_VERIFIER,
    NO_DATA_CLASS,
    ClaimSettings,
    SessionLedger,
    default_subject,
)
from cmcp_sidecar.claims.ledger import highest_data_class
from cmcp_verifier import audit
from cmcp_verifier.canonical import canonical_bytes, parse_json
from cmcp_verifier.claim import TRACE_PROFILE
from cmcp_verifier.digests import ZERO_DIGEST
from cmcp_verifier.report import Status
from cmcp_verifier.trace_schema import trace_v02_schema
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from .trailkit import BUNDLE, call, cmcp_verify, trail

SCHEMA = jsonschema.Draft202012Validator(trace_v02_schema())


async def _session_claim(tmp_path: Path) -> tuple[bytes, bytes, bytes, str]:
    """(claim, full log, session export, session id) for a session with every decision."""
    async with trail(tmp_path) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="sess-1", principal="demo/agent")
        other = t.issuer.claim_session_id(mcp_session_id="sess-2", principal="demo/agent")
        assert sid and other
        for decision in ("allow", "deny", "redact", "error", "allow"):
            await t.log.append(
                call(sid, decision, arguments=json_digest({"q": 2.5}), labels=("confidential",))
            )
            await t.log.append(call(other, "allow", labels=("public",)))
        claim = await t.issuer.close_session(sid)
        assert claim is not None
        return claim, await t.export(), await t.export(sid), sid


async def test_claim_verifies_with_full_log_and_session_export(tmp_path: Path) -> None:
    claim, log, export, sid = await _session_claim(tmp_path)
    for audit_log in (log, export):
        policy = ClaimPolicy(
            allow_software=True, audit_log=audit_log, approved_bundle_hashes=(BUNDLE,)
        )
        report = verify_claim(claim, policy)
        assert report.verified, [c for c in report.checks if c.status is Status.FAIL]
    names = {
        c.name: c.status
        for c in verify_claim(claim, ClaimPolicy(allow_software=True, audit_log=log)).checks
    }
    assert names["audit.chain"] is Status.PASS and names["audit.counters"] is Status.PASS
    envelope = parse_json(claim)
    trace, gateway = envelope["trace"], envelope["gateway"]
    assert claim == canonical_bytes(envelope)  # stored as RFC 8785
    assert trace["eat_profile"] == TRACE_PROFILE
    assert trace["runtime"]["platform"] == "software-only" and "nonce" not in trace["runtime"]
    assert trace["appraisal"] == {"status": "none", "verifier": APPRAISAL_VERIFIER}
    assert trace["policy"] == {"bundle_hash": BUNDLE, "enforcement_mode": "enforce"}
    assert trace["data_class"] == "confidential"
    assert trace["tool_transcript"]["call_count"] == 5
    assert gateway["call_summary"] == {
        "calls": 5,
        "allow": 2,
        "deny": 1,
        "redact": 1,
        "error": 1,
        "blocked": 2,
    }
    assert gateway["session_id"] == sid and gateway["session_kind"] == "mcp-session"
    assert gateway["audit_chain"]["length"] == 10 and gateway["reason"] == "close"


async def test_inner_record_validates_with_the_reference_jsonschema(tmp_path: Path) -> None:
    claim, *_ = await _session_claim(tmp_path)
    trace = parse_json(claim)["trace"]
    SCHEMA.validate(trace)
    extra = dict(trace, session="not allowed here")
    assert not SCHEMA.is_valid(extra)  # no extra members: gateway data lives in the envelope


async def test_claim_verifies_with_the_command_line_tool(tmp_path: Path) -> None:
    claim, log, _, _ = await _session_claim(tmp_path)
    (tmp_path / "claim.json").write_bytes(claim)
    (tmp_path / "export.log").write_bytes(log)
    args = ["claim", str(tmp_path / "claim.json"), "--allow-software", "--audit"]
    done = cmcp_verify(*args, str(tmp_path / "export.log"), "--bundle-hash", BUNDLE)
    assert done.returncode == 0, done.stdout
    no_software = cmcp_verify("claim", str(tmp_path / "claim.json"))
    assert no_software.returncode == 1  # software-only is never accepted silently


async def test_nonce_bound_claim(tmp_path: Path) -> None:
    async with trail(tmp_path) as t:
        sid = t.issuer.claim_session_id(mcp_session_id="n-1", principal="p")
        await t.log.append(call(sid))
        claim = await t.issuer.claim_now(sid or "", b"verifier-nonce-42")
        log = await t.export()
    report = verify_claim(
        claim, ClaimPolicy(allow_software=True, audit_log=log, nonce=b"verifier-nonce-42")
    )
    assert report.verified and any(
        c.name == "claim.nonce" and c.status is Status.PASS for c in report.checks
    )
    wrong = verify_claim(claim, ClaimPolicy(allow_software=True, nonce=b"another-nonce"))
    assert not wrong.verified


async def test_tampering_with_log_or_claim_is_detected(tmp_path: Path) -> None:
    claim, log, export, _ = await _session_claim(tmp_path)
    allow = ClaimPolicy(allow_software=True)

    def rejected(data: bytes, audit_log: bytes | None = None) -> bool:
        policy = ClaimPolicy(allow_software=True, audit_log=audit_log)
        return not verify_claim(data, policy).verified

    # The log: a changed decision, a dropped entry, an entry of the session hidden in export.
    assert rejected(claim, log.replace(b'"decision":"deny"', b'"decision":"allow"', 1))
    lines = log.splitlines(keepends=True)
    assert rejected(claim, b"".join(lines[:2] + lines[3:]))
    assert rejected(claim, b"".join(export.splitlines(keepends=True)[1:]))
    # The claim: counters, bundle, platform — each breaks a signature or a consistency check.
    envelope = json.loads(claim)
    for path, value in (
        (("gateway", "call_summary", "deny"), 0),
        (("trace", "policy", "bundle_hash"), "sha256:" + "1" * 64),
        (("trace", "runtime", "platform"), "amd-sev-snp"),
        (("gateway", "audit_chain", "tip"), "sha256:" + "2" * 64),
    ):
        forged = json.loads(claim)
        node = forged
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert rejected(canonical_bytes(forged)), path
    assert verify_claim(canonical_bytes(envelope), allow).verified


def test_data_class_ordering_and_default() -> None:
    assert highest_data_class({"internal", "restricted", "public"}) == "restricted"
    assert highest_data_class({"mnpi", "communication"}) == NO_DATA_CLASS
    assert highest_data_class(set()) == NO_DATA_CLASS
    ledger = SessionLedger("s", "mcp-session")
    assert ledger.snapshot().data_class == NO_DATA_CLASS


def test_a_ledger_hashes_its_transcript_as_entries_arrive_and_keeps_no_list() -> None:
    ledger, hashes, prev = SessionLedger("s", "mcp-session"), [], ZERO_DIGEST
    for seq, decision in enumerate(["allow", "deny", "redact"] * 100):
        head = {"v": 1, "seq": seq, "prev": prev, "ts_ms": seq, "instance": "gw"}
        line, prev = audit.encode_entry({**head, **call("s", decision).fields()})
        ledger.add(audit.decode_line(line[:-1]))
        hashes.append(prev)
    snapshot = ledger.snapshot()
    assert snapshot.transcript_hash == audit.session_transcript_hash("s", hashes)
    assert snapshot.entries == ledger.entries == 300
    assert snapshot.counts["calls"] == 300 and snapshot.counts["deny"] == 100
    assert ledger.summary.entry_hashes == []  # a busy session costs no memory per entry


def test_subjects() -> None:
    assert (
        default_subject(
            "example.org", instance_id="gw-1", namespace="demo", service_account="agent"
        )
        == "spiffe://example.org/ns/demo/sa/agent"
    )
    assert default_subject(instance_id="gw 1") == "spiffe://cluster.local/cmcp/gateway/gw-1"
    with pytest.raises(ValueError, match="SPIFFE"):
        ClaimSettings(instance_id="i", subject="spiffe://only-a-domain", build_digest=BUNDLE)
