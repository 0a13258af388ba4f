"""TDX TCB level evaluation, as Intel's Quote Verification Library (QVL) does it for TDX.

Pure functions of parsed inputs (no cryptography, no clock), so each branch can be tested
on its own. The result is a status string: the TCB info vocabulary of
:mod:`.tdx_collateral`, or one of the outcomes below.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sgx_pck import PckTcb
from .tdx_collateral import (
    CONFIGURATION_AND_SW_HARDENING_NEEDED,
    CONFIGURATION_NEEDED,
    OUT_OF_DATE,
    OUT_OF_DATE_CONFIGURATION_NEEDED,
    REVOKED,
    SW_HARDENING_NEEDED,
    UP_TO_DATE,
    IsvLevel,
    QeIdentity,
    TcbInfo,
    TcbLevel,
    TdxModuleIdentity,
)
from .tdx_quote import EnclaveReport, TdQuote

RELAUNCH_ADVISED = "TDRelaunchAdvised"
RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"
NOT_SUPPORTED = "NotSupported"  # no TCB level matches: older than anything Intel lists
TCB_INFO_MISMATCH = "TCBInfoMismatch"
TDX_MODULE_MISMATCH = "TDXModuleMismatch"
QE_IDENTITY_MISMATCH = "QEIdentityMismatch"
ACCEPTABLE = frozenset({UP_TO_DATE})
ACCEPTABLE_WITH_WARNING = frozenset(
    {
        SW_HARDENING_NEEDED,
        CONFIGURATION_NEEDED,
        CONFIGURATION_AND_SW_HARDENING_NEEDED,
        RELAUNCH_ADVISED,
        RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    }
)
_PLATFORM_CURRENT = frozenset(
    {UP_TO_DATE, SW_HARDENING_NEEDED, CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED}
)
_CONFIGURATION = frozenset(
    {
        CONFIGURATION_NEEDED,
        OUT_OF_DATE_CONFIGURATION_NEEDED,
        CONFIGURATION_AND_SW_HARDENING_NEEDED,
        RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    }
)


@dataclass(frozen=True)
class QeResult:
    """The quoting enclave against its identity: a TCB status, or a mismatch."""

    status: str
    detail: str
    advisory_ids: tuple[str, ...] = ()


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def evaluate_qe(identity: QeIdentity, report: EnclaveReport) -> QeResult:
    """Match the QE report against the QE identity, then find its TCB level by ISVSVN."""
    problems = []
    if identity.id != "TD_QE":
        problems.append(f"identity is for {identity.id!r}, not TD_QE")
    if _masked(report.misc_select, identity.misc_select_mask) != identity.misc_select:
        problems.append("MISCSELECT differs")
    if _masked(report.attributes, identity.attributes_mask) != identity.attributes:
        problems.append("ATTRIBUTES differ")
    if report.mr_signer != identity.mr_signer:
        problems.append("MRSIGNER differs")
    if report.isv_prod_id != identity.isv_prod_id:
        problems.append(f"ISVPRODID {report.isv_prod_id} != {identity.isv_prod_id}")
    if problems:
        return QeResult(QE_IDENTITY_MISMATCH, "; ".join(problems))
    for level in identity.levels:
        if report.isv_svn >= level.isv_svn:
            status = level.status if level.status in (UP_TO_DATE, REVOKED) else OUT_OF_DATE
            return QeResult(
                status, f"ISVSVN {report.isv_svn} ≥ {level.isv_svn}", level.advisory_ids
            )
    return QeResult(NOT_SUPPORTED, f"ISVSVN {report.isv_svn} is below every QE TCB level")


@dataclass(frozen=True)
class TcbResult:
    """The outcome of TCB evaluation, with the pieces it was converged from."""

    status: str
    detail: str
    platform_status: str | None = None
    tdx_level: TcbLevel | None = None
    module_id: str | None = None
    module_status: str | None = None
    qe: QeResult | None = None
    advisory_ids: tuple[str, ...] = ()


def _module_identity(info: TcbInfo, quote: TdQuote) -> TdxModuleIdentity | str:
    """The TDX module identity the quote must match, or why there is none."""
    version = quote.body.tee_tcb_svn[1]
    if version == 0:
        return info.tdx_module
    wanted = f"TDX_{version:02X}"
    for ident in info.module_identities:
        if ident.id.upper() == wanted:
            return ident
    return f"TCB info has no TDX module identity {wanted}"


def _module_problem(ident: TdxModuleIdentity, quote: TdQuote) -> str | None:
    body = quote.body
    if body.mr_signer_seam != ident.mr_signer:
        return "MRSIGNERSEAM differs from the TDX module identity"
    if any(body.seam_attributes) or (
        _masked(body.seam_attributes, ident.attributes_mask) != ident.attributes
    ):
        return "SEAMATTRIBUTES are not zero / do not match the TDX module identity"
    return None


def _match_levels(
    info: TcbInfo, pck: PckTcb, tee_tcb_svn: bytes
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """First level the platform (CPUSVN components, PCESVN) meets, and first it meets with TDX."""
    first_tdx = 2 if tee_tcb_svn[1] > 0 else 0  # module SVN/version are judged by identity
    sgx_level = None
    for level in info.levels:
        if pck.pce_svn < level.pce_svn or any(
            a < b for a, b in zip(pck.sgx_svns, level.sgx_svns, strict=True)
        ):
            continue
        sgx_level = sgx_level or level
        if all(tee_tcb_svn[i] >= level.tdx_svns[i] for i in range(first_tdx, 16)):
            return sgx_level, level
    return sgx_level, None


def _module_status(ident: TdxModuleIdentity, quote: TdQuote) -> tuple[str, IsvLevel | None]:
    if quote.body.tee_tcb_svn[1] == 0:
        return UP_TO_DATE, None
    isv_svn = quote.body.tee_tcb_svn[0]
    for level in ident.levels:
        if isv_svn >= level.isv_svn:
            return level.status, level
    return NOT_SUPPORTED, None


def _converge(status: str, other: str) -> str:
    """Intel's convergence of a TCB level status with a TDX module's or QE's status."""
    if other == OUT_OF_DATE:
        if status in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return OUT_OF_DATE
        if status in (CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return OUT_OF_DATE_CONFIGURATION_NEEDED
    if other in (REVOKED, NOT_SUPPORTED):
        return other
    return status


def _relaunch(info: TcbInfo, quote: TdQuote, sgx: str, tdx: str, module: str) -> str:
    """TD 1.5: an out-of-date TD on an updated platform is advised to relaunch."""
    svn2 = quote.body.tee_tcb_svn2
    if (
        svn2 is None
        or not info.levels
        or sgx not in _PLATFORM_CURRENT
        or tdx not in (OUT_OF_DATE, OUT_OF_DATE_CONFIGURATION_NEEDED)
        or module != OUT_OF_DATE
    ):
        return tdx
    latest = info.levels[0]
    if svn2[1] == 0:
        module_ok = svn2[0] >= latest.tdx_svns[0]
    else:
        wanted = f"TDX_{svn2[1]:02X}"
        idents = [i for i in info.module_identities if i.id.upper() == wanted]
        if not idents or not idents[0].levels:
            return TDX_MODULE_MISMATCH if not idents else NOT_SUPPORTED
        module_ok = svn2[0] >= idents[0].levels[0].isv_svn
    if not (module_ok and svn2[2] >= latest.tdx_svns[2]):
        return tdx
    if sgx in _CONFIGURATION or tdx in _CONFIGURATION:
        return RELAUNCH_ADVISED_CONFIGURATION_NEEDED
    return RELAUNCH_ADVISED


def evaluate_tcb(info: TcbInfo, pck: PckTcb, quote: TdQuote, qe: QeResult | None) -> TcbResult:
    """The TDX TCB status of a quote on a platform, per Intel's QVL algorithm.

    Order: TCB info must be for the PCK's FMSPC and PCE; the TDX module (MRSIGNERSEAM,
    SEAMATTRIBUTES) must match its identity; the QE must match its identity; then the first
    TCB level whose SGX components, PCESVN and TDX components the platform meets gives the
    platform status, converged with the TDX module's and the QE's own TCB status.
    """
    if pck.fmspc != info.fmspc or pck.pce_id != info.pce_id:
        return TcbResult(
            TCB_INFO_MISMATCH,
            f"TCB info is for FMSPC {info.fmspc.hex()} / PCE {info.pce_id.hex()}, the PCK for "
            f"{pck.fmspc.hex()} / {pck.pce_id.hex()}",
            qe=qe,
        )
    ident = _module_identity(info, quote)
    problem = ident if isinstance(ident, str) else _module_problem(ident, quote)
    if problem is not None or isinstance(ident, str):
        return TcbResult(TDX_MODULE_MISMATCH, problem or "", qe=qe)
    if qe is not None and qe.status == QE_IDENTITY_MISMATCH:
        return TcbResult(QE_IDENTITY_MISMATCH, f"QE: {qe.detail}", qe=qe)
    sgx_level, tdx_level = _match_levels(info, pck, quote.body.tee_tcb_svn)
    if sgx_level is None or tdx_level is None:
        what = "CPUSVN/PCESVN" if sgx_level is None else "TEE_TCB_SVN"
        return TcbResult(
            NOT_SUPPORTED, f"no TCB level matches: platform {what} below every level", qe=qe
        )
    module_status, module_level = _module_status(ident, quote)
    if module_status == NOT_SUPPORTED:
        status, detail = NOT_SUPPORTED, "TDX module ISVSVN is below every module level"
    else:
        status = _converge(tdx_level.status, module_status)
        if status != REVOKED:
            status = _relaunch(info, quote, sgx_level.status, status, module_status)
            status = _converge(status, qe.status) if qe is not None else status
        detail = (
            f"platform {tdx_level.status} (level of {tdx_level.date}), "
            f"TDX module {ident.id or 'v0'} {module_status}"
            + (f", QE {qe.status}" if qe is not None else "")
        )
    advisories = tdx_level.advisory_ids + (module_level.advisory_ids if module_level else ())
    advisories += qe.advisory_ids if qe is not None else ()
    return TcbResult(
        status,
        detail,
        platform_status=tdx_level.status,
        tdx_level=tdx_level,
        module_id=ident.id or None,
        module_status=module_status,
        qe=qe,
        advisory_ids=tuple(dict.fromkeys(advisories)),
    )
