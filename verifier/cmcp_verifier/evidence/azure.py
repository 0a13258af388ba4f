"""Azure confidential VMs: the vTPM paravisor path (evidence type ``azure-cvm``).

On an Azure CVM the guest cannot choose the hardware report's REPORT_DATA. The paravisor (HCL)
writes an *HCL report* into vTPM NV index 0x01400001 (regenerated after a write of 64 bytes of
user data to NV 0x01400002)::

    0x000  header (32 bytes): "HCLA", version, report size, request type, status, reserved
    0x020  the hardware report: SEV-SNP ATTESTATION_REPORT (1184 bytes) or TDX TDREPORT (1024)
    0x4C0  IGVM request data: data size, version, report type (2 = SNP, 4 = TDX),
           hash type (1 = SHA-256, 2 = SHA-384, 3 = SHA-512), runtime data size (u32 each)
    0x4D4  runtime data: JSON {"keys": [{"kid": "HCLAkPub", …}, {"kid": "HCLEkPub", …}],
           "vm-configuration": {…}, "user-data": "<hex of the 64 user-data bytes>"}

The hardware report's REPORT_DATA[0:32] is the hash of the runtime data, so the hardware vouches
for HCLAkPub, the vTPM's attestation key (persistent handle 0x81000003); freshness and the
caller's data come from a TPM quote signed by that key, whose extraData carries the nonce (in a
claim: the binding digest). For TDX the TD report is turned into a quote by Azure's quoting
service (the guest asks IMDS); the quote must describe the same TD as the HCL's TD report.

Checks (names in the report): ``hcl.format``; SEV-SNP: ``snp.*`` (:func:`.sevsnp.verify_snp_report`
with the VCEK — Azure serves it from IMDS/THIM, it is not in the report); TDX: ``tdx.*``
(:func:`.tdx.verify_td_quote`) and ``hcl.td_report`` (the quote's TD body equals the HCL's TD
report: attributes, XFAM, MRTD, MRCONFIGID, MROWNER(CONFIG), RTMRs, REPORTDATA);
``hcl.runtime_data`` (REPORT_DATA[0:32] = hash of the runtime data); ``hcl.ak`` (HCLAkPub is a
usable RSA/EC JWK); ``tpm.*`` (:func:`.tpm_quote.verify_quote` with HCLAkPub: signature,
pcrDigest against ``pcrs``, and the nonce when the caller gives one).

Report data (what a claim's binding is compared with): the quote's extraData. Measurement:
``sha384:`` MEASUREMENT (SNP) or MRTD (TDX). Platform: ``azure-cvm-sev-snp``, or
``intel-tdx`` for TDX (the TRACE v0.2 schema has no Azure TDX value).

Embedded form (``gateway.attestation.evidence`` for type ``azure-cvm``; every member
base64url): ``hcl_report``, ``quote`` (TPMS_ATTEST), ``signature`` (TPMT_SIGNATURE or the plain
RSA signature) — required; ``pcrs`` (the TPM module's JSON PCR values); SEV-SNP: ``vcek``
(DER/PEM) and ``chain`` (ASK/ARK); TDX: ``td_quote`` (required) and the TDX collateral members
of :mod:`.tdx` (``tcb_info``, ``qe_identity``, …).

Files (``cmcp-verify evidence --type azure-cvm``): ``--azure-evidence FILE`` — the JSON the
CoCo attestation agent and trustee use (``az-snp-vtpm`` / ``az-tdx-vtpm`` versions 0-2:
``hcl_report``/``report``, ``tpm_quote``/``quote`` {``message``, ``signature``, ``pcrs``},
``vcek``, ``td_quote``); ``--vcek`` and ``--chain`` override the SEV-SNP certificates.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import struct
from dataclasses import dataclass, fields, replace
from typing import Any

from ..canonical import parse_json
from ..digests import b64url_decode
from ..errors import InputError
from . import EvidencePolicy, EvidenceReport, register
from ._common import json_bytes, load_certificate, load_certificates, read_input
from .sevsnp import SnpReport, verify_snp_report
from .tdx import TdxCollateral, verify_td_quote
from .tdx_quote import TdQuote, parse_quote
from .tpm_keys import AkPublic, ak_from_jwk
from .tpm_pcrs import pcrs_from_json
from .tpm_quote import verify_quote

NAME = "azure-cvm"
HCL_SIGNATURE = b"HCLA"
HCL_HEADER = 0x20
HW_REPORT_AREA = 1184
IGVM_HEADER = 0x4C0
RUNTIME_DATA = 0x4D4
IGVM_HEADER_SIZE = RUNTIME_DATA - IGVM_HEADER
HCL_VERSIONS = (1, 2)
HCL_REQUEST_TYPE = 2
MAX_RUNTIME_DATA = 64 * 1024
REPORT_TYPES = {2: "sev-snp", 4: "tdx"}
HASH_TYPES = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}
PLATFORMS = {"sev-snp": "azure-cvm-sev-snp", "tdx": "intel-tdx"}  # TRACE has no Azure TDX value
TD_REPORT_SIZE = 1024
SHA256_BANK = 0x000B
_TDX_COLLATERAL = frozenset(f.name for f in fields(TdxCollateral))
EMBEDDED_MEMBERS = frozenset(
    {"hcl_report", "quote", "signature", "pcrs", "vcek", "chain", "td_quote"} | _TDX_COLLATERAL
)
# TD report offsets (TDX module ABI): REPORTDATA in REPORTMACSTRUCT (0), TEE_TCB_INFO (256),
# TDINFO (512).
_TD_FIELDS = {
    "REPORTDATA": (128, 64),
    "TEE_TCB_SVN": (264, 16),
    "MRSEAM": (280, 48),
    "MRSIGNERSEAM": (328, 48),
    "SEAMATTRIBUTES": (376, 8),
    "TDATTRIBUTES": (512, 8),
    "XFAM": (520, 8),
    "MRTD": (528, 48),
    "MRCONFIGID": (576, 48),
    "MROWNER": (624, 48),
    "MROWNERCONFIG": (672, 48),
    "RTMRS": (720, 192),
}


def _malformed(detail: str) -> InputError:
    return InputError(f"HCL report: {detail}", code="azure-cvm.malformed")


@dataclass(frozen=True)
class HclReport:
    """A parsed HCL report (see the module docs for the layout)."""

    raw: bytes
    report_type: str  # sev-snp | tdx
    hw_report: bytes  # SNP: 1184 bytes; TDX: the 1024-byte TD report
    hash_type: int
    runtime_data: bytes
    runtime: dict[str, Any]

    @classmethod
    def parse(cls, data: bytes) -> HclReport:
        if len(data) < RUNTIME_DATA:
            raise _malformed(f"{len(data)} bytes, shorter than its fixed part ({RUNTIME_DATA})")
        if data[:4] != HCL_SIGNATURE:
            raise _malformed("does not start with 'HCLA'")
        version, total, request, status = struct.unpack_from("<4I", data, 4)
        data_size, data_version, report_type, hash_type, size = struct.unpack_from(
            "<5I", data, IGVM_HEADER
        )
        kind = REPORT_TYPES.get(report_type)
        if kind is None:
            raise _malformed(f"unknown report type {report_type}")
        if hash_type not in HASH_TYPES:
            raise _malformed(f"unknown runtime-data hash type {hash_type}")
        if size > MAX_RUNTIME_DATA or RUNTIME_DATA + size > len(data):
            raise _malformed(f"runtime data of {size} bytes does not fit")
        # Nothing outside the signed hardware report and the hashed runtime data may vary:
        # every header field is pinned and every unused byte must be zero.
        if version not in HCL_VERSIONS or request != HCL_REQUEST_TYPE or status != 0:
            raise _malformed(
                f"unexpected header (version {version}, request {request}, status {status})"
            )
        if (
            total != RUNTIME_DATA + size
            or data_size != IGVM_HEADER_SIZE + size
            or data_version != 1
        ):
            raise _malformed("header sizes do not match the runtime data")
        if any(data[20:HCL_HEADER]) or any(data[total:]):
            raise _malformed("reserved or trailing bytes are not zero")
        runtime_data = data[RUNTIME_DATA : RUNTIME_DATA + size]
        runtime = parse_json(runtime_data, what="HCL runtime data")
        if not isinstance(runtime, dict):
            raise _malformed("runtime data is not a JSON object")
        hw_size = HW_REPORT_AREA if kind == "sev-snp" else TD_REPORT_SIZE
        hw = data[HCL_HEADER : HCL_HEADER + hw_size]
        if any(data[HCL_HEADER + hw_size : IGVM_HEADER]):
            raise _malformed("bytes after the hardware report are not zero")
        return cls(bytes(data), kind, hw, hash_type, runtime_data, runtime)

    @property
    def report_data(self) -> bytes:
        """The hardware report's REPORT_DATA (SNP offset 0x50; TD report REPORTDATA)."""
        if self.report_type == "sev-snp":
            return self.hw_report[0x50:0x90]
        offset, size = _TD_FIELDS["REPORTDATA"]
        return self.hw_report[offset : offset + size]

    def runtime_digest(self) -> bytes:
        return bytes(HASH_TYPES[self.hash_type](self.runtime_data).digest())

    def key(self, kid: str) -> Any:
        """The JWK named ``kid`` in the runtime data's ``keys`` (None when absent)."""
        keys = self.runtime.get("keys")
        if not isinstance(keys, list):
            return None
        return next((k for k in keys if isinstance(k, dict) and k.get("kid") == kid), None)

    @property
    def user_data(self) -> str | None:
        value = self.runtime.get("user-data")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class AzureEvidence:
    """Everything one Azure attestation consists of, as raw bytes."""

    hcl_report: bytes
    quote: bytes
    signature: bytes
    pcrs: dict[int, dict[int, bytes]] | None = None
    vcek: bytes | None = None
    chain: bytes | None = None
    td_quote: bytes | None = None
    collateral: TdxCollateral | None = None


def verify_azure(evidence: AzureEvidence, policy: EvidencePolicy) -> EvidenceReport:
    """Verify Azure CVM evidence (see the module docs); never raises for bad input."""
    report = EvidenceReport(subject="Azure confidential VM (vTPM paravisor)")
    try:
        hcl = HclReport.parse(evidence.hcl_report)
    except InputError as exc:
        report.fail("hcl.format", exc.message)
        return report
    report.passed(
        "hcl.format", f"{hcl.report_type} report, runtime data {len(hcl.runtime_data)} bytes"
    )
    report.platform = PLATFORMS[hcl.report_type]
    report.facts["azure"] = {
        "report_type": hcl.report_type,
        "user_data": hcl.user_data,
        "vm_configuration": hcl.runtime.get("vm-configuration"),
    }
    hw_report_data = _check_hardware(hcl, evidence, policy, report)
    if hw_report_data is not None:
        ok = hmac.compare_digest(hw_report_data[:32], hcl.runtime_digest()[:32])
        report.add(
            "hcl.runtime_data",
            ok,
            "REPORT_DATA[0:32] is the hash of the runtime data (HCLAkPub is the hardware's)"
            if ok
            else "REPORT_DATA[0:32] is not the hash of the runtime data",
        )
    ak = _check_ak(hcl, report)
    if ak is not None:
        sub = verify_quote(
            evidence.quote,
            evidence.signature,
            ak,
            pcrs=evidence.pcrs,
            nonce=policy.nonce,
            at=policy.now(),
        )
        report.extend(sub, prefix="tpm.")
        report.report_data = sub.report_data
        report.facts["tpm"] = sub.facts
    return report


def _check_hardware(
    hcl: HclReport, evidence: AzureEvidence, policy: EvidencePolicy, report: EvidenceReport
) -> bytes | None:
    """Verify the SNP report or the TD quote; returns the REPORT_DATA the hardware signed."""
    if hcl.report_type == "sev-snp":
        try:
            vcek = load_certificate(evidence.vcek, what="VCEK") if evidence.vcek else None
            chain = load_certificates(evidence.chain, what="chain") if evidence.chain else []
        except InputError as exc:
            report.fail("snp.certificates", exc.message)
            return None
        sub = verify_snp_report(hcl.hw_report, vcek, policy, chain=chain)
        report.extend(sub, prefix="snp.")
        report.measurement = sub.measurement
        report.facts["sev_snp"] = sub.facts.get("sev_snp")
        return SnpReport.parse(hcl.hw_report).report_data if sub.report_data else None
    if evidence.td_quote is None:
        report.fail("tdx.quote", "a TDX HCL report needs the TD quote (td_quote)")
        return None
    try:
        quote = parse_quote(evidence.td_quote)
    except InputError as exc:
        report.fail("tdx.quote", exc.message)
        return None
    sub = verify_td_quote(quote, evidence.collateral, _no_raw_checks(policy))
    report.extend(sub)  # the TDX checks are named tdx.* already
    report.measurement = sub.measurement
    report.facts["tdx"] = sub.facts
    mismatch = _td_mismatch(quote, hcl.hw_report)
    report.add(
        "hcl.td_report",
        mismatch is None,
        mismatch or "the TD quote describes the HCL's TD report (MRTD, RTMRs, REPORTDATA, …)",
    )
    return hcl.report_data if mismatch is None else None


def _no_raw_checks(policy: EvidencePolicy) -> EvidencePolicy:
    """REPORT_DATA holds the runtime-data hash, not the caller's nonce (that is in the quote)."""
    return replace(policy, nonce=None, expected_measurement=None)


def _td_mismatch(quote: TdQuote, td_report: bytes) -> str | None:
    """Why the TD report is not the one the quote was made from (None: it is).

    The TD report's MAC and CPUSVN can only be checked by the CPU that made it; everything
    else must be consistent: its hashes over TEE_TCB_INFO and TDINFO, zero reserved fields,
    and every field the signed quote repeats."""
    body = quote.body
    version = 1 if body.mr_service_td is not None else 0
    if td_report[:4] != bytes([0x81, 0, version, 0]) or any(td_report[4:16]):
        return "the TD report's REPORTTYPE does not match the quote's TD report version"
    if any(td_report[192:224]) or any(td_report[495:512]):
        return "reserved fields of the TD report are not zero"
    if hashlib.sha384(td_report[256:495]).digest() != td_report[32:80]:
        return "TEE_TCB_INFO_HASH does not match the TD report's TEE_TCB_INFO"
    if hashlib.sha384(td_report[512:1024]).digest() != td_report[80:128]:
        return "TEE_INFO_HASH does not match the TD report's TDINFO"
    quoted = {
        "TEE_TCB_SVN": body.tee_tcb_svn,
        "MRSEAM": body.mr_seam,
        "MRSIGNERSEAM": body.mr_signer_seam,
        "SEAMATTRIBUTES": body.seam_attributes,
        "REPORTDATA": body.report_data,
        "TDATTRIBUTES": body.td_attributes,
        "XFAM": body.xfam,
        "MRTD": body.mr_td,
        "MRCONFIGID": body.mr_config_id,
        "MROWNER": body.mr_owner,
        "MROWNERCONFIG": body.mr_owner_config,
        "RTMRS": b"".join(body.rtmrs),
    }
    for name, (offset, size) in _TD_FIELDS.items():
        if not hmac.compare_digest(td_report[offset : offset + size], quoted[name]):
            return f"{name} of the TD quote differs from the HCL's TD report"
    return None


def _check_ak(hcl: HclReport, report: EvidenceReport) -> AkPublic | None:
    jwk = hcl.key("HCLAkPub")
    if jwk is None:
        report.fail("hcl.ak", "the runtime data has no HCLAkPub key")
        return None
    try:
        ak = ak_from_jwk(jwk)
    except InputError as exc:
        report.fail("hcl.ak", exc.message)
        return None
    report.passed("hcl.ak", f"HCLAkPub {ak.describe()} from the hardware-bound runtime data")
    return ak


# --- input forms -------------------------------------------------------------------------------


def evidence_from_json(data: bytes) -> AzureEvidence:
    """The CoCo/trustee ``az-snp-vtpm`` / ``az-tdx-vtpm`` evidence JSON (versions 0-2)."""
    doc = parse_json(data, what="Azure evidence")
    if not isinstance(doc, dict):
        raise InputError("Azure evidence must be a JSON object", code="azure-cvm.format")
    quote = doc.get("tpm_quote", doc.get("quote"))
    if not isinstance(quote, dict):
        raise InputError("Azure evidence lacks tpm_quote", code="azure-cvm.format")
    text = "b64" if isinstance(doc.get("report"), list) else "hex"
    pcrs = quote.get("pcrs")
    values = None
    if isinstance(pcrs, list):
        values = {
            SHA256_BANK: {i: json_bytes(v, f"pcr {i}", text="hex") for i, v in enumerate(pcrs)}
        }
    hcl = doc.get("hcl_report", doc.get("report"))
    vcek = doc.get("vcek")
    td_quote = doc.get("td_quote")
    return AzureEvidence(
        hcl_report=json_bytes(hcl, "hcl_report"),
        quote=json_bytes(quote.get("message"), "tpm_quote.message", text=text),
        signature=json_bytes(quote.get("signature"), "tpm_quote.signature", text=text),
        pcrs=values,
        vcek=vcek.encode() if isinstance(vcek, str) and "BEGIN" in vcek else _opt(vcek, "vcek"),
        td_quote=_opt(td_quote, "td_quote"),
    )


def _opt(value: Any, what: str) -> bytes | None:
    return None if value is None else json_bytes(value, what)


def evidence_from_embedded(evidence: dict[str, Any]) -> AzureEvidence:
    unknown = sorted(set(evidence) - EMBEDDED_MEMBERS)
    missing = sorted({"hcl_report", "quote", "signature"} - set(evidence))
    if unknown or missing:
        raise InputError(
            f"azure-cvm evidence: missing {missing}, unexpected {unknown}",
            code="azure-cvm.embedded",
        )
    raw = {k: b64url_decode(v, what=f"azure-cvm evidence {k}") for k, v in evidence.items()}
    pcrs = pcrs_from_json(parse_json(raw["pcrs"], what="azure-cvm pcrs")) if "pcrs" in raw else None
    collateral = {k: raw[k] for k in _TDX_COLLATERAL if k in raw}
    return AzureEvidence(
        hcl_report=raw["hcl_report"],
        quote=raw["quote"],
        signature=raw["signature"],
        pcrs=pcrs,
        vcek=raw.get("vcek"),
        chain=raw.get("chain"),
        td_quote=raw.get("td_quote"),
        collateral=TdxCollateral(**collateral) if collateral else None,
    )


class AzureCvm:
    """``--type azure-cvm``: Azure confidential VMs (SEV-SNP or TDX behind the vTPM)."""

    name = NAME

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--azure-evidence",
            metavar="FILE",
            help="Azure CVM evidence JSON (HCL report, vTPM quote, VCEK or TD quote)",
        )

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        path = getattr(args, "azure_evidence", None)
        if path is None:
            raise InputError("--type azure-cvm needs --azure-evidence FILE", code="evidence.usage")
        evidence = evidence_from_json(read_input(path, what="Azure evidence"))
        vcek_path, chain_path = getattr(args, "snp_vcek", None), getattr(args, "snp_chain", None)
        if vcek_path or chain_path:
            evidence = AzureEvidence(
                **{
                    **{f.name: getattr(evidence, f.name) for f in fields(AzureEvidence)},
                    "vcek": read_input(vcek_path, what="VCEK") if vcek_path else evidence.vcek,
                    "chain": read_input(chain_path, what="chain") if chain_path else None,
                }
            )
        return verify_azure(evidence, policy)

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        # In a claim extraData carries the binding digest, compared by the claim verifier.
        return verify_azure(evidence_from_embedded(evidence), _no_raw_checks(policy))


register(AzureCvm())
