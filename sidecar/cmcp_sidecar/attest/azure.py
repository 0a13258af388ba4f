"""The ``azure-cvm`` provider: Azure confidential VMs through the vTPM paravisor (HCL).

Per collection (the documented Azure flow; verification: :mod:`cmcp_verifier.evidence.azure`):

1. write 64 bytes of user data — :func:`cmcp_verifier.binding.report_data` of the binding —
   to vTPM NV index 0x01400002 (defined, owner authorisation, when missing or not 64 bytes);
2. read the HCL report from NV 0x01400001: the paravisor regenerates it with a fresh SEV-SNP
   report or TD report whose REPORT_DATA[0:32] hashes the runtime data (HCLAkPub, the
   user data, the VM configuration);
3. TPM2_Quote with the HCL attestation key (persistent handle 0x81000003) over ``sha256:0-23``
   with the binding digest as extraData, and the PCR values;
4. SEV-SNP: the VCEK and ASK/ARK from the instance metadata service (THIM,
   ``GET {imds}/metadata/THIM/amd/certification``, cached for the process); TDX: the TD report
   turned into a quote by Azure's quoting service (``POST {imds}/acc/tdquote``).

Members: ``hcl_report``, ``quote``, ``signature``, ``pcrs``, and ``vcek`` + ``chain`` (SEV-SNP)
or ``td_quote`` (TDX). The user data makes the hardware report itself commit to the binding;
the verifier's binding check is the quote's extraData. Measurement: ``sha384:`` MEASUREMENT
(SNP) or MRTD (TDX). Platform: ``azure-cvm-sev-snp`` or ``intel-tdx`` (TRACE has no Azure TDX
value).

Options (``attestation.azure-cvm``): ``tcti`` (default ``device:/dev/tpmrm0``; ``CMCP_TPM_TCTI``
overrides), ``ak_handle`` (default 0x81000003), ``imds_url`` (default
``http://169.254.169.254``), ``timeout_seconds`` (default 10).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from cmcp_verifier.binding import report_data
from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.digests import b64url_decode, b64url_encode
from cmcp_verifier.errors import CmcpError
from cmcp_verifier.evidence.azure import PLATFORMS, HclReport
from cmcp_verifier.evidence.sevsnp import SnpReport
from cmcp_verifier.evidence.tdx_quote import parse_quote
from cmcp_verifier.evidence.tpm_pcrs import pcrs_to_json

from .base import AttestationError, AttestationProvider, Evidence, Probe
from .registry import ProviderContext, register_builtin
from .tpm import DEFAULT_TCTI, ENV_TCTI
from .tpm_device import AZURE_AK_HANDLE, Ak, TpmDevice, TpmError, in_thread

HCL_REPORT_NV = 0x01400001
USER_DATA_NV = 0x01400002
USER_DATA_SIZE = 64
IMDS = "http://169.254.169.254"
THIM_PATH = "/metadata/THIM/amd/certification"
TDQUOTE_PATH = "/acc/tdquote"
QUOTE_PCRS = tuple(range(24))
SHA256_BANK = 0x000B


def _user_data_attributes() -> int:
    from tpm2_pytss import TPMA_NV

    return int(TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD)


class AzureCvmProvider(AttestationProvider):
    """Azure CVM (SEV-SNP or TDX) evidence through the vTPM (see the module docs)."""

    name = "azure-cvm"
    evidence_type = "azure-cvm"
    platform = PLATFORMS["sev-snp"]

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - {"tcti", "ak_handle", "imds_url", "timeout_seconds"})
        if unknown:
            raise self._config(f"unknown keys {unknown}")
        tcti = os.environ.get(ENV_TCTI) or options.get("tcti") or DEFAULT_TCTI
        handle = options.get("ak_handle", AZURE_AK_HANDLE)
        if isinstance(handle, str):
            handle = int(handle, 0) if handle.strip().lower().startswith("0x") else None
        if not isinstance(handle, int) or handle >> 24 != 0x81:
            raise self._config("ak_handle must be a persistent handle 0x81xxxxxx")
        timeout = options.get("timeout_seconds", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise self._config("timeout_seconds must be a positive number")
        imds = options.get("imds_url", IMDS)
        if not isinstance(imds, str) or not isinstance(tcti, str):
            raise self._config("tcti and imds_url must be strings")
        self.device = TpmDevice(tcti)
        self.ak_handle = handle
        self.imds = imds.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=float(timeout))
        self._ak: Ak | None = None
        self._vcek: tuple[bytes, bytes] | None = None

    def _config(self, message: str) -> AttestationError:
        return AttestationError(
            self.name, f"attestation.azure-cvm: {message}", code="attestation.config"
        )

    async def probe(self) -> Probe:
        await in_thread(self.name, self._prepare)
        return Probe(
            True, f"Azure vTPM at {self.device.tcti}: HCL report, AK 0x{self.ak_handle:08x}"
        )

    async def collect(self, report_data_: bytes) -> Evidence:
        hcl_raw, quote, signature, pcrs = await in_thread(self.name, self._read, report_data_)
        try:
            hcl = HclReport.parse(hcl_raw)
        except CmcpError as exc:
            raise AttestationError(
                self.name,
                f"the vTPM returned a malformed HCL report: {exc.message}",
                code="attestation.malformed",
                hint="is this an Azure confidential VM? (NV 0x01400001 holds the HCL report)",
            ) from None
        members = {
            "hcl_report": hcl_raw,
            "quote": quote,
            "signature": signature,
            "pcrs": canonical_bytes(pcrs_to_json({SHA256_BANK: pcrs})),
        }
        if hcl.report_type == "sev-snp":
            members["vcek"], members["chain"] = await self._vcek_chain()
            measurement = "sha384:" + SnpReport.parse(hcl.hw_report).measurement.hex()
        else:
            members["td_quote"] = await self._td_quote(hcl.hw_report)
            measurement = "sha384:" + parse_quote(members["td_quote"]).body.mr_td.hex()
        self.platform = PLATFORMS[hcl.report_type]
        from tpm2_pytss import TPMS_ATTEST

        attest, _ = TPMS_ATTEST.unmarshal(quote)
        return Evidence(
            members=members,
            measurement=measurement,
            report_data=bytes(attest.extraData),
            collected_at=int(time.time()),
            facts={
                "report_type": hcl.report_type,
                "user_data": hcl.user_data,
                "tcti": self.device.tcti,
            },
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self.device.close)

    # -- vTPM (worker thread) --------------------------------------------------------------------

    def _prepare(self) -> Ak:
        if self._ak is None:
            if self.device.nv_size(HCL_REPORT_NV) is None:
                raise TpmError(
                    "the vTPM has no HCL report (NV index 0x01400001)",
                    "this is not an Azure confidential VM; use attestation.provider tpm",
                )
            self._ak = self.device.load_ak(self.ak_handle, None)
        return self._ak

    def _read(self, binding: bytes) -> tuple[bytes, bytes, bytes, dict[int, bytes]]:
        ak = self._prepare()
        if self.device.nv_size(USER_DATA_NV) != USER_DATA_SIZE:
            self.device.nv_define(USER_DATA_NV, USER_DATA_SIZE, _user_data_attributes())
        self.device.nv_write(USER_DATA_NV, report_data(binding), owner_auth=True)
        hcl = self.device.nv_read(HCL_REPORT_NV, owner_auth=True)
        values = self.device.pcr_values("sha256", QUOTE_PCRS)
        quote = self.device.quote(ak, "sha256", QUOTE_PCRS, binding)
        return hcl, quote.attest, quote.signature, values

    # -- instance metadata service -----------------------------------------------------------------

    async def _vcek_chain(self) -> tuple[bytes, bytes]:
        if self._vcek is None:
            body = await self._imds("GET", THIM_PATH, None, "the VCEK (THIM)")
            vcek, chain = body.get("vcekCert"), body.get("certificateChain")
            if not isinstance(vcek, str) or not isinstance(chain, str):
                raise self._imds_error("THIM answered without vcekCert/certificateChain")
            self._vcek = (vcek.encode(), chain.encode())
        return self._vcek

    async def _td_quote(self, td_report: bytes) -> bytes:
        body = await self._imds(
            "POST", TDQUOTE_PATH, {"report": b64url_encode(td_report)}, "a TD quote"
        )
        try:
            return b64url_decode(body.get("quote", "").rstrip("="), what="TD quote")
        except CmcpError as exc:
            raise self._imds_error(exc.message) from None

    async def _imds(
        self, method: str, path: str, payload: dict[str, Any] | None, what: str
    ) -> dict[str, Any]:
        url = self.imds + path
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.request(method, url, json=payload, headers={"Metadata": "true"}) as resp,
            ):
                if resp.status != 200:
                    raise self._imds_error(f"{url} answered HTTP {resp.status} for {what}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self._imds_error(f"cannot get {what} from {url}: {reason}") from None
        if not isinstance(body, dict):
            raise self._imds_error(f"{url} did not answer a JSON object")
        return body

    def _imds_error(self, message: str) -> AttestationError:
        return AttestationError(
            self.name,
            message,
            code="attestation.imds",
            hint="the instance metadata service (169.254.169.254) must be reachable from the "
            "gateway (attestation.azure-cvm.imds_url)",
        )


def _factory(context: ProviderContext) -> AzureCvmProvider:
    return AzureCvmProvider(context.options)


register_builtin(AzureCvmProvider.name, _factory)
