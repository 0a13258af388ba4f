"""TDX quote verification time: without collateral, with full collateral, with a CCEL log.

Run: ``python -m tests.bench.bench_verifier_tdx [ROUNDS]`` from the repository root.
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import sys
import time
from collections.abc import Callable

from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.evidence.tdx import TdxCollateral, TdxOptions, verify_td_quote

from ..conftest import EVIDENCE

TDX = EVIDENCE / "tdx"


def _read(name: str) -> bytes:
    return (TDX / name).read_bytes()


def _time(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median and 95th percentile in milliseconds."""
    fn()  # warm up (root loading, imports)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main(rounds: int = 500) -> None:
    now = EvidencePolicy()
    v5_time = EvidencePolicy(evaluation_time=dt.datetime(2026, 2, 15, tzinfo=dt.UTC))
    collateral = TdxCollateral(
        tcb_info=_read("go-tdx-guest-v5.tcbinfo.json"),
        tcb_info_chain=_read("go-tdx-guest.tcbinfo-issuer-chain.pem"),
        qe_identity=_read("go-tdx-guest.qeidentity.json"),
        qe_identity_chain=_read("go-tdx-guest.qeidentity-issuer-chain.pem"),
        pck_crl=_read("go-tdx-guest.pckcrl.der"),
        pck_crl_chain=_read("go-tdx-guest.pckcrl-issuer-chain.pem"),
        root_crl=_read("go-tdx-guest.rootcrl.der"),
    )
    lenient = TdxOptions(allow_expired_collateral=True)
    v5, ccel = _read("go-tdx-guest-v5.quote.dat"), _read("gcp-cos-ccel.quote.dat")
    log = _read("gcp-cos-ccel.eventlog.bin")
    cases: dict[str, Callable[[], object]] = {
        "quote only (v5, no collateral)": lambda: verify_td_quote(v5, None, now),
        "quote + full collateral (v5)": lambda: verify_td_quote(v5, collateral, v5_time, lenient),
        "quote + CCEL replay (v4, 43 events)": lambda: verify_td_quote(
            ccel, None, now, event_log=log
        ),
    }
    print(f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    for name, fn in cases.items():
        median, p95 = _time(fn, rounds)
        print(f"{name:40s} median {median:6.2f} ms   p95 {p95:6.2f} ms   ({rounds} rounds)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
