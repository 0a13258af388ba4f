"""Claim ConfigMaps: read and verified once, judged per gateway; garbage never raises."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_operator.claims import ClaimBook, judge, latest_per, read
from tests.verifier.claimfactory import BUNDLE, make_claim

OTHER = "sha256:" + "0" * 64


def _cm(
    claim: Any, *, name: str = "claim-pod-a-s1-5", pod: str = "i-1", text: str | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"cmcp.dev/component": "claim", "cmcp.dev/gateway": "gw"},
            "annotations": {"cmcp.dev/pod": pod},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": "u-1"}],
        },
        "data": {"claim.json": text if text is not None else json.dumps(claim)},
    }


def _judge(rec: Any, **kw: Any) -> Any:
    args = {"pinned_hash": BUNDLE, "allow_software": True, "max_age_seconds": 3600}
    args.update(kw)
    return judge(rec, **args)


def test_good_software_claim() -> None:
    claim, _ = make_claim()
    rec = read(_cm(claim))
    assert rec.readable and rec.crypto_ok, rec.problem
    assert (rec.gateway, rec.pod, rec.pod_uid, rec.session) == ("gw", "i-1", "u-1", "s1")
    assert rec.bundle_hash == BUNDLE and rec.software
    assert rec.summary["calls"] == sum(1 for _ in range(5) if _ % 3)  # the session's entries
    verdict = _judge(rec)
    assert verdict.verified and not verdict.attested


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"pinned_hash": OTHER}, "BundleHashMismatch"),
        ({"allow_software": False}, "SoftwareClaimNotAllowed"),
        ({"max_age_seconds": 10, "now": time.time() + 3600}, "ClaimStale"),
    ],
)
def test_policy_of_the_gateway(kwargs: dict[str, Any], reason: str) -> None:
    claim, _ = make_claim()
    verdict = _judge(read(_cm(claim)), **kwargs)
    assert not verdict.verified and verdict.reason == reason
    if reason == "BundleHashMismatch":
        assert BUNDLE in verdict.message and OTHER in verdict.message


def test_tampered_claim_rejected() -> None:
    claim, _ = make_claim()
    claim["gateway"]["call_summary"]["deny"] += 1
    rec = read(_cm(claim))
    assert rec.readable and not rec.crypto_ok
    verdict = _judge(rec)
    assert verdict.reason == "ClaimRejected" and "signature" in verdict.message


def test_claim_from_another_instance() -> None:
    claim, _ = make_claim()  # instance_id "i-1"
    verdict = _judge(read(_cm(claim, pod="agent-7d9f")))
    assert verdict.reason == "ClaimOriginMismatch"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "claim.parse"),
        ("[1, 2]", "envelope.format"),
        ('{"cmcp_version": "1.0"}', "envelope.format"),
        ("", "claim.parse"),
        ("\udcff" * 3, "claim.parse"),
    ],
)
def test_garbage_is_unreadable_never_raises(text: str, problem: str) -> None:
    rec = read(_cm(None, text=text))
    assert not rec.readable and rec.problem.startswith(problem), rec.problem
    assert _judge(rec).reason == "ClaimUnreadable"


def test_missing_key_and_missing_metadata() -> None:
    rec = read({"metadata": {"name": "x"}, "data": {"other": "1"}})
    assert not rec.readable and "no claim.json key" in rec.problem
    assert not read({}).readable


def test_book_and_latest() -> None:
    key = Ed25519PrivateKey.generate()
    book = ClaimBook()
    old, _ = make_claim(key, iat=int(time.time()) - 100)
    new, _ = make_claim(key, iat=int(time.time()))
    other, _ = make_claim(key, session="s2")
    for name, claim in (("c-old", old), ("c-new", new), ("c-other", other)):
        book.observe(_cm(claim, name=name))
    records = book.of_gateway("ns", "gw")
    assert len(book) == 3 and len(records) == 3
    assert latest_per(records, "pod")["i-1"].name in ("c-new", "c-other")
    assert latest_per(records, "session")["s1"].name == "c-new"
    assert book.forget("ns", "c-new") == ("ns", "gw")
    assert book.forget("ns", "c-new") is None
    assert {r.name for r in book.of_gateway("ns", "gw")} == {"c-old", "c-other"}
