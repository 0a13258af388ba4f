"""Claim verification: every check an auditor needs, each reported by name.

Use :func:`verify_claim` with the claim's bytes and a :class:`ClaimPolicy`; the returned
:class:`~cmcp_verifier.report.Report` is verified only if no check failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
from dataclasses import dataclass, field
from typing import Any

from . import audit
from .binding import binding_digest, bundle_measurement, evidence_carries_binding
from .canonical import parse_json
from .claim import (
    CMCP_VERSION,
    ENVELOPE_MEMBERS,
    PLATFORM_BY_EVIDENCE,
    TRACE_PROFILE,
    TRACE_PROFILE_V01,
    signature_valid,
)
from .digests import b64url_decode, b64url_encode, is_digest
from .errors import CmcpError
from .evidence import GPU_MEMBER, EvidencePolicy, EvidenceReport, evidence_types
from .evidence.accompanying import verify_accompanying_gpu
from .keys import jwk_thumbprint, load_public_jwk
from .report import Report
from .trace_schema import trace_record_errors

MAX_CLAIM_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_AGE = 86400
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True)
class ClaimPolicy:
    """What the auditor requires of a claim."""

    approved_bundle_hashes: tuple[str, ...] = ()
    nonce: bytes | None = None
    max_age_seconds: int = DEFAULT_MAX_AGE  # 0 disables the staleness check
    allow_software: bool = False
    evidence: EvidencePolicy = field(default_factory=EvidencePolicy)
    audit_log: bytes | None = None

    def now(self) -> dt.datetime:
        return self.evidence.now()


def verify_claim(data: bytes, policy: ClaimPolicy) -> Report:
    """Verify a claim envelope; never raises for bad input (it becomes a failed check)."""
    report = Report(subject="claim")
    try:
        envelope = parse_json(data, max_bytes=MAX_CLAIM_BYTES, what="claim")
    except CmcpError as exc:
        report.fail("claim.parse", exc.message)
        return report
    try:
        _verify_envelope(envelope, policy, report)
    except CmcpError as exc:
        report.fail(exc.code, exc.message)
    return report


def _verify_envelope(env: Any, policy: ClaimPolicy, report: Report) -> None:
    if not _check_shape(env, report):
        return
    trace, gw = env["trace"], env["gateway"]
    report.subject = f"claim {gw.get('session_id', '?')}"
    report.facts.update(
        session_id=gw.get("session_id"),
        subject=trace.get("subject"),
        iat=trace.get("iat"),
        bundle_hash=trace.get("policy", {}).get("bundle_hash"),
        platform=trace.get("runtime", {}).get("platform"),
    )
    if not _check_profile_and_schema(trace, report):
        return
    key = load_public_jwk(trace["cnf"]["jwk"])
    report.add("trace.signature", signature_valid(trace, key), "Ed25519 by cnf.jwk over RFC 8785")
    report.add("envelope.signature", signature_valid(env, key), "Ed25519 by cnf.jwk over RFC 8785")
    _check_consistency(trace, gw, report)
    _check_freshness(trace["iat"], policy, report)
    _check_bundle(trace["policy"]["bundle_hash"], policy, report)
    nonce = _check_nonce(trace, gw, policy, report)
    binding = _check_binding(trace, gw, nonce, report)
    _check_evidence(trace, gw, binding, policy, report)
    if policy.audit_log is not None:
        _check_audit(trace, gw, policy.audit_log, report)
    else:
        report.skip("audit.log", "no audit log given (--audit)")


def _check_shape(env: Any, report: Report) -> bool:
    if not isinstance(env, dict):
        report.fail("envelope.format", "claim is not a JSON object")
        return False
    missing = sorted(ENVELOPE_MEMBERS - set(env))
    extra = sorted(set(env) - ENVELOPE_MEMBERS)
    if missing or extra:
        what = f"missing {missing}" if missing else f"unexpected members {extra}"
        report.fail("envelope.format", what)
        return False
    if env["cmcp_version"] != CMCP_VERSION:
        report.fail("envelope.format", f"unsupported cmcp_version {env['cmcp_version']!r}")
        return False
    if not isinstance(env["trace"], dict) or not isinstance(env["gateway"], dict):
        report.fail("envelope.format", "trace and gateway must be objects")
        return False
    ok = _gateway_shape_ok(env["gateway"])
    report.add("envelope.format", ok is None, ok or f"cmcp_version {CMCP_VERSION}")
    return ok is None


def _gateway_shape_ok(gw: dict[str, Any]) -> str | None:
    for name in ("audit_chain", "transcript", "call_summary", "bundle", "catalog", "attestation"):
        if not isinstance(gw.get(name), dict):
            return f"gateway.{name} must be an object"
    if not isinstance(gw.get("session_id"), str):
        return "gateway.session_id must be a string"
    chain = gw["audit_chain"]
    if not (is_digest(chain.get("root")) or chain.get("root") is None) or not is_digest(
        chain.get("tip")
    ):
        return "gateway.audit_chain root/tip must be digests"
    if not isinstance(chain.get("length"), int) or chain["length"] < 0:
        return "gateway.audit_chain.length must be a non-negative integer"
    summary = gw["call_summary"]
    if set(summary) != set(audit.SUMMARY_KEYS) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in summary.values()
    ):
        return f"gateway.call_summary must hold exactly the counters {list(audit.SUMMARY_KEYS)}"
    if not isinstance(gw["attestation"].get("type"), str):
        return "gateway.attestation.type must be a string"
    return None


def _check_profile_and_schema(trace: dict[str, Any], report: Report) -> bool:
    profile = trace.get("eat_profile")
    if profile == TRACE_PROFILE_V01:
        report.fail("trace.profile", "TRACE v0.1 profile is superseded; v0.2 verifiers reject it")
        return False
    if not report.add("trace.profile", profile == TRACE_PROFILE, str(profile)):
        return False
    errors = trace_record_errors(trace)
    return report.add("trace.schema", not errors, "; ".join(errors[:3]) or "TRACE v0.2 schema")


def _check_consistency(trace: dict[str, Any], gw: dict[str, Any], report: Report) -> None:
    problems = []
    if gw["bundle"].get("hash") != trace["policy"]["bundle_hash"]:
        problems.append("gateway.bundle.hash differs from trace.policy.bundle_hash")
    transcript = trace.get("tool_transcript")
    if transcript is None:
        problems.append("trace.tool_transcript is missing")
    else:
        if transcript.get("hash") != gw["transcript"].get("hash"):
            problems.append("transcript hash differs between trace and gateway")
        if transcript.get("call_count") != gw["call_summary"]["calls"]:
            problems.append("tool_transcript.call_count differs from call_summary.calls")
    kind = gw["attestation"]["type"]
    expected_platform = PLATFORM_BY_EVIDENCE.get(kind, "unknown")
    if expected_platform is not None and trace["runtime"]["platform"] != expected_platform:
        problems.append(
            f"runtime.platform {trace['runtime']['platform']!r} does not fit evidence type {kind!r}"
        )
    report.add("claim.consistency", not problems, "; ".join(problems) or "trace and gateway agree")


def _check_freshness(iat: int, policy: ClaimPolicy, report: Report) -> None:
    now = int(policy.now().timestamp())
    if iat > now + CLOCK_SKEW_SECONDS:
        report.fail("claim.freshness", f"issued {iat - now} s in the future")
    elif policy.max_age_seconds == 0:
        report.warn("claim.freshness", f"age {now - iat} s; staleness check disabled")
    else:
        age = now - iat
        report.add(
            "claim.freshness",
            age <= policy.max_age_seconds,
            f"age {age} s (limit {policy.max_age_seconds} s)",
        )


def _check_bundle(bundle_hash: str, policy: ClaimPolicy, report: Report) -> None:
    if not policy.approved_bundle_hashes:
        report.skip("policy.bundle_hash", f"{bundle_hash} (no approved hash given: --bundle-hash)")
        return
    ok = bundle_hash in policy.approved_bundle_hashes
    report.add(
        "policy.bundle_hash", ok, bundle_hash if ok else f"{bundle_hash} is not an approved bundle"
    )


def _check_nonce(
    trace: dict[str, Any], gw: dict[str, Any], policy: ClaimPolicy, report: Report
) -> bytes:
    binding = gw["attestation"].get("binding") or {}
    nonce = b64url_decode(binding.get("nonce", ""), what="attestation.binding.nonce")
    runtime_nonce = trace["runtime"].get("nonce")
    if runtime_nonce is not None and runtime_nonce != b64url_encode(nonce):
        report.fail("claim.nonce", "runtime.nonce differs from the bound nonce")
    elif policy.nonce is None:
        report.skip("claim.nonce", "no nonce required (--nonce)")
    else:
        report.add(
            "claim.nonce",
            hmac.compare_digest(nonce, policy.nonce),
            "bound nonce equals the verifier's nonce",
        )
    return nonce


def _check_binding(
    trace: dict[str, Any], gw: dict[str, Any], nonce: bytes, report: Report
) -> bytes:
    catalog_hash = gw["catalog"].get("hash", "")
    if not isinstance(catalog_hash, str):
        catalog_hash = ""
    expected = binding_digest(
        jwk_thumbprint(trace["cnf"]["jwk"]), trace["policy"]["bundle_hash"], catalog_hash, nonce
    )
    stated = (gw["attestation"].get("binding") or {}).get("digest")
    ok = isinstance(stated, str) and stated == b64url_encode(expected)
    report.add(
        "attestation.binding",
        ok,
        "binding digest = H(key thumbprint, bundle, catalog, nonce)"
        if ok
        else "stated binding digest does not match the key, bundle, catalog and nonce",
    )
    return expected


def _check_evidence(
    trace: dict[str, Any], gw: dict[str, Any], binding: bytes, policy: ClaimPolicy, report: Report
) -> None:
    att = gw["attestation"]
    kind = att["type"]
    if kind == "software":
        msg = "software-only: no hardware root of trust"
        if trace["appraisal"].get("status") != "none":
            report.fail("attestation.evidence", "software-only claim with an appraisal status")
        elif policy.allow_software:
            report.warn("attestation.evidence", msg + " (accepted: --allow-software)")
        else:
            report.fail("attestation.evidence", msg)
        return
    kinds = evidence_types()
    if kind not in kinds:
        report.fail("attestation.evidence", f"unknown evidence type {kind!r}")
        return
    if not isinstance(att.get("evidence"), dict):
        report.fail("attestation.evidence", "attestation.evidence must be an object")
        return
    members = dict(att["evidence"])
    gpu = members.pop(GPU_MEMBER, None)
    try:
        # The claim verifier checks the nonce (inside the binding) and the measurement pin
        # itself; the evidence type must not compare raw report data with the raw nonce.
        ev_policy = dataclasses.replace(policy.evidence, nonce=None, expected_measurement=None)
        sub: EvidenceReport = kinds[kind].verify_embedded(members, ev_policy)
    except CmcpError as exc:
        report.fail(f"{kind}.evidence", exc.message)
        return
    report.extend(sub, prefix=f"{kind}.")
    if sub.report_data is None:
        report.fail("attestation.report_data", "evidence carries no report data")
    else:
        report.add(
            "attestation.report_data",
            evidence_carries_binding(kind, sub.report_data, binding),
            "hardware report data carries the binding digest",
        )
    _check_platform(kind, trace, sub, report)
    _check_bundle_measurement(trace, sub, report)
    _check_measurement(trace, sub, policy, report)
    if gpu is not None:
        _check_gpu(gpu, binding, policy, report)


def _check_platform(kind: str, trace: dict[str, Any], sub: EvidenceReport, report: Report) -> None:
    """Types whose platform depends on the evidence (coco, azure-cvm): the evidence says."""
    if PLATFORM_BY_EVIDENCE.get(kind) is not None or sub.platform is None:
        return
    stated = trace["runtime"]["platform"]
    ok = stated == sub.platform
    report.add(
        "runtime.platform", ok, f"{stated!r} {'is' if ok else 'is not'} the evidence's platform"
    )


def _check_bundle_measurement(trace: dict[str, Any], sub: EvidenceReport, report: Report) -> None:
    """Evidence that recorded the bundle in the TEE (the TPM's NV extend index) must show the
    bundle this claim states."""
    recorded = sub.extra.get("bundle_measurement")
    if not isinstance(recorded, bytes):
        return
    try:
        expected = bundle_measurement(trace["policy"]["bundle_hash"])
    except ValueError:
        report.fail("attestation.bundle_measurement", "policy.bundle_hash is not a sha256 digest")
        return
    ok = hmac.compare_digest(recorded, expected)
    report.add(
        "attestation.bundle_measurement",
        ok,
        "the TEE recorded the claim's policy bundle"
        if ok
        else "the bundle the TEE recorded is not the claim's policy.bundle_hash",
    )


def _check_gpu(gpu: Any, binding: bytes, policy: ClaimPolicy, report: Report) -> None:
    """Accompanying GPU evidence: verified as ``gpu-cc``, its SPDM nonce must be the binding."""
    if not isinstance(gpu, dict):
        report.fail("gpu.evidence", "attestation.evidence.gpu must be an object")
        return
    try:
        sub = verify_accompanying_gpu(gpu, binding, policy.evidence)
    except CmcpError as exc:
        report.fail("gpu.evidence", exc.message)
        return
    report.extend(sub, prefix="gpu.")


def _check_measurement(
    trace: dict[str, Any], sub: EvidenceReport, policy: ClaimPolicy, report: Report
) -> None:
    stated = trace["runtime"]["measurement"]
    if sub.measurement is not None:
        report.add(
            "runtime.measurement",
            stated == sub.measurement,
            f"runtime.measurement {'matches' if stated == sub.measurement else 'differs from'}"
            " the evidence",
        )
    pin = policy.evidence.expected_measurement
    if pin is not None:
        report.add("runtime.expected_measurement", stated == pin, f"pinned {pin}")


def _is_chain_prefix(records: list[audit.AuditRecord], length: int) -> bool:
    """A whole chain (seq 0, 1, 2, … up to at least the claimed length), as opposed to a
    session export — which may also start at seq 0 when the session made the first entry."""
    return (
        bool(records)
        and len(records) >= length
        and all(r.entry["seq"] == i for i, r in enumerate(records))
    )


def _check_audit(trace: dict[str, Any], gw: dict[str, Any], log: bytes, report: Report) -> None:
    try:
        records = audit.read_log(log)
    except CmcpError as exc:
        report.fail(exc.code, exc.message)
        return
    session = gw["session_id"]
    chain = gw["audit_chain"]
    full_chain = _is_chain_prefix(records, chain["length"])
    if full_chain:
        try:
            summary = audit.verify_chain(records, keep_tips_at={chain["length"]})
        except CmcpError as exc:
            report.fail(exc.code, exc.message)
            return
        ok = summary.root == chain["root"] and summary.tips.get(chain["length"]) == chain["tip"]
        report.add(
            "audit.chain",
            ok,
            f"{summary.length} entries re-hashed; root and tip at "
            f"length {chain['length']} {'match' if ok else 'do not match'} the claim",
        )
    else:
        report.skip("audit.chain", "session export: per-entry hashes only (no chain prefix)")
    mine = [
        r for r in records if r.entry.get("session") == session and r.entry["seq"] < chain["length"]
    ]
    if not full_chain and any(r.entry.get("session") != session for r in records):
        report.fail("audit.session", "export contains entries of other sessions")
        return
    session_summary = audit.SessionSummary()
    for r in mine:
        session_summary.add(r)
    transcript = audit.session_transcript_hash(session, session_summary.entry_hashes)
    report.add(
        "audit.transcript",
        transcript == gw["transcript"].get("hash"),
        f"{len(mine)} session entries hash to the claimed transcript",
    )
    report.add(
        "audit.counters",
        session_summary.counts == gw["call_summary"],
        f"log counts {session_summary.counts}",
    )
