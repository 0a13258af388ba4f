"""Fuzzing the TPM parsers: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC (and the AK/signature
loaders), PCR files and go-tpm-tools attestation JSON (TCG event logs: test_fuzz_eventlog.py).
Inputs are random bytes and mutations of the real GCE sample; the only exception allowed out
is InputError, and a mutated quote never verifies."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence._common import load_certificate
from cmcp_verifier.evidence.tpm import verify_quote, verify_quotes
from cmcp_verifier.evidence.tpm_gotpm import parse_gotpm_attestation
from cmcp_verifier.evidence.tpm_keys import load_ak_public, load_signature
from cmcp_verifier.evidence.tpm_pcrs import parse_pcr_file, pcrs_to_json
from cmcp_verifier.evidence.tpm_structures import (
    parse_tpms_attest,
    parse_tpmt_public,
    parse_tpmt_signature,
)

from ..conftest import EVIDENCE
from ._json_mutate import edited_json
from ._settings import fuzz_settings

SAMPLE = parse_gotpm_attestation(
    (EVIDENCE / "tpm" / "gce-cos-85-nonce9009.attestation.json").read_bytes()
)
QUOTE = SAMPLE.quotes[1]  # the SHA-256 bank
assert isinstance(QUOTE.pcrs, dict)
PCRS = QUOTE.pcrs
AK = load_ak_public(SAMPLE.ak_public)
SELECTION = parse_tpms_attest(QUOTE.attest).pcr_selection
LOG = SAMPLE.event_log or b""
PCR_FILES = [
    b"".join(PCRS[0x000B][i] for i in range(24)),
    json.dumps(pcrs_to_json(PCRS)).encode(),
    ("sha256:\n" + "".join(f"  {i} : 0x{v.hex()}\n" for i, v in PCRS[0x000B].items())).encode(),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes changed, and maybe cut short or extended."""
    blob = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if blob:
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from(["none", "truncate", "extend"]))
    if cut == "truncate" and blob:
        del blob[draw(st.integers(0, len(blob) - 1)) :]
    elif cut == "extend":
        blob += draw(st.binary(max_size=16))
    return bytes(blob)


def _inputs(seeds: list[bytes], max_size: int = 600) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=max_size), mutated(seeds))


@fuzz_settings
@given(_inputs([q.attest for q in SAMPLE.quotes]))
def test_tpms_attest(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_tpms_attest(data)


@fuzz_settings
@given(_inputs([q.signature for q in SAMPLE.quotes]))
def test_tpmt_signature(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_tpmt_signature(data)
    with contextlib.suppress(InputError):
        load_signature(data, AK)


@fuzz_settings
@given(_inputs([SAMPLE.ak_public, SAMPLE.ak_cert or b""], max_size=1500))
def test_tpmt_public_and_ak_loader(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_tpmt_public(data)
    with contextlib.suppress(InputError):
        load_ak_public(data)


@fuzz_settings
@given(_inputs(PCR_FILES, max_size=2000))
def test_pcr_file(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_pcr_file(data, SELECTION)
    with contextlib.suppress(InputError):
        parse_pcr_file(data)


@fuzz_settings
@given(st.data())
def test_mutated_quote_never_verifies(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["attest", "signature"]))
    seed = QUOTE.attest if which == "attest" else QUOTE.signature
    blob = data.draw(mutated([seed]))
    attest, sig = (blob, QUOTE.signature) if which == "attest" else (QUOTE.attest, blob)
    report = verify_quote(attest, sig, AK, pcrs=PCRS, nonce=b"\x90\x09", event_log=LOG)
    assert report.verified == (blob == seed)


ORIGINAL_CERT = load_certificate(SAMPLE.ak_cert or b"", what="AK certificate")


@fuzz_settings
@given(mutated([SAMPLE.ak_cert or b""]))
def test_mutated_ak_certificate_never_verifies(cert: bytes) -> None:
    report = verify_quote(QUOTE.attest, QUOTE.signature, None, ak_cert=cert, pcrs=PCRS)
    if report.verified:
        # Only an encoding change outside the signed part may pass (the 100 000 run found one:
        # a non-zero "unused bits" count in the signature BIT STRING, which cryptography reads
        # as the same signature); the signed content and the signature must be the original.
        mutant = load_certificate(cert, what="mutant")
        assert mutant.tbs_certificate_bytes == ORIGINAL_CERT.tbs_certificate_bytes
        assert mutant.signature == ORIGINAL_CERT.signature


ATTESTATION = json.loads((EVIDENCE / "tpm" / "gce-cos-85-nonce9009.attestation.json").read_bytes())


@fuzz_settings
@given(edited_json(ATTESTATION))
def test_structured_gotpm_attestations(edit: tuple[str, bool]) -> None:
    """go-tpm-tools attestation JSON with other types, huge numbers, duplicate keys, … then
    the whole verification (quotes, AK certificate chain, event log replay)."""
    try:
        att = parse_gotpm_attestation(edit[0].encode("utf-8", "surrogatepass"))
    except InputError:
        return
    with contextlib.suppress(InputError):
        verify_quotes(att.quotes, att.ak_public, nonce=b"\x90\x09", event_log=att.event_log)
