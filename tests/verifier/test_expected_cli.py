"""Every row of ../shared/evidence/EXPECTED.md, judged through ``cmcp-verify evidence``.

One table, one row per sample (and per option that changes the verdict), with the exit status
EXPECTED.md calls for: 0 verified, 1 rejected. The same accepted rows then run with ``--roots``
holding only their vendor's roots (still verified: the directory is where the roots come from)
and without them (rejected: nothing falls back to the bundled roots), and with one byte of the
signed evidence flipped (rejected).
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path

import pytest

from ..conftest import EVIDENCE
from .evidence_helpers import run_evidence_cli
from .test_evidence_azure import ROWS as AZURE_ROWS

SNP, TDX, TPM, NV = (EVIDENCE / d for d in ("sev-snp", "tdx", "tpm", "nvidia"))
AT_2026 = "2026-01-01T00:00:00+00:00"


def _snp(report: str, cert: str, chain: str | None = None, *, at: str = AT_2026) -> list[str]:
    args = ["--report", str(SNP / report), "--vcek", str(SNP / cert)]
    return args + (["--chain", str(SNP / chain)] if chain else []) + ["--at", at]


def _gcp_binding() -> str:
    values = dict(
        line.split("=", 1) for line in (SNP / "gcp-v5-x25519-bound.values.txt").read_text().split()
    )
    return hashlib.sha512(bytes.fromhex(values["NONCE"] + values["X25519_KEY"])).hexdigest()


def _tdx(*pairs: tuple[str, str]) -> list[str]:
    return [arg for option, name in pairs for arg in (option, str(TDX / name))]


GO_COLLATERAL = (
    ("--tcb-info-chain", "go-tdx-guest.tcbinfo-issuer-chain.pem"),
    ("--qe-identity", "go-tdx-guest.qeidentity.json"),
    ("--qe-identity-chain", "go-tdx-guest.qeidentity-issuer-chain.pem"),
    ("--pck-crl", "go-tdx-guest.pckcrl.der"),
    ("--pck-crl-chain", "go-tdx-guest.pckcrl-issuer-chain.pem"),
    ("--root-crl", "go-tdx-guest.rootcrl.der"),
)
EXPIRED_OK = "--tdx-allow-expired-collateral"


def _gpu(report: str, certs: str) -> list[str]:
    return ["--gpu-report", str(NV / report), "--gpu-certs", str(NV / certs)]


# (row id, evidence type, arguments, exit status EXPECTED.md calls for, vendor root prefix)
ROWS: list[tuple[str, str, list[str], int, str]] = [
    # AMD SEV-SNP
    (
        "snp milan-debug: reject by default (POLICY allows DEBUG)",
        "sev-snp",
        _snp("go-sev-guest-milan-debug.report.bin", "go-sev-guest-milan-debug.vcek.der"),
        1,
        "amd-",
    ),
    (
        "snp milan-debug: accepted when debug is allowed",
        "sev-snp",
        [
            *_snp("go-sev-guest-milan-debug.report.bin", "go-sev-guest-milan-debug.vcek.der"),
            "--allow-debug",
        ],
        0,
        "amd-",
    ),
    (
        "snp virtee-milan (hex report)",
        "sev-snp",
        _snp("virtee-milan.report.hex", "virtee-milan.vcek.der", "virtee-milan.ask-ark.pem"),
        0,
        "amd-",
    ),
    (
        "snp virtee-turin VCEK chain (no report)",
        "sev-snp",
        [
            "--vcek",
            str(SNP / "virtee-turin.vcek.der"),
            "--chain",
            str(SNP / "virtee-turin.ask-ark.pem"),
            "--at",
            AT_2026,
        ],
        0,
        "amd-",
    ),
    (
        "snp gcp-v5: binding SHA-512(nonce ‖ x25519 key)",
        "sev-snp",
        [
            *_snp(
                "gcp-v5-x25519-bound.report.bin",
                "gcp-v5-x25519-bound.vcek.pem",
                "gcp-v5-x25519-bound.ask-ark.pem",
            ),
            "--nonce",
            _gcp_binding(),
        ],
        0,
        "amd-",
    ),
    (
        "snp trustee-milan",
        "sev-snp",
        _snp("trustee-milan.report.bin", "trustee-milan.vcek.der"),
        0,
        "amd-",
    ),
    (
        "snp aws-vlek (VLEK ← ASVK ← ARK)",
        "sev-snp",
        _snp("aws-vlek.report.bin", "aws-vlek.vlek.der", at="2025-06-01T00:00:00+00:00"),
        0,
        "amd-",
    ),
    *[
        (
            f"snp negative-vcek-bad-ask-sig-{name}",
            "sev-snp",
            ["--vcek", str(SNP / f"negative-vcek-bad-ask-sig-{name}.der"), "--at", AT_2026],
            1,
            "amd-",
        )
        for name in ("legacy", "new")
    ],
    # Intel TDX
    (
        "tdx go-tdx-guest-v5 + collateral at a pinned time: UpToDate",
        "tdx",
        [
            *_tdx(
                ("--tdx-quote", "go-tdx-guest-v5.quote.dat"),
                ("--tcb-info", "go-tdx-guest-v5.tcbinfo.json"),
                *GO_COLLATERAL,
            ),
            *["--at", "2026-02-15T00:00:00+00:00", EXPIRED_OK],
        ],
        0,
        "intel-",
    ),
    (
        "tdx go-tdx-guest-v5 + collateral now: expired collateral (strict)",
        "tdx",
        _tdx(
            ("--tdx-quote", "go-tdx-guest-v5.quote.dat"),
            ("--tcb-info", "go-tdx-guest-v5.tcbinfo.json"),
            *GO_COLLATERAL,
        ),
        1,
        "intel-",
    ),
    (
        "tdx go-tdx-guest-v4-spr: no matching TCB level",
        "tdx",
        [
            *_tdx(
                ("--tdx-quote", "go-tdx-guest-v4-spr.quote.dat"),
                ("--tcb-info", "go-tdx-guest-v4.tcbinfo.json"),
                *GO_COLLATERAL,
            ),
            *["--at", "2023-06-20T00:00:00+00:00"],
        ],
        1,
        "intel-",
    ),
    (
        "tdx gcp-cos-ccel: CCEL replay reproduces RTMR0-3",
        "tdx",
        _tdx(
            ("--tdx-quote", "gcp-cos-ccel.quote.dat"),
            ("--tdx-event-log", "gcp-cos-ccel.eventlog.bin"),
            ("--tdx-acpi-table", "gcp-cos-ccel.acpi-table.bin"),
        ),
        0,
        "intel-",
    ),
    (
        "tdx trustee-v4-outofdate: platform TCB OutOfDate",
        "tdx",
        [
            *_tdx(
                ("--tdx-quote", "trustee-v4-outofdate.quote.dat"),
                ("--tcb-info", "trustee-v4-outofdate.tcbinfo.json"),
                ("--qe-identity", "trustee-v4-outofdate.qeidentity.json"),
                ("--tcb-info-chain", "go-tdx-guest.tcbinfo-issuer-chain.pem"),
            ),
            *["--at", "2025-11-01T00:00:00+00:00", EXPIRED_OK],
        ],
        1,
        "intel-",
    ),
    (
        "tdx trustee-v4-debug: TD DEBUG=1",
        "tdx",
        _tdx(("--tdx-quote", "trustee-v4-debug.quote.dat")),
        1,
        "intel-",
    ),
    *[
        (
            f"tdx {name}: no collateral",
            "tdx",
            _tdx(("--tdx-quote", f"{name}.quote.dat")),
            0,
            "intel-",
        )
        for name in ("trustee-v5", "edgeless-v4", "phala-v4")
    ],
    # TPM 2.0
    (
        "tpm gce-cos-85-nonce9009 with nonce 9009",
        "tpm",
        ["--attestation", str(TPM / "gce-cos-85-nonce9009.attestation.json"), "--nonce", "9009"],
        0,
        "gce-tpm-",
    ),
    (
        "tpm gce-cos-85-no-nonce when a nonce is required",
        "tpm",
        ["--attestation", str(TPM / "gce-cos-85-no-nonce.attestation.json"), "--nonce", "9009"],
        1,
        "gce-tpm-",
    ),
    # Azure confidential VMs
    *[
        (
            f"azure {name}",
            "azure-cvm",
            ["--azure-evidence", str(EVIDENCE / "azure-cvm" / name), "--nonce", nonce.hex()],
            0,
            "amd-" if name.startswith("snp/") else "intel-",
        )
        for name, (_, nonce) in sorted(AZURE_ROWS.items())
    ],
    # NVIDIA Hopper
    (
        "gpu hopper + chain case1, nonce",
        "gpu-cc",
        [
            *_gpu("hopper.report.hex.txt", "hopper-cert-chain-case1.txt"),
            "--nonce",
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        ],
        0,
        "nvidia-",
    ),
    (
        "gpu hopper-coco against the VBIOS RIM: index 9 mismatches",
        "gpu-cc",
        [
            *_gpu("hopper-coco.report.hex.txt", "hopper-coco.certs.txt"),
            *["--rim", str(NV / "vbios-rim-1010_0200_882_960074001A.swidtag")],
            *["--at", "2025-06-01T00:00:00+00:00"],
        ],
        1,
        "nvidia-",
    ),
    *[
        (
            f"gpu chain {case}: negative",
            "gpu-cc",
            _gpu("hopper.report.hex.txt", f"hopper-cert-chain-{case}.txt"),
            1,
            "nvidia-",
        )
        for case in ("case2", "case3", "case4")
    ],
]
Row = tuple[str, str, list[str], int, str]
ACCEPTED = [row for row in ROWS if row[3] == 0]
# Accepted binary evidence: (option holding it, byte offset inside the signed part).
FLIPS = {"--report": 0x90, "--tdx-quote": 48 + 136, "--gpu-report": 64}
FLIPPABLE = [row for row in ACCEPTED if any(option in row[2] for option in FLIPS)]


def _rows(rows: list[Row]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("row", rows, ids=[row[0] for row in rows])


def _rejected(code: int, out: str) -> bool:
    return code == 1 and out.strip().splitlines()[-1].startswith("rejected: ")


@_rows(ROWS)
def test_expected_verdict(row: Row, capsys: pytest.CaptureFixture[str]) -> None:
    _, kind, args, expected, _ = row
    code, out = run_evidence_cli(capsys, kind, *args)
    assert code == 0 and out.strip().endswith("verified") if expected == 0 else _rejected(code, out)


def _roots_dir(tmp_path: Path, *, vendor: str, keep_vendor: bool) -> Path:
    """A copy of the bundled roots holding only ``vendor``'s files, or all but those."""
    target = tmp_path / "roots"
    target.mkdir(parents=True)
    bundled = resources.files("cmcp_verifier").joinpath("data/roots")
    for entry in bundled.iterdir():
        if entry.name.startswith(vendor) == keep_vendor:
            (target / entry.name).write_bytes(entry.read_bytes())
    return target


@_rows(ACCEPTED)
def test_roots_directory_is_the_only_source_of_roots(
    row: Row, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, kind, args, _, vendor = row
    only = _roots_dir(tmp_path / "only", vendor=vendor, keep_vendor=True)
    code, out = run_evidence_cli(capsys, kind, *args, "--roots", str(only))
    assert code == 0, out
    without = _roots_dir(tmp_path / "without", vendor=vendor, keep_vendor=False)
    code, out = run_evidence_cli(capsys, kind, *args, "--roots", str(without))
    assert _rejected(code, out), out


@_rows(FLIPPABLE)
def test_one_flipped_byte_is_rejected(
    row: Row, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, kind, args, _, _ = row
    option = next(o for o in FLIPS if o in args)
    source = Path(args[args.index(option) + 1])
    data = source.read_bytes()
    if source.suffix in (".hex", ".txt"):  # hex text: the CLI reads raw bytes as well
        data = bytes.fromhex(data.decode())
    flipped = bytearray(data)
    flipped[FLIPS[option]] ^= 0x01
    target = tmp_path / "flipped.bin"
    target.write_bytes(bytes(flipped))
    shutil.copystat(source, target)
    argv = [str(target) if a == str(source) else a for a in args]
    code, out = run_evidence_cli(capsys, kind, *argv)
    assert _rejected(code, out), out
