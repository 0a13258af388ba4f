"""Fuzzing the core formats: strict JSON, claims, audit lines. No input may crash them."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier import audit
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import CmcpError
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..verifier.claimfactory import make_claim
from ._settings import fuzz_settings

CLAIM = json.dumps(make_claim()[0]).encode()


@fuzz_settings
@given(st.binary(max_size=512))
def test_parse_json_never_crashes(data: bytes) -> None:
    with contextlib.suppress(CmcpError):
        parse_json(data)


@fuzz_settings
@given(st.data())
def test_mutated_claims_are_rejected_cleanly(data: st.DataObject) -> None:
    blob = bytearray(CLAIM)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    report = verify_claim(bytes(blob), ClaimPolicy(allow_software=True))
    if bytes(blob) != CLAIM:
        # Whitespace-only changes leave the claim valid; anything else must be rejected.
        try:
            same = json.loads(bytes(blob)) == json.loads(CLAIM)
        except ValueError:
            same = False
        assert report.verified == same


@fuzz_settings
@given(st.binary(max_size=400))
def test_audit_lines_never_crash(data: bytes) -> None:
    with contextlib.suppress(CmcpError):
        audit.read_log(data)
