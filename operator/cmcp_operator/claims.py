"""Claims found in the cluster: verified once, judged against each gateway's policy.

A claim ConfigMap (written by the sidecar's Kubernetes sink) is read and verified with
:func:`cmcp_verifier.verify_claim.verify_claim` when it appears — signatures, TRACE schema,
envelope/trace consistency, binding, hardware evidence — under a lenient policy (any bundle,
software accepted, no age limit) so that result never changes. What depends on the
McpGateway (the pinned bundle hash, whether software claims count, the maximum age) is
applied by :func:`judge` whenever the status is computed, so re-pinning a gateway re-judges
the claims already there. A ConfigMap that is not a readable claim is kept as an
``unreadable`` record with a precise reason; nothing here raises for bad input.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cmcp_verifier import audit
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from . import api

# Under this policy the checks that depend on a gateway (approved bundle, software claims,
# age) skip or warn, so every failed check is a failure of the claim itself.
LENIENT = ClaimPolicy(max_age_seconds=0, allow_software=True)


@dataclass(frozen=True)
class ClaimRecord:
    """One claim ConfigMap as read and verified."""

    namespace: str
    name: str  # the ConfigMap's
    gateway: str
    pod: str
    pod_uid: str
    readable: bool
    problem: str = ""  # why it is unreadable or failed verification (first failed check)
    session: str = ""
    iat: int = 0
    length: int = 0
    bundle_hash: str = ""
    platform: str = ""
    evidence_type: str = ""
    instance_id: str = ""
    crypto_ok: bool = False
    summary: Mapping[str, int] = field(default_factory=dict)

    @property
    def software(self) -> bool:
        return self.evidence_type == "software"


@dataclass(frozen=True)
class Verdict:
    verified: bool
    attested: bool
    reason: str  # a condition reason, "" when verified
    message: str


def read(cm: Mapping[str, Any]) -> ClaimRecord:
    """Parse and verify one claim ConfigMap."""
    meta = cm.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    owner: Mapping[str, Any] = next(
        (o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"), {}
    )
    base = ClaimRecord(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        gateway=str(labels.get(api.LABEL_GATEWAY, "")),
        pod=str(annotations.get(api.LABEL_POD) or owner.get("name") or ""),
        pod_uid=str(owner.get("uid", "")),
        readable=False,
    )
    text = (cm.get("data") or {}).get(api.CLAIM_KEY)
    if not isinstance(text, str):
        keys = sorted((cm.get("data") or {}).keys())
        return replace(base, problem=f"no {api.CLAIM_KEY} key (keys: {keys})")
    report = verify_claim(text.encode("utf-8", "surrogatepass"), LENIENT)
    facts = report.facts
    failures = [c for c in report.checks if c.status is Status.FAIL]
    if not facts.get("session_id") or any(
        c.name in ("claim.parse", "envelope.format") for c in failures
    ):
        why = failures[0] if failures else None
        detail = f"{why.name}: {why.detail}" if why else "not a claim envelope"
        return replace(base, problem=detail)
    envelope = _loads(text)
    gateway = envelope.get("gateway", {})
    crypto_failures = failures
    return replace(
        base,
        readable=True,
        problem=f"{crypto_failures[0].name}: {crypto_failures[0].detail}"
        if crypto_failures
        else "",
        session=str(facts.get("session_id", "")),
        iat=_int(facts.get("iat")),
        length=_int((gateway.get("audit_chain") or {}).get("length")),
        bundle_hash=str(facts.get("bundle_hash") or ""),
        platform=str(facts.get("platform") or ""),
        evidence_type=str((gateway.get("attestation") or {}).get("type", "")),
        instance_id=str(gateway.get("instance_id", "")),
        crypto_ok=not crypto_failures,
        summary={k: _int((gateway.get("call_summary") or {}).get(k)) for k in audit.SUMMARY_KEYS},
    )


def _loads(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def judge(
    record: ClaimRecord,
    *,
    pinned_hash: str,
    allow_software: bool,
    max_age_seconds: int,
    now: float | None = None,
) -> Verdict:
    """Is this claim verified under the gateway's policy? (reason names the first problem)"""
    if not record.readable:
        return Verdict(False, False, "ClaimUnreadable", f"{record.name}: {record.problem}")
    if not record.crypto_ok:
        return Verdict(False, False, "ClaimRejected", f"{record.name}: {record.problem}")
    if record.instance_id and record.pod and record.instance_id != record.pod:
        return Verdict(
            False,
            False,
            "ClaimOriginMismatch",
            f"{record.name}: made by gateway instance {record.instance_id!r}, stored for pod"
            f" {record.pod!r}",
        )
    if record.bundle_hash != pinned_hash:
        return Verdict(
            False,
            False,
            "BundleHashMismatch",
            f"pod {record.pod}: claim {record.name} names bundle {record.bundle_hash}, the"
            f" gateway pins {pinned_hash}",
        )
    attested = not record.software
    if record.software and not allow_software:
        return Verdict(
            False,
            False,
            "SoftwareClaimNotAllowed",
            f"pod {record.pod}: claim {record.name} is software-only (no hardware evidence)"
            " and spec.attestation.allowSoftware is false",
        )
    age = int(now if now is not None else time.time()) - record.iat
    if max_age_seconds and age > max_age_seconds:
        return Verdict(
            False,
            attested,
            "ClaimStale",
            f"pod {record.pod}: newest claim {record.name} is {age} s old"
            f" (limit {max_age_seconds} s)",
        )
    return Verdict(True, attested, "", "")


class ClaimBook:
    """Every claim ConfigMap the operator has seen, by namespace and gateway."""

    def __init__(self) -> None:
        self._by_gateway: dict[tuple[str, str], dict[str, ClaimRecord]] = {}
        self._where: dict[tuple[str, str], tuple[str, str]] = {}

    def observe(self, cm: Mapping[str, Any]) -> ClaimRecord:
        record = read(cm)
        key = (record.namespace, record.name)
        self.forget(record.namespace, record.name)
        gw = (record.namespace, record.gateway)
        self._by_gateway.setdefault(gw, {})[record.name] = record
        self._where[key] = gw
        return record

    def forget(self, namespace: str, name: str) -> tuple[str, str] | None:
        gw = self._where.pop((namespace, name), None)
        if gw is not None:
            bucket = self._by_gateway.get(gw, {})
            bucket.pop(name, None)
            if not bucket:
                self._by_gateway.pop(gw, None)
        return gw

    def of_gateway(self, namespace: str, gateway: str) -> list[ClaimRecord]:
        return list(self._by_gateway.get((namespace, gateway), {}).values())

    def __len__(self) -> int:
        return len(self._where)


def latest_per(records: Iterable[ClaimRecord], key: str) -> dict[str, ClaimRecord]:
    """The newest record per pod (``key="pod"``) or session (``key="session"``)."""
    out: dict[str, ClaimRecord] = {}
    for rec in records:
        k = getattr(rec, key)
        cur = out.get(k)
        if cur is None or (rec.iat, rec.length, rec.name) > (cur.iat, cur.length, cur.name):
            out[k] = rec
    return out


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
