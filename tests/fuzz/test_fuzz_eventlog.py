"""Fuzzing the TCG event log parser (TPM firmware logs and TDX CCEL logs share it).

Seeds are the real logs: the GCE vTPM log (crypto-agile, three banks), the GCP TDX CCEL log
(SHA-384, used part) and a SHA-1-only log built from the GCE events. Inputs are mutations of
those, random bytes, and random bytes behind a real crypto-agile header. Parsing and replaying
every bank may raise only :class:`InputError`.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence.ccel import replay_rtmrs
from cmcp_verifier.evidence.tcg_eventlog import ALG_SHA1, ALG_SHA384, parse_event_log, replay
from cmcp_verifier.evidence.tpm_gotpm import parse_gotpm_attestation

from ..conftest import EVIDENCE
from ._mutate import mutated
from ._settings import fuzz_settings

_GCE = parse_gotpm_attestation(
    (EVIDENCE / "tpm" / "gce-cos-85-nonce9009.attestation.json").read_bytes()
)
GCE_LOG = _GCE.event_log or b""
_CCEL = (EVIDENCE / "tdx" / "gcp-cos-ccel.eventlog.bin").read_bytes()
CCEL_LOG = _CCEL[: parse_event_log(_CCEL).size]  # the used part; the 0xFF tail is only filler
SHA1_LOG = b"".join(
    struct.pack("<II", e.index, e.event_type)
    + e.digests[ALG_SHA1]
    + struct.pack("<I", len(e.data))
    + e.data
    for e in parse_event_log(GCE_LOG).events[:12]
)
HEADERS = [GCE_LOG[: parse_event_log(GCE_LOG).events[0].offset], CCEL_LOG[:100]]
SEEDS = [GCE_LOG, GCE_LOG[:2000], CCEL_LOG, SHA1_LOG]


def _parse_and_replay(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except InputError:
        return
    for alg in log.digest_sizes:
        with contextlib.suppress(InputError):
            replay(log.events, alg)
    if ALG_SHA384 in log.digest_sizes:
        with contextlib.suppress(InputError):
            replay_rtmrs(log)


@fuzz_settings
@given(st.sampled_from(SEEDS).flatmap(lambda seed: mutated(seed, splice=True)))
def test_mutated_event_logs(data: bytes) -> None:
    _parse_and_replay(data)


@fuzz_settings
@given(st.sampled_from([b"", *HEADERS]), st.binary(max_size=1024))
def test_random_bytes_as_event_log(header: bytes, blob: bytes) -> None:
    _parse_and_replay(header + blob)
