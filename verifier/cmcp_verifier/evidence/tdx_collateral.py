"""Intel DCAP collateral documents for TDX: TCB info v3 and QE identity v2.

Parsing is strict and raises :class:`InputError` (code ``tdx.collateral.*``). Signed
collateral is JSON ``{"tcbInfo"|"enclaveIdentity": {...}, "signature": "<hex r‖s>"}`` where the
ECDSA P-256 signature covers the exact bytes of the first member's value as they appear in the
file, so :func:`parse_signed_json` returns those bytes untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from ..canonical import parse_json
from ..errors import InputError

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
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
MAX_COLLATERAL_BYTES = 1 << 20


def _bad(message: str, *, code: str = "tdx.collateral.malformed") -> InputError:
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
class IsvLevel:
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
    levels: tuple[IsvLevel, ...]


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


def _isv_levels(obj: dict[str, Any], what: str, limit: int) -> tuple[IsvLevel, ...]:
    """``tcbLevels`` keyed by a single ISVSVN (TDX module and QE identities)."""
    return tuple(
        IsvLevel(
            isv_svn=_int(_get(lv, "tcb", dict, what), "isvsvn", what, limit),
            date=_get(lv, "tcbDate", str, what),
            status=_status(lv, what),
            advisory_ids=_advisories(lv, what),
        )
        for lv in _objects(obj, "tcbLevels", what)
    )


def _module(obj: dict[str, Any], what: str, *, with_levels: bool) -> TdxModuleIdentity:
    levels = _isv_levels(obj, what, 0xFF) if with_levels else ()
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
            code="tdx.collateral.tcb_info_kind",
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
    levels: tuple[IsvLevel, ...]


def parse_qe_identity(body: dict[str, Any]) -> QeIdentity:
    """The ``enclaveIdentity`` member of a QE identity document (version 2)."""
    what = "QE identity"
    if body.get("version") != 2:
        raise _bad(
            f"QE identity version {body.get('version')!r} is not 2", code="tdx.collateral.qe_kind"
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
        levels=_isv_levels(body, what, 0xFFFF),
    )
