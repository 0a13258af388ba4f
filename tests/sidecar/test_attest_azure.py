"""The ``azure-cvm`` provider against a stand-in of an Azure CVM: a real swtpm holding an RSA
attestation key at the HCL AK's handle 0x81000003, behind tests/tools/azure_vtpm_standin.py
(which answers NV 0x01400001 with a real HCL report, as Azure's paravisor does), and a loopback
HTTP server standing in for the instance metadata service (THIM VCEK, TD quotes) serving the
real Azure certificates and TD quote. The HCL reports are another VM's: the hardware checks
pass, the runtime-data binding holds, and the vTPM quote — made here, with our binding — is
rejected because it is not signed by that VM's HCLAkPub."""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_sidecar.attest import AttestationError, select_provider
from cmcp_sidecar.attest.azure import AzureCvmProvider
from cmcp_verifier.binding import binding_digest, report_data
from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.evidence.tpm_structures import parse_tpms_attest
from cmcp_verifier.keys import jwk_thumbprint, public_jwk
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..conftest import EVIDENCE
from ..tpm_fixtures import Swtpm, running_swtpm
from ..verifier.claimfactory import BUNDLE, CATALOG
from .attestkit import claim_with, failed, loopback, status

pytestmark = pytest.mark.tpm

AZ = EVIDENCE / "azure-cvm"
STANDIN = Path(__file__).resolve().parent.parent / "tools" / "azure_vtpm_standin.py"
KEY = Ed25519PrivateKey.generate()  # the claims' gateway key: evidence is bound to it
BINDING = binding_digest(jwk_thumbprint(public_jwk(KEY)), BUNDLE, CATALOG, b"")


@pytest.fixture(scope="module")
def vtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    with running_swtpm(tmp_path_factory.mktemp("vtpm"), pcr_banks="sha256") as tpm:
        work = tpm.state_dir
        tpm.tool(
            "tpm2_createprimary", "-C", "o", "-G", "rsa2048:rsassa-sha256:null",
            "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "-c", str(work / "ak.ctx"),
        )  # fmt: skip
        tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", str(work / "ak.ctx"), "0x81000003")
        yield tpm


def tcti(tpm: Swtpm, hcl: str) -> str:
    return f"cmd:{sys.executable} {STANDIN} {tpm.host} {tpm.port} {AZ / hcl}"


@asynccontextmanager
async def imds(**routes: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback instance metadata service; yields its URL and the TD quote requests."""
    requests: list[dict[str, Any]] = []
    pem = (AZ / "snp" / "vcek.pem").read_text()
    vcek, chain = pem.split("-----END CERTIFICATE-----\n", 1)

    async def thim(request: web.Request) -> web.Response:
        if request.headers.get("Metadata") != "true":
            return web.Response(status=400)
        return web.json_response(
            {"vcekCert": vcek + "-----END CERTIFICATE-----\n", "certificateChain": chain}
        )

    async def tdquote(request: web.Request) -> web.Response:
        requests.append(await request.json())
        quote = (AZ / "tdx" / "td-quote.bin").read_bytes()
        return web.json_response({"quote": base64.urlsafe_b64encode(quote).decode()})

    app = web.Application()
    app.router.add_get("/metadata/THIM/amd/certification", routes.get("thim", thim))
    app.router.add_post("/acc/tdquote", routes.get("tdquote", tdquote))
    async with loopback(app) as url:
        yield url, requests


async def collect(tpm: Swtpm, hcl: str, url: str) -> Any:
    provider = await select_provider(
        "azure-cvm", False, options={"azure-cvm": {"tcti": tcti(tpm, hcl), "imds_url": url}}
    )
    try:
        return provider, await provider.collect(BINDING)
    finally:
        await provider.aclose()


async def test_snp_cvm_evidence(vtpm: Swtpm) -> None:
    async with imds() as (url, _):
        provider, evidence = await collect(vtpm, "snp/hcl-report.bin", url)
    assert provider.platform == "azure-cvm-sev-snp"
    members = evidence.members
    assert members["hcl_report"] == (AZ / "snp" / "hcl-report.bin").read_bytes()
    assert set(members) == {"hcl_report", "quote", "signature", "pcrs", "vcek", "chain"}
    assert parse_tpms_attest(members["quote"]).extra_data == BINDING
    assert evidence.report_data == BINDING
    report = verify_claim(
        claim_with("azure-cvm", "azure-cvm-sev-snp", evidence.members, evidence.measurement, KEY),
        ClaimPolicy(),
    )
    for name in (
        "azure-cvm.snp.report.signature",
        "azure-cvm.snp.cert.chain",
        "azure-cvm.hcl.runtime_data",
        "azure-cvm.hcl.ak",
        "azure-cvm.tpm.quote.pcr_digest",
        "attestation.report_data",
        "runtime.platform",
    ):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"azure-cvm.tpm.quote.signature"}


async def test_user_data_carries_the_binding(vtpm: Swtpm, tmp_path: Path) -> None:
    async with imds() as (url, _):
        await collect(vtpm, "snp/hcl-report.bin", url)
    out = tmp_path / "user-data"
    vtpm.tool("tpm2_nvread", "-C", "o", "0x01400002", "-s", "64", "-o", str(out))
    assert out.read_bytes() == report_data(BINDING)


async def test_tdx_cvm_evidence(vtpm: Swtpm) -> None:
    async with imds() as (url, requests):
        provider, evidence = await collect(vtpm, "tdx/hcl-report.bin", url)
    hcl = (AZ / "tdx" / "hcl-report.bin").read_bytes()
    assert requests == [{"report": b64url_encode(hcl[0x20 : 0x20 + 1024])}]
    assert evidence.members["td_quote"] == (AZ / "tdx" / "td-quote.bin").read_bytes()
    assert provider.platform == "intel-tdx"
    report = verify_claim(
        claim_with("azure-cvm", "intel-tdx", evidence.members, evidence.measurement, KEY),
        ClaimPolicy(),
    )
    for name in (
        "azure-cvm.tdx.quote.signature",
        "azure-cvm.hcl.td_report",
        "azure-cvm.hcl.runtime_data",
        "attestation.report_data",
    ):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"azure-cvm.tpm.quote.signature"}


async def test_metadata_service_down_is_refused(vtpm: Swtpm) -> None:
    with pytest.raises(AttestationError) as err:
        await collect(vtpm, "snp/hcl-report.bin", "http://127.0.0.1:1")
    assert err.value.code == "attestation.imds"
    assert "169.254.169.254" in (err.value.hint or "")


async def test_metadata_service_error_is_refused(vtpm: Swtpm) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async with imds(thim=broken) as (url, _):
        with pytest.raises(AttestationError) as err:
            await collect(vtpm, "snp/hcl-report.bin", url)
    assert "HTTP 503" in err.value.message


async def test_a_tpm_without_hcl_report_is_not_an_azure_cvm(vtpm: Swtpm) -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider("azure-cvm", False, options={"azure-cvm": {"tcti": vtpm.tcti}})
    assert "not an Azure confidential VM" in (err.value.hint or "")


def test_options_are_validated() -> None:
    for bad in ({"ak_handle": "0x01000000"}, {"timeout_seconds": 0}, {"x": 1}, {"imds_url": 3}):
        with pytest.raises(AttestationError):
            AzureCvmProvider(bad)
