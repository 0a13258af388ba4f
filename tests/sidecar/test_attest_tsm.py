"""The ``sev-snp`` and ``tdx`` providers against a configfs-tsm stand-in (tsm_standin.py: a
thread playing the kernel in a plain directory — there is no SEV-SNP or TDX guest here), fed
with real reports from ../shared/evidence. Those reports carry someone else's report data, so:
the provider must hand them on untouched, the attestor must refuse them (binding), and the
verifier must find their signatures and certificate chains valid and reject them for the
binding alone. The positive path needs a confidential VM: docs/attestation.md says how."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cmcp_sidecar.attest import AttestationError, Attestor, SigningIdentity, select_provider
from cmcp_sidecar.attest.configfs_tsm import _os_error
from cmcp_sidecar.attest.sevsnp import SevSnpProvider
from cmcp_sidecar.attest.tdx import TdxProvider
from cmcp_verifier.binding import report_data
from cmcp_verifier.evidence.sevsnp import CERT_TABLE_GUIDS
from cmcp_verifier.report import Status
from cmcp_verifier.roots import root_certificates
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..conftest import EVIDENCE
from ..verifier.snpfactory import make_cert_table
from .attestkit import claim_with, failed, status
from .trailkit import BUNDLE, CATALOG
from .tsm_standin import FakeTsmKernel

SNP_REPORT = (EVIDENCE / "sev-snp" / "trustee-milan.report.bin").read_bytes()
SNP_VCEK = (EVIDENCE / "sev-snp" / "trustee-milan.vcek.der").read_bytes()
TDX = EVIDENCE / "tdx"
BINDING = bytes(range(32))


def milan_cert_table() -> bytes:
    """What a host's extended guest request returns: VCEK, ASK and ARK in DER."""
    from cryptography.hazmat.primitives.serialization import Encoding

    ask, ark = root_certificates("amd-milan-ask-ark-asvk.pem")[:2]
    assert {"vcek", "ask", "ark"} <= set(CERT_TABLE_GUIDS.values())
    return make_cert_table(
        {
            "vcek": SNP_VCEK,
            "ask": ask.public_bytes(Encoding.DER),
            "ark": ark.public_bytes(Encoding.DER),
        }
    )


def snp_kernel(root: Path, **kw: Any) -> FakeTsmKernel:
    return FakeTsmKernel(root, "sev_guest", SNP_REPORT, kw.pop("auxblob", milan_cert_table()), **kw)


async def test_snp_report_is_passed_on_untouched(tmp_path: Path) -> None:
    with snp_kernel(tmp_path / "report").running() as kernel:
        provider = await select_provider(
            "sev-snp", False, options={"sev-snp": {"report_dir": str(tmp_path / "report")}}
        )
        evidence = await provider.collect(BINDING)
    assert kernel.inblobs[-1] == report_data(BINDING)  # the binding went in as REPORT_DATA
    assert evidence.members == {"report": SNP_REPORT, "certs": milan_cert_table()}
    assert evidence.report_data == SNP_REPORT[0x50:0x90]
    assert evidence.measurement == "sha384:" + SNP_REPORT[0x90:0xC0].hex()


async def test_attestor_refuses_a_report_without_the_binding(tmp_path: Path) -> None:
    with snp_kernel(tmp_path / "report").running():
        provider = SevSnpProvider({"report_dir": str(tmp_path / "report")})
        attestor = Attestor(
            provider,
            SigningIdentity.generate(),
            bundle_hash=BUNDLE,
            catalog_hash=CATALOG,
            validity_seconds=60,
        )
        with pytest.raises(AttestationError) as err:
            await attestor.start()
    assert err.value.code == "attestation.binding_mismatch"


async def test_verifier_accepts_the_hardware_and_rejects_the_binding(tmp_path: Path) -> None:
    with snp_kernel(tmp_path / "report").running():
        evidence = await SevSnpProvider({"report_dir": str(tmp_path / "report")}).collect(BINDING)
    claim = claim_with("sev-snp", "amd-sev-snp", evidence.members, evidence.measurement)
    report = verify_claim(claim, ClaimPolicy())
    for name in ("sev-snp.report.signature", "sev-snp.cert.chain", "sev-snp.cert.tcb"):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"attestation.report_data"}


async def test_snp_without_a_host_certificate_table(tmp_path: Path) -> None:
    with FakeTsmKernel(tmp_path / "r", "sev_guest", SNP_REPORT).running():
        evidence = await SevSnpProvider({"report_dir": str(tmp_path / "r")}).collect(BINDING)
    assert set(evidence.members) == {"report"} and evidence.facts["certificate_table"] is False


async def test_tdx_quote_and_ccel_are_passed_on(tmp_path: Path) -> None:
    acpi = tmp_path / "acpi"
    (acpi / "data").mkdir(parents=True)
    (acpi / "data" / "CCEL").write_bytes((TDX / "gcp-cos-ccel.eventlog.bin").read_bytes())
    (acpi / "CCEL").write_bytes((TDX / "gcp-cos-ccel.acpi-table.bin").read_bytes())
    quote = (TDX / "gcp-cos-ccel.quote.dat").read_bytes()
    with FakeTsmKernel(tmp_path / "report", "tdx_guest", quote).running() as kernel:
        provider = await select_provider(
            "tdx",
            False,
            options={"tdx": {"report_dir": str(tmp_path / "report"), "acpi_dir": str(acpi)}},
        )
        evidence = await provider.collect(BINDING)
    assert kernel.inblobs[-1] == report_data(BINDING)
    assert evidence.members["quote"] == quote
    assert set(evidence.members) == {"quote", "event_log", "acpi_table"}
    claim = claim_with("tdx", "intel-tdx", evidence.members, evidence.measurement)
    report = verify_claim(claim, ClaimPolicy())
    for name in ("tdx.tdx.quote.signature", "tdx.tdx.pck.chain", "tdx.tdx.ccel"):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"attestation.report_data"}


async def test_wrong_tee_is_refused(tmp_path: Path) -> None:
    with snp_kernel(tmp_path / "report").running(), pytest.raises(AttestationError) as err:
        await select_provider(
            "tdx", False, options={"tdx": {"report_dir": str(tmp_path / "report")}}
        )
    assert "provider is 'sev_guest', not 'tdx_guest'" in err.value.message


async def test_kernel_without_configfs_tsm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider(
            "sev-snp", False, options={"sev-snp": {"report_dir": str(tmp_path / "none")}}
        )
    assert "kernel without configfs-tsm" in err.value.message
    assert err.value.code == "attestation.unavailable"


async def test_environment_names_the_report_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMCP_TSM_REPORT_DIR", str(tmp_path / "report"))
    with snp_kernel(tmp_path / "report").running():
        provider = await select_provider("sev-snp", False)
        assert (await provider.collect(BINDING)).members["report"] == SNP_REPORT


async def test_another_writer_is_detected(tmp_path: Path) -> None:
    with (
        snp_kernel(tmp_path / "report", generation_bump=1).running(),
        pytest.raises(AttestationError) as err,
    ):
        await SevSnpProvider({"report_dir": str(tmp_path / "report")}).collect(BINDING)
    assert "written by someone else" in err.value.message


async def test_empty_or_malformed_reports_are_refused(tmp_path: Path) -> None:
    for i, blob in enumerate((b"", SNP_REPORT[:100])):
        root = tmp_path / f"r{i}"
        with (
            FakeTsmKernel(root, "sev_guest", blob).running(),
            pytest.raises(AttestationError) as err,
        ):
            await SevSnpProvider({"report_dir": str(root)}).collect(BINDING)
        assert err.value.code in ("attestation.device", "attestation.malformed")


def test_os_errors_name_the_fix() -> None:
    """Permission errors cannot be produced here (the tests run as root), so the mapping from
    errno to the fix is checked on constructed OSErrors."""
    for code, words in (
        (errno.EACCES, "write access"),
        (errno.ENOENT, "CONFIG_TSM_REPORTS"),
        (errno.ENXIO, "sev-guest or tdx-guest"),
        (errno.EBUSY, "retry"),
    ):
        err = _os_error(OSError(code, os.strerror(code)), "cannot read outblob")
        assert words in err.hint and os.strerror(code) in str(err)


def test_options_are_validated() -> None:
    for bad in ({"privlevel": 4}, {"privlevel": True}, {"report_dir": 3}):
        with pytest.raises(AttestationError):
            SevSnpProvider(bad)
    with pytest.raises(AttestationError):
        TdxProvider({"acpi_dir": 1})
