"""PCR values: the files tools write, and the composite digest a quote signs.

:data:`PcrValues` maps a bank's TPM_ALG_ID to ``{pcr index: value}``. :func:`parse_pcr_file`
reads, detected by content:

- JSON ``{"sha256": {"0": "<hex>", …}, "sha1": {…}}`` (optionally wrapped in ``{"pcrs": …}``);
- YAML as printed by ``tpm2_pcrread`` or ``tpm2_quote`` (``sha256:`` / ``  0 : 0x…``, optionally
  under ``pcrs:``);
- ``tpm2_quote -o FILE`` / ``tpm2_pcrread -o FILE`` binary in the default ``-F serialized``
  form (little-endian TPML_PCR_SELECTION and TPML_DIGEST structures as tpm2-tools lays them
  out in memory);
- ``-F values``: the selected values concatenated, interpretable only against the quote's PCR
  selection (pass ``selection``).

:func:`pcr_composite_digest` is what TPM2_Quote's pcrDigest holds: H(values of the selected
PCRs, in selection order), with H the quote's signing hash.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ..canonical import parse_json
from ..errors import InputError
from .tpm_structures import (
    HASH_ALGS,
    HASH_BY_NAME,
    MAX_DIGEST,
    MAX_PCR_BANKS,
    MAX_SIZEOF_SELECT,
    OTHER_HASH_SIZES,
    HashAlg,
    PcrSelection,
    alg_name,
)

PcrValues = dict[int, dict[int, bytes]]
MAX_PCR_FILE = 1 << 20
MAX_PCR_INDEX = 31
_SER_SELECTION = 4 + 16 * 8  # count + 16 × (hash u16, sizeofSelect u8, pcrSelect[4], pad)
_SER_DIGEST_LIST = 4 + 8 * (2 + MAX_DIGEST)  # count + 8 × TPM2B_DIGEST
_SER_MAX_LISTS = 64


def digest_size(alg_id: int) -> int:
    """Size of a bank's values; InputError for an algorithm we do not know."""
    if alg_id in HASH_ALGS:
        return HASH_ALGS[alg_id].size
    if alg_id in OTHER_HASH_SIZES:
        return OTHER_HASH_SIZES[alg_id]
    raise InputError(f"unknown PCR bank algorithm 0x{alg_id:04x}", code="pcrs.bank")


def parse_pcr_file(data: bytes, selection: Sequence[PcrSelection] | None = None) -> PcrValues:
    """PCR values from any supported file form (see the module docs)."""
    if len(data) > MAX_PCR_FILE:
        raise InputError(f"PCR file is larger than {MAX_PCR_FILE} bytes", code="pcrs.too_large")
    if data.lstrip()[:1] == b"{":
        return pcrs_from_json(parse_json(data, what="PCR file"))
    if _looks_serialized(data):
        return _parse_serialized(data)
    text = _as_text(data)
    if selection is not None and len(data) == sum(
        digest_size(s.hash_alg) * len(s.pcrs) for s in selection
    ):
        if text is None:
            return _parse_values(data, selection)
        try:
            return _parse_yaml(text)
        except InputError:
            return _parse_values(data, selection)
    if text is None:
        raise InputError(
            "PCR file is neither JSON, YAML, tpm2-tools serialized binary, nor raw values "
            "matching the quote's PCR selection",
            code="pcrs.format",
        )
    return _parse_yaml(text)


def _as_text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def pcrs_from_json(obj: Any) -> PcrValues:
    """``{"sha256": {"0": "<hex>"}}`` (or ``{"pcrs": {…}}``) as :data:`PcrValues`."""
    if isinstance(obj, dict) and set(obj) == {"pcrs"}:
        obj = obj["pcrs"]
    return _from_mapping(obj, "PCR JSON")


def pcrs_to_json(values: Mapping[int, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    """The JSON form of :data:`PcrValues` (bank names, decimal indices, lowercase hex)."""
    return {
        alg_name(alg): {str(i): v.hex() for i, v in sorted(bank.items())}
        for alg, bank in sorted(values.items())
    }


def _parse_yaml(text: str) -> PcrValues:
    try:
        # BaseLoader: every scalar stays a string, so 0x… values keep their leading zeros.
        obj = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506  # nosec B506
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise InputError(
            f"PCR file is not valid YAML: {str(exc).splitlines()[0][:120]}", code="pcrs.format"
        ) from None
    if isinstance(obj, dict) and "pcrs" in obj:
        obj = obj["pcrs"]
    return _from_mapping(obj, "PCR YAML")


def _from_mapping(obj: Any, what: str) -> PcrValues:
    if not isinstance(obj, dict) or not obj or len(obj) > MAX_PCR_BANKS:
        raise InputError(
            f"{what} must map 1 to {MAX_PCR_BANKS} bank names to {{index: value}}",
            code="pcrs.format",
        )
    values: PcrValues = {}
    for bank, entries in obj.items():
        alg = HASH_BY_NAME.get(bank) if isinstance(bank, str) else None
        if alg is None:
            raise InputError(f"{what}: unknown PCR bank {str(bank)[:40]!r}", code="pcrs.bank")
        if not isinstance(entries, dict) or len(entries) > MAX_PCR_INDEX + 1:
            raise InputError(
                f"{what}: bank {bank} must map PCR indices to values", code="pcrs.format"
            )
        values[alg.alg_id] = {_index(k, what): _value(v, alg, what) for k, v in entries.items()}
    return values


def _index(key: Any, what: str) -> int:
    if isinstance(key, str) and key.isdigit() and len(key) <= 2 and int(key) <= MAX_PCR_INDEX:
        return int(key)
    raise InputError(f"{what}: bad PCR index {str(key)[:20]!r}", code="pcrs.format")


def _value(value: Any, alg: HashAlg, what: str) -> bytes:
    text = value[2:] if isinstance(value, str) and value[:2] in ("0x", "0X") else value
    if isinstance(text, str) and len(text) == 2 * alg.size:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raise InputError(
        f"{what}: {alg.name} PCR value must be {2 * alg.size} hex digits, got {str(value)[:40]!r}",
        code="pcrs.value",
    )


def _looks_serialized(data: bytes) -> bool:
    rest = len(data) - _SER_SELECTION - 4
    if rest < 0 or rest % _SER_DIGEST_LIST:
        return False
    (lists,) = struct.unpack_from("<I", data, _SER_SELECTION)
    return bool(lists == rest // _SER_DIGEST_LIST)


def _parse_serialized(data: bytes) -> PcrValues:
    (count,) = struct.unpack_from("<I", data, 0)
    if count > MAX_PCR_BANKS:
        raise InputError(f"serialized PCR file: {count} banks", code="pcrs.format")
    selection = []
    for i in range(count):
        alg, size = struct.unpack_from("<HB", data, 4 + 8 * i)
        if size > MAX_SIZEOF_SELECT:
            raise InputError(f"serialized PCR file: sizeofSelect {size}", code="pcrs.format")
        bitmap = data[4 + 8 * i + 3 : 4 + 8 * i + 3 + size]
        pcrs = tuple(j for j in range(8 * size) if bitmap[j // 8] >> (j % 8) & 1)
        selection.append(PcrSelection(alg, pcrs))
    (lists,) = struct.unpack_from("<I", data, _SER_SELECTION)
    if lists > _SER_MAX_LISTS:
        raise InputError(f"serialized PCR file: {lists} digest lists", code="pcrs.format")
    digests: list[bytes] = []
    for n in range(lists):
        base = _SER_SELECTION + 4 + n * _SER_DIGEST_LIST
        (k,) = struct.unpack_from("<I", data, base)
        if k > 8:
            raise InputError(f"serialized PCR file: TPML_DIGEST count {k}", code="pcrs.format")
        for j in range(k):
            (size,) = struct.unpack_from("<H", data, base + 4 + j * (2 + MAX_DIGEST))
            if size > MAX_DIGEST:
                raise InputError(f"serialized PCR file: digest size {size}", code="pcrs.format")
            start = base + 4 + j * (2 + MAX_DIGEST) + 2
            digests.append(data[start : start + size])
    return _assign(selection, digests, "serialized PCR file")


def _parse_values(data: bytes, selection: Sequence[PcrSelection]) -> PcrValues:
    digests, pos = [], 0
    for sel in selection:
        size = digest_size(sel.hash_alg)
        for _ in sel.pcrs:
            digests.append(data[pos : pos + size])
            pos += size
    return _assign(selection, digests, "PCR values file")


def _assign(selection: Sequence[PcrSelection], digests: list[bytes], what: str) -> PcrValues:
    wanted = sum(len(s.pcrs) for s in selection)
    if wanted != len(digests):
        raise InputError(
            f"{what}: {len(digests)} values for {wanted} selected PCRs", code="pcrs.format"
        )
    values: PcrValues = {}
    it = iter(digests)
    for sel in selection:
        size = digest_size(sel.hash_alg)
        bank = values.setdefault(sel.hash_alg, {})
        for idx in sel.pcrs:
            value = next(it)
            if len(value) != size:
                raise InputError(
                    f"{what}: {sel.bank} PCR {idx} value has {len(value)} bytes, not {size}",
                    code="pcrs.value",
                )
            bank[idx] = value
    return values


def pcr_composite(
    selection: Sequence[PcrSelection], values: Mapping[int, Mapping[int, bytes]]
) -> bytes:
    """The selected PCR values concatenated in selection order; InputError if one is missing."""
    missing = [
        f"{s.bank}:{i}" for s in selection for i in s.pcrs if i not in values.get(s.hash_alg, {})
    ]
    if missing:
        raise InputError(
            f"PCR values missing for the quoted {', '.join(missing[:8])}"
            + (" …" if len(missing) > 8 else ""),
            code="pcrs.missing",
        )
    return b"".join(values[s.hash_alg][i] for s in selection for i in s.pcrs)


def pcr_composite_digest(
    selection: Sequence[PcrSelection], values: Mapping[int, Mapping[int, bytes]], alg: HashAlg
) -> bytes:
    """pcrDigest as TPM2_Quote computes it: ``alg`` over :func:`pcr_composite`."""
    return alg.digest(pcr_composite(selection, values))
