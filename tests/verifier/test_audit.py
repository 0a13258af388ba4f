"""Audit chain format: layout, links, torn tails, tampering."""

from __future__ import annotations

import io

import pytest

from cmcp_verifier import audit
from cmcp_verifier.digests import sha256_digest
from cmcp_verifier.errors import CmcpError, InputError, VerificationError

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


class _Trickle(io.BytesIO):
    """A file that returns at most 7 bytes per read: lines straddle every chunk boundary."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(7)


def test_streaming_reads_the_same_records_as_bytes() -> None:
    data, records = make_log("s", ["allow", "deny", "redact", "error"] * 3)
    streamed = list(audit.iter_records(_Trickle(data)))
    assert [r.hash for r in streamed] == [r.hash for r in records]
    summary = audit.verify_log_file(_Trickle(data))
    assert (summary.length, summary.tip, summary.session_ids) == (
        12,
        records[-1].hash,
        {"s", "other"},
    )
    assert summary.sessions == {}  # only ids are kept when streaming a whole file


def test_streaming_detects_torn_tails_and_endless_lines() -> None:
    data, _ = make_log("s", ["allow", "allow"])
    with pytest.raises(VerificationError) as torn:
        audit.verify_log_file(_Trickle(data[:-5]))
    assert torn.value.code == "audit.torn_tail"
    first_end = data.index(b"\n") + 1
    assert f"at byte {first_end}" in torn.value.message
    with pytest.raises(InputError) as long:
        audit.verify_log_file(io.BytesIO(bytes(20 * 2**20)))
    assert long.value.code == "audit.line_too_long"


def test_a_log_must_start_at_seq_zero() -> None:
    data, _ = make_log("s", ["allow"] * 3)
    with pytest.raises(InputError) as partial:
        audit.verify_log_file(io.BytesIO(data.split(b"\n", 1)[1]))
    assert partial.value.code == "audit.partial"


@pytest.mark.parametrize("count", [0, 1, 3, 200])
@pytest.mark.parametrize(
    "session", ["s-1", "", 'quo"te\\back', "ünïcødé \u2028 \U0001f600", "\x01"]
)
def test_the_incremental_transcript_equals_the_reference(count: int, session: str) -> None:
    hashes = [sha256_digest(str(n).encode()) for n in range(count)]
    hasher = audit.TranscriptHasher(session)
    for n, entry_hash in enumerate(hashes):
        if n == count // 2:  # a claim taken midway does not disturb the rest
            assert hasher.digest() == audit.session_transcript_hash(session, hashes[:n])
        hasher.add(entry_hash)
    assert hasher.entries == count
    assert hasher.digest() == audit.session_transcript_hash(session, hashes)


def test_the_incremental_transcript_refuses_what_is_not_an_entry_hash() -> None:
    hasher = audit.TranscriptHasher("s")
    with pytest.raises(InputError) as caught:
        hasher.add('sha256:"],"x":1')
    assert caught.value.code == "audit.entry_hash" and hasher.entries == 0
