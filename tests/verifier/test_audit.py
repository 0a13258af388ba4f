"""Audit chain format: layout, links, torn tails, tampering."""

from __future__ import annotations

import pytest

from cmcp_verifier import audit
from cmcp_verifier.errors import CmcpError, VerificationError

from .claimfactory import make_log


def test_chain_verifies_and_summarises() -> None:
    _, records = make_log("s", ["allow", "deny", "redact", "error"])
    summary = audit.verify_chain(records)
    assert (
        summary.length == 4 and summary.root == records[0].hash and summary.tip == records[-1].hash
    )
    assert summary.sessions["s"].counts["calls"] == 2


def test_torn_tail_is_detected() -> None:
    data, _ = make_log("s", ["allow", "allow"])
    with pytest.raises(VerificationError) as err:
        audit.read_log(data[:-5])
    assert err.value.code == "audit.torn_tail"


def test_every_byte_flip_is_detected() -> None:
    data, _ = make_log("s", ["allow", "deny", "allow"])
    for i in range(len(data)):
        if data[i : i + 1] == b"\n":
            continue
        flipped = bytearray(data)
        flipped[i] ^= 0x04
        with pytest.raises(CmcpError):
            audit.verify_chain(audit.read_log(bytes(flipped)))


def test_removed_or_reordered_entry_breaks_the_chain() -> None:
    data, _ = make_log("s", ["allow"] * 4)
    lines = data.splitlines(keepends=True)
    for broken in (lines[:1] + lines[2:], [lines[1], lines[0], *lines[2:]]):
        with pytest.raises(VerificationError):
            audit.verify_chain(audit.read_log(b"".join(broken)))
