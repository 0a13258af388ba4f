"""Claim verification: every check an auditor needs, each reported by name.

Use :func:`verify_claim` with the claim's bytes and a :class:`ClaimPolicy`; the returned
:class:`~cmcp_verifier.report.Report` is verified only if no check failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import audit
from .binding import MAX_NONCE_BYTES, binding_digest, bundle_measurement, expected_report_data
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
from .errors import CmcpError, InputError
from .evidence import GPU_MEMBER, EvidencePolicy, EvidenceReport, evidence_types
from .evidence.accompanying import verify_accompanying_gpu
from .keys import jwk_thumbprint, load_public_jwk
from .report import ERROR_HINT, Report, bytes_mismatch
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
    audit_log: bytes | Path | None = None  # the log's bytes, or a file to stream

    def now(self) -> dt.datetime:
        return self.evidence.now()


def verify_claim(data: bytes, policy: ClaimPolicy) -> Report:
    """Verify a claim envelope; never raises for bad input (it becomes a failed check)."""
    report = Report(subject="claim")
    try:
        envelope = parse_json(data, max_bytes=MAX_CLAIM_BYTES, what="claim")
    except CmcpError as exc:
        report.fail("claim.parse", f"{exc.code}: {exc.message}", hint=exc.hint or ERROR_HINT)
        return report
    try:
        _verify_envelope(envelope, policy, report)
    except CmcpError as exc:
        report.fail_error(exc)
    return report


def _verify_envelope(env: Any, policy: ClaimPolicy, report: Report) -> None:
    if not _check_shape(env, report):
        return
    trace, gw = env["trace"], env["gateway"]
    report.subject = f"claim {gw.get('session_id', '?')}"
    report.facts.update(  # as stated (the checks below judge them)
        session_id=gw.get("session_id"),
        subject=trace.get("subject"),
        iat=trace.get("iat"),
        bundle_hash=_member(trace, "policy", "bundle_hash"),
        platform=_member(trace, "runtime", "platform"),
    )
    if not _check_profile_and_schema(trace, report):
        return
    key = load_public_jwk(trace["cnf"]["jwk"])
    for name, obj in (("trace.signature", trace), ("envelope.signature", env)):
        report.add(
            name,
            signature_valid(obj, key),
            "Ed25519 by trace.cnf.jwk over RFC 8785",
            failed="expected an Ed25519 signature by trace.cnf.jwk over the RFC 8785 form of "
            f"the {name.split('.')[0]} without 'signature'; it does not verify",
        )
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


def _member(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…``, or None where a step is not an object or lacks the key."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


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
        report.fail(
            "envelope.format",
            f"cmcp_version {str(env['cmcp_version'])[:40]!r} is not the supported {CMCP_VERSION!r}",
        )
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
    length = chain.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        return "gateway.audit_chain.length must be a non-negative integer"
    summary = gw["call_summary"]
    if set(summary) != set(audit.SUMMARY_KEYS) or not all(_count(v) for v in summary.values()):
        return f"gateway.call_summary must hold exactly the counters {list(audit.SUMMARY_KEYS)}"
    if not isinstance(gw["attestation"].get("type"), str):
        return "gateway.attestation.type must be a string"
    if not isinstance(gw["attestation"].get("binding"), dict):
        return "gateway.attestation.binding must be an object"
    if not is_digest(gw["catalog"].get("hash")):
        return "gateway.catalog.hash must be a sha256:<hex> digest"
    if "shadow" in gw:
        return _shadow_shape(gw["shadow"])
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shadow_shape(shadow: Any) -> str | None:
    """``gateway.shadow`` (optional): a candidate bundle's shadow evaluation in the session."""
    if not isinstance(shadow, dict) or not is_digest(shadow.get("bundle_hash")):
        return "gateway.shadow must be an object with a bundle_hash digest"
    if not _count(shadow.get("evaluated")) or not _count(shadow.get("disagreeing")):
        return "gateway.shadow.evaluated/disagreeing must be non-negative integers"
    rows = shadow.get("disagreements")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict)
        and all(isinstance(r.get(k), str) for k in ("tool", "active", "candidate"))
        and _count(r.get("count"))
        and isinstance(r.get("audit_refs"), list)
        and all(is_digest(ref) for ref in r["audit_refs"])
        for r in rows
    ):
        return "gateway.shadow.disagreements must list {tool, active, candidate, count, audit_refs}"
    return None


def _check_profile_and_schema(trace: dict[str, Any], report: Report) -> bool:
    profile = trace.get("eat_profile")
    if profile == TRACE_PROFILE_V01:
        report.fail(
            "trace.profile",
            f"found the superseded TRACE v0.1 profile; expected {TRACE_PROFILE!r}",
        )
        return False
    if not report.add(
        "trace.profile",
        profile == TRACE_PROFILE,
        TRACE_PROFILE,
        failed=f"expected eat_profile {TRACE_PROFILE!r}, found {str(profile)[:80]!r}",
    ):
        return False
    errors = trace_record_errors(trace)
    return report.add(
        "trace.schema",
        not errors,
        "TRACE v0.2 schema",
        failed="not a TRACE v0.2 record: " + "; ".join(errors[:3]),
    )


def _check_consistency(trace: dict[str, Any], gw: dict[str, Any], report: Report) -> None:
    problems = []
    transcript = trace.get("tool_transcript") or {}
    kind = gw["attestation"]["type"]
    for what, stated, expected in (
        ("gateway.bundle.hash", gw["bundle"].get("hash"), trace["policy"]["bundle_hash"]),
        ("gateway.transcript.hash", gw["transcript"].get("hash"), transcript.get("hash")),
        (
            "trace.tool_transcript.call_count",
            transcript.get("call_count"),
            gw["call_summary"]["calls"],
        ),
        (
            f"trace.runtime.platform (evidence type {_short(kind)})",
            trace["runtime"]["platform"],
            PLATFORM_BY_EVIDENCE.get(kind, "unknown"),
        ),
    ):
        if expected is not None and stated != expected:
            problems.append(f"{what} is {_short(stated)}, expected {_short(expected)}")
    if "tool_transcript" not in trace:
        problems.append("trace.tool_transcript is missing")
    report.add(
        "claim.consistency",
        not problems,
        "trace and gateway agree",
        failed="; ".join(problems),
    )


def _short(value: Any) -> str:
    """A value for a failure detail: digests as they are, anything else as a short repr."""
    text = value if is_digest(value) else repr(value)
    return text if len(text) <= 90 else text[:89] + "…"


def _check_freshness(iat: int, policy: ClaimPolicy, report: Report) -> None:
    now = int(policy.now().timestamp())
    if iat > now + CLOCK_SKEW_SECONDS:
        report.fail(
            "claim.freshness",
            f"issued {iat - now} s in the future; expected at most {CLOCK_SKEW_SECONDS} s "
            "ahead (clock skew)",
        )
    elif policy.max_age_seconds == 0:
        report.warn("claim.freshness", f"age {now - iat} s; staleness check disabled")
    else:
        age = now - iat
        report.add(
            "claim.freshness",
            age <= policy.max_age_seconds,
            f"age {age} s (limit {policy.max_age_seconds} s)",
            failed=f"issued {age} s ago; expected at most {policy.max_age_seconds} s (--max-age)",
        )


def _check_bundle(bundle_hash: str, policy: ClaimPolicy, report: Report) -> None:
    if not policy.approved_bundle_hashes:
        report.skip("policy.bundle_hash", f"{bundle_hash} (no approved hash given: --bundle-hash)")
        return
    report.add(
        "policy.bundle_hash",
        bundle_hash in policy.approved_bundle_hashes,
        bundle_hash,
        failed=f"{bundle_hash} is not an approved bundle; expected one of "
        + ", ".join(policy.approved_bundle_hashes),
    )


def _check_nonce(
    trace: dict[str, Any], gw: dict[str, Any], policy: ClaimPolicy, report: Report
) -> bytes:
    binding = gw["attestation"]["binding"]
    nonce = b64url_decode(binding.get("nonce", ""), what="attestation.binding.nonce")
    if len(nonce) > MAX_NONCE_BYTES:
        raise InputError(
            f"attestation.binding.nonce is {len(nonce)} bytes; a nonce has at most "
            f"{MAX_NONCE_BYTES}",
            code="binding.nonce_too_long",
        )
    runtime_nonce = trace["runtime"].get("nonce")
    if runtime_nonce is not None and runtime_nonce != b64url_encode(nonce):
        report.fail(
            "claim.nonce",
            f"trace.runtime.nonce {_short(runtime_nonce)} differs from the bound nonce "
            f"{b64url_encode(nonce)!r} (attestation.binding.nonce)",
        )
    elif policy.nonce is None:
        report.skip("claim.nonce", "no nonce required (--nonce)")
    else:
        report.add(
            "claim.nonce",
            hmac.compare_digest(nonce, policy.nonce),
            "bound nonce equals the verifier's nonce",
            failed="bound nonce (attestation.binding.nonce) is not the verifier's --nonce: "
            + bytes_mismatch(policy.nonce, nonce),
        )
    return nonce


def _check_binding(
    trace: dict[str, Any], gw: dict[str, Any], nonce: bytes, report: Report
) -> bytes:
    expected = binding_digest(
        jwk_thumbprint(trace["cnf"]["jwk"]),
        trace["policy"]["bundle_hash"],
        gw["catalog"]["hash"],
        nonce,
    )
    stated = gw["attestation"]["binding"].get("digest")
    report.add(
        "attestation.binding",
        isinstance(stated, str) and stated == b64url_encode(expected),
        "binding digest = H(key thumbprint, bundle, catalog, nonce)",
        failed=f"attestation.binding.digest is {_short(stated)}; the key, bundle, catalog and "
        f"nonce of this claim give {b64url_encode(expected)!r}",
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
            status = _short(trace["appraisal"].get("status"))
            report.fail(
                "attestation.evidence",
                f"software-only claim with appraisal status {status}, expected 'none'",
            )
        elif policy.allow_software:
            report.warn("attestation.evidence", msg + " (accepted: --allow-software)")
        else:
            report.fail("attestation.evidence", msg + "; expected hardware evidence")
        _check_measurement(trace, None, policy, report)
        return
    kinds = evidence_types()
    if kind not in kinds:
        report.fail(
            "attestation.evidence",
            f"unknown evidence type {_short(kind)}; expected one of {', '.join(sorted(kinds))}",
        )
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
    _check_report_data(kind, sub.report_data, binding, report)
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
    report.add(
        "runtime.platform",
        stated == sub.platform,
        f"{stated!r} is the evidence's platform",
        failed=f"runtime.platform is {_short(stated)}, expected the evidence's platform "
        f"{sub.platform!r}",
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
        report.fail(
            "attestation.bundle_measurement",
            f"policy.bundle_hash is {_short(trace['policy']['bundle_hash'])}, expected a sha256 "
            "digest",
        )
        return
    report.add(
        "attestation.bundle_measurement",
        hmac.compare_digest(recorded, expected),
        "the TEE recorded the claim's policy bundle",
        failed="the bundle the TEE recorded is not the claim's policy.bundle_hash: "
        + bytes_mismatch(expected, recorded),
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


def _check_report_data(kind: str, actual: bytes | None, binding: bytes, report: Report) -> None:
    """The hardware report data must carry the binding digest in the form ``kind`` uses
    (see :mod:`cmcp_verifier.binding`)."""
    if actual is None:
        report.fail("attestation.report_data", "evidence carries no report data")
        return
    expected = expected_report_data(kind, actual, binding)
    report.add(
        "attestation.report_data",
        hmac.compare_digest(actual, expected),
        "hardware report data carries the binding digest",
        failed="hardware report data does not carry this claim's binding digest: "
        + bytes_mismatch(expected, actual),
    )


def _check_measurement(
    trace: dict[str, Any], sub: EvidenceReport | None, policy: ClaimPolicy, report: Report
) -> None:
    stated = trace["runtime"]["measurement"]
    if sub is not None and sub.measurement is not None:
        report.add(
            "runtime.measurement",
            stated == sub.measurement,
            f"runtime.measurement matches the evidence ({sub.measurement})",
            failed=f"runtime.measurement is {_short(stated)}, the evidence measured "
            f"{sub.measurement}",
        )
    pin = policy.evidence.expected_measurement
    if pin is not None:
        report.add(
            "runtime.expected_measurement",
            stated == pin,
            f"pinned {pin}",
            failed=f"runtime.measurement is {_short(stated)}, expected the pinned {pin} "
            "(--expected-measurement)",
        )


class _AuditScan:
    """One pass over the audit log given with a claim, following both readings at once: the
    whole chain (seq 0, 1, 2, … up to at least the claimed length), or a session export
    (which may also start at seq 0 when the session made the first entry)."""

    def __init__(self, session: str, length: int) -> None:
        self.session, self.length = session, length
        self.chain = audit.ChainVerifier(keep_tips_at={length}, summarise_sessions=False)
        self.count = 0
        self.consecutive = True
        self.link_error: CmcpError | None = None
        self.foreign = 0  # entries of other sessions
        self.mine = audit.SessionSummary()  # this session's entries up to the claimed length

    def add(self, record: audit.AuditRecord) -> None:
        entry = record.entry
        self.consecutive = self.consecutive and entry["seq"] == self.count
        if self.consecutive and self.link_error is None:
            try:
                self.chain.add(record)
            except CmcpError as exc:
                self.link_error = exc
        if entry.get("session") != self.session:
            self.foreign += 1
        elif entry["seq"] < self.length:
            self.mine.add(record)
        self.count += 1

    @property
    def full_chain(self) -> bool:
        return self.count > 0 and self.consecutive and self.count >= self.length


def _log_source(log: bytes | Path) -> contextlib.AbstractContextManager[bytes | BinaryIO]:
    if isinstance(log, bytes):
        return contextlib.nullcontext(log)
    try:
        return open(log, "rb")
    except OSError as exc:
        raise InputError(
            f"cannot read audit log {str(log)!r}: {exc.strerror}", code="audit.unreadable"
        ) from None


def _check_audit(
    trace: dict[str, Any], gw: dict[str, Any], log: bytes | Path, report: Report
) -> None:
    chain = gw["audit_chain"]
    scan = _AuditScan(gw["session_id"], chain["length"])
    try:
        with _log_source(log) as source:
            for record in audit.iter_records(source):
                scan.add(record)
    except CmcpError as exc:
        report.fail_error(exc)
        return
    if scan.full_chain:
        if scan.link_error is not None:
            report.fail_error(scan.link_error)
            return
        summary = scan.chain.summary
        tip = summary.tips.get(chain["length"])
        report.add(
            "audit.chain",
            summary.root == chain["root"] and tip == chain["tip"],
            f"{summary.length} entries re-hashed; root and tip at length {chain['length']} "
            "match the claim",
            failed=f"{summary.length} entries re-hashed; the claim states root {chain['root']} "
            f"and tip {chain['tip']} at length {chain['length']}, the log has root "
            f"{summary.root} and tip {tip}",
        )
    else:
        report.skip("audit.chain", "session export: per-entry hashes only (no chain prefix)")
        if scan.foreign:
            report.fail(
                "audit.session",
                f"export contains {scan.foreign} entries of other sessions; expected only "
                f"session {gw['session_id']!r}",
            )
            return
    mine = scan.mine
    transcript = audit.session_transcript_hash(gw["session_id"], mine.entry_hashes)
    report.add(
        "audit.transcript",
        transcript == gw["transcript"].get("hash"),
        f"{len(mine.entry_hashes)} session entries hash to the claimed transcript",
        failed=f"{len(mine.entry_hashes)} session entries hash to {transcript}; the claim "
        f"states {_short(gw['transcript'].get('hash'))}",
    )
    report.add(
        "audit.counters",
        mine.counts == gw["call_summary"],
        f"log counts {mine.counts}",
        failed=f"log counts {mine.counts}; the claim states {gw['call_summary']}",
    )
