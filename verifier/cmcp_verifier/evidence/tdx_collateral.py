"""Intel DCAP collateral for TDX: TCB info v3, QE identity v2, PCK certificate extensions, and
the TCB level evaluation of Intel's Quote Verification Library (QVL) for TDX.

Parsing is strict and raises :class:`InputError` (code ``tdx.collateral.*``); the evaluation
functions are pure (no cryptography, no clock) so each branch can be tested on its own.
Signed collateral is JSON ``{"tcbInfo"|"enclaveIdentity": {...}, "signature": "<hex r‖s>"}``
where the ECDSA P-256 signature covers the exact bytes of the first member's value as they
appear in the file, so :func:`parse_signed_json` returns those bytes untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ..canonical import parse_json
from ..errors import InputError
from .tdx_quote import EnclaveReport, TdQuote

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
RELAUNCH_ADVISED = "TDRelaunchAdvised"
RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"
NOT_SUPPORTED = "NotSupported"  # no TCB level matches: older than anything Intel lists
TCB_INFO_MISMATCH = "TCBInfoMismatch"
TDX_MODULE_MISMATCH = "TDXModuleMismatch"
QE_IDENTITY_MISMATCH = "QEIdentityMismatch"

LEVEL_STATUSES = frozenset(
    {
        UP_TO_DATE,
        SW_HARDENING_NEEDED,
        CONFIGURATION_NEEDED,
        CONFIGURATION_AND_SW_HARDENING_NEEDED,
        OUT_OF_DATE,
        OUT_OF_DATE_CONFIGURATION_NEEDED,
        REVOKED,
    }
)
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

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"
MAX_COLLATERAL_BYTES = 1 << 20


def _bad(message: str, code: str = "tdx.collateral.malformed") -> InputError:
    return InputError(message, code=code)


# --- signed JSON --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedJson:
    """A signed collateral document: its body, the exact signed bytes, and the signature."""

    body: dict[str, Any]
    signed_bytes: bytes
    signature: bytes


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _member_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans of the top-level members' values of an (already validated) object."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_ws(text, 0) + 1  # past "{"
    while True:
        pos = _skip_ws(text, pos)
        if text[pos] == "}":
            return spans
        key, pos = decoder.raw_decode(text, pos)
        start = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ":"
        _, end = decoder.raw_decode(text, start)
        spans[key] = (start, end)
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos += 1


def parse_signed_json(data: bytes, member: str, *, what: str) -> SignedJson:
    """Parse ``{member: {...}, "signature": hex}`` keeping ``member``'s raw bytes."""
    if len(data) > MAX_COLLATERAL_BYTES:
        raise _bad(f"{what} is larger than {MAX_COLLATERAL_BYTES} bytes")
    doc = parse_json(data, what=what)
    if not isinstance(doc, dict) or set(doc) != {member, "signature"}:
        raise _bad(f"{what} must be an object with exactly {member!r} and 'signature'")
    body = doc[member]
    if not isinstance(body, dict):
        raise _bad(f"{what}: {member!r} must be an object")
    signature = _hex(doc, "signature", 64, what)
    text = data.decode("utf-8")
    start, end = _member_spans(text)[member]
    return SignedJson(body, text[start:end].encode("utf-8"), signature)


# --- typed field access -------------------------------------------------------------------


def _get(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{what}: {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _int(obj: dict[str, Any], key: str, what: str, limit: int = 0xFFFF) -> int:
    value: int = _get(obj, key, int, what)
    if not 0 <= value <= limit:
        raise _bad(f"{what}: {key!r} = {value} is outside 0..{limit}")
    return value


def _hex(obj: dict[str, Any], key: str, size: int, what: str) -> bytes:
    text: str = _get(obj, key, str, what)
    if len(text) != 2 * size or not re.fullmatch(r"[0-9a-fA-F]*", text):
        raise _bad(f"{what}: {key!r} must be {size} bytes of hex")
    return bytes.fromhex(text)


def _time(obj: dict[str, Any], key: str, what: str) -> dt.datetime:
    text: str = _get(obj, key, str, what)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{what}: {key!r} is not an ISO 8601 time: {text[:40]!r}") from None
    if value.tzinfo is None:
        raise _bad(f"{what}: {key!r} has no time zone")
    return value


def _list(obj: dict[str, Any], key: str, what: str, *, max_len: int = 1024) -> list[Any]:
    value: list[Any] = _get(obj, key, list, what)
    if len(value) > max_len:
        raise _bad(f"{what}: {key!r} has more than {max_len} entries")
    return value


def _objects(obj: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    items = _list(obj, key, what)
    if not all(isinstance(i, dict) for i in items):
        raise _bad(f"{what}: every entry of {key!r} must be an object")
    return items


def _status(obj: dict[str, Any], what: str) -> str:
    status: str = _get(obj, "tcbStatus", str, what)
    if status not in LEVEL_STATUSES:
        raise _bad(f"{what}: unknown tcbStatus {status[:40]!r}")
    return status


def _advisories(obj: dict[str, Any], what: str) -> tuple[str, ...]:
    if "advisoryIDs" not in obj:
        return ()
    ids = _list(obj, "advisoryIDs", what)
    if not all(isinstance(i, str) and len(i) <= 64 for i in ids):
        raise _bad(f"{what}: advisoryIDs must be short strings")
    return tuple(ids)


# --- TCB info v3 (TDX) --------------------------------------------------------------------


@dataclass(frozen=True)
class TcbLevel:
    sgx_svns: tuple[int, ...]
    pce_svn: int
    tdx_svns: tuple[int, ...]
    date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class ModuleLevel:
    isv_svn: int
    date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[ModuleLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    fmspc: bytes
    pce_id: bytes
    evaluation_number: int
    tdx_module: TdxModuleIdentity
    module_identities: tuple[TdxModuleIdentity, ...]
    levels: tuple[TcbLevel, ...]


def _svns(tcb: dict[str, Any], key: str, what: str) -> tuple[int, ...]:
    comps = _objects(tcb, key, what)
    if len(comps) != 16:
        raise _bad(f"{what}: {key!r} must list 16 components")
    return tuple(_int(c, "svn", what, 0xFF) for c in comps)


def _tcb_level(obj: dict[str, Any], what: str) -> TcbLevel:
    tcb = _get(obj, "tcb", dict, what)
    return TcbLevel(
        sgx_svns=_svns(tcb, "sgxtcbcomponents", what),
        pce_svn=_int(tcb, "pcesvn", what),
        tdx_svns=_svns(tcb, "tdxtcbcomponents", what),
        date=_get(obj, "tcbDate", str, what),
        status=_status(obj, what),
        advisory_ids=_advisories(obj, what),
    )


def _module(obj: dict[str, Any], what: str, *, with_levels: bool) -> TdxModuleIdentity:
    levels: tuple[ModuleLevel, ...] = ()
    if with_levels:
        levels = tuple(
            ModuleLevel(
                isv_svn=_int(_get(lv, "tcb", dict, what), "isvsvn", what, 0xFF),
                date=_get(lv, "tcbDate", str, what),
                status=_status(lv, what),
                advisory_ids=_advisories(lv, what),
            )
            for lv in _objects(obj, "tcbLevels", what)
        )
    return TdxModuleIdentity(
        id=_get(obj, "id", str, what) if with_levels else "",
        mr_signer=_hex(obj, "mrsigner", 48, what),
        attributes=_hex(obj, "attributes", 8, what),
        attributes_mask=_hex(obj, "attributesMask", 8, what),
        levels=levels,
    )


def parse_tcb_info(body: dict[str, Any]) -> TcbInfo:
    """The ``tcbInfo`` member of a TDX TCB info document (version 3, id ``TDX``)."""
    what = "TCB info"
    if body.get("id") != "TDX" or body.get("version") != 3:
        raise _bad(
            f"TCB info id {body.get('id')!r} version {body.get('version')!r} is not TDX version 3",
            "tdx.collateral.tcb_info_kind",
        )
    modules: tuple[TdxModuleIdentity, ...] = ()
    if "tdxModuleIdentities" in body:
        modules = tuple(
            _module(m, what, with_levels=True) for m in _objects(body, "tdxModuleIdentities", what)
        )
    return TcbInfo(
        version=3,
        issue_date=_time(body, "issueDate", what),
        next_update=_time(body, "nextUpdate", what),
        fmspc=_hex(body, "fmspc", 6, what),
        pce_id=_hex(body, "pceId", 2, what),
        evaluation_number=_int(body, "tcbEvaluationDataNumber", what, 2**32),
        tdx_module=_module(_get(body, "tdxModule", dict, what), what, with_levels=False),
        module_identities=modules,
        levels=tuple(_tcb_level(lv, what) for lv in _objects(body, "tcbLevels", what)),
    )


# --- QE identity v2 -----------------------------------------------------------------------


@dataclass(frozen=True)
class QeIdentity:
    id: str
    issue_date: dt.datetime
    next_update: dt.datetime
    evaluation_number: int
    misc_select: bytes
    misc_select_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[ModuleLevel, ...]


def parse_qe_identity(body: dict[str, Any]) -> QeIdentity:
    """The ``enclaveIdentity`` member of a QE identity document (version 2)."""
    what = "QE identity"
    if body.get("version") != 2:
        raise _bad(
            f"QE identity version {body.get('version')!r} is not 2", "tdx.collateral.qe_kind"
        )
    return QeIdentity(
        id=_get(body, "id", str, what),
        issue_date=_time(body, "issueDate", what),
        next_update=_time(body, "nextUpdate", what),
        evaluation_number=_int(body, "tcbEvaluationDataNumber", what, 2**32),
        misc_select=_hex(body, "miscselect", 4, what),
        misc_select_mask=_hex(body, "miscselectMask", 4, what),
        attributes=_hex(body, "attributes", 16, what),
        attributes_mask=_hex(body, "attributesMask", 16, what),
        mr_signer=_hex(body, "mrsigner", 32, what),
        isv_prod_id=_int(body, "isvprodid", what),
        levels=tuple(
            ModuleLevel(
                isv_svn=_int(_get(lv, "tcb", dict, what), "isvsvn", what),
                date=_get(lv, "tcbDate", str, what),
                status=_status(lv, what),
                advisory_ids=_advisories(lv, what),
            )
            for lv in _objects(body, "tcbLevels", what)
        ),
    )


# --- PCK certificate SGX extensions -------------------------------------------------------


@dataclass(frozen=True)
class PckTcb:
    """What the PCK certificate says about the platform (SGX extension 1.2.840.113741.1.13.1)."""

    fmspc: bytes
    pce_id: bytes
    cpu_svn: bytes
    sgx_svns: tuple[int, ...]
    pce_svn: int


def _der_items(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """The (tag, content) pairs of concatenated DER TLVs."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2 or data[pos] & 0x1F == 0x1F:
            raise _bad(f"{what}: malformed DER", "tdx.pck.extension")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if not 1 <= n <= 4 or pos + n > len(data):
                raise _bad(f"{what}: malformed DER length", "tdx.pck.extension")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise _bad(f"{what}: DER value runs past its container", "tdx.pck.extension")
        items.append((tag, data[pos : pos + length]))
        pos += length
    return items


def _oid(content: bytes) -> str:
    if not content:
        return ""
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _pairs(content: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE { OID, value } → {oid: (tag, value content)}."""
    pairs: dict[str, tuple[int, bytes]] = {}
    for tag, seq in _der_items(content, what):
        inner = _der_items(seq, what)
        if tag != 0x30 or len(inner) != 2 or inner[0][0] != 0x06:
            raise _bad(f"{what}: expected SEQUENCE {{OID, value}}", "tdx.pck.extension")
        pairs[_oid(inner[0][1])] = inner[1]
    return pairs


def _field(pairs: dict[str, tuple[int, bytes]], oid: str, tag: int, what: str) -> bytes:
    if oid not in pairs or pairs[oid][0] != tag:
        raise _bad(f"PCK certificate SGX extension lacks {what} ({oid})", "tdx.pck.extension")
    return pairs[oid][1]


def _uint(content: bytes, what: str) -> int:
    if not 1 <= len(content) <= 3 or content[0] & 0x80:
        raise _bad(
            f"PCK certificate: {what} is not a small non-negative INTEGER", "tdx.pck.extension"
        )
    return int.from_bytes(content, "big")


def parse_pck_extensions(cert: x509.Certificate) -> PckTcb:
    """FMSPC, PCE id, CPUSVN, TCB component SVNs and PCESVN from a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise _bad("PCK certificate has no SGX extension", "tdx.pck.extension") from None
    except ValueError as exc:
        raise _bad(f"PCK certificate extensions unreadable: {exc}", "tdx.pck.extension") from None
    return parse_sgx_extension(ext.value if isinstance(ext, x509.UnrecognizedExtension) else b"")


def parse_sgx_extension(raw: bytes) -> PckTcb:
    """The DER value of the SGX extension: SEQUENCE OF {OID, value}, TCB nested likewise."""
    outer = _der_items(raw, "SGX extension")
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise _bad("PCK certificate SGX extension is not a SEQUENCE", "tdx.pck.extension")
    top = _pairs(outer[0][1], "SGX extension")
    tcb = _pairs(_field(top, f"{_SGX}.2", 0x30, "TCB"), "SGX TCB")
    svns = tuple(
        _uint(_field(tcb, f"{_SGX}.2.{i}", 0x02, f"SVN {i}"), f"SVN {i}") for i in range(1, 17)
    )
    cpu_svn = _field(tcb, f"{_SGX}.2.18", 0x04, "CPUSVN")
    fmspc = _field(top, f"{_SGX}.4", 0x04, "FMSPC")
    pce_id = _field(top, f"{_SGX}.3", 0x04, "PCE-ID")
    if len(cpu_svn) != 16 or len(fmspc) != 6 or len(pce_id) != 2:
        raise _bad(
            "PCK certificate: CPUSVN, FMSPC or PCE-ID has the wrong size", "tdx.pck.extension"
        )
    return PckTcb(
        fmspc=fmspc,
        pce_id=pce_id,
        cpu_svn=cpu_svn,
        sgx_svns=svns,
        pce_svn=_uint(_field(tcb, f"{_SGX}.2.17", 0x02, "PCESVN"), "PCESVN"),
    )


# --- evaluation (Intel QVL, TDX path) -----------------------------------------------------


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


def _module_status(ident: TdxModuleIdentity, quote: TdQuote) -> tuple[str, ModuleLevel | None]:
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
