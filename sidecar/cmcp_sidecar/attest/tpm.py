"""The ``tpm`` provider: TPM 2.0 quotes bound to the gateway, with the bundle in NV.

Each collection, through :class:`~.tpm_device.TpmDevice` in a worker thread:

* **quote** — TPM2_Quote by the attestation key over the configured PCRs (default
  ``sha256:0-7``) with the 32-byte binding digest as qualifying data (extraData), plus the PCR
  values (read around the quote until they match its pcrDigest) and the TCG event log when
  the TPM is the machine's own (``/sys/kernel/security/tpm0/binary_bios_measurements``);
* **bundle** — TPM2_NV_Certify of the bundle NV index with the same qualifying data. Before
  evidence for a bundle is collected (:meth:`TpmProvider.measure_bundle`), the provider defines
  the NV extend index afresh and extends it once with the bundle's 32-byte SHA-256 digest, so
  it holds SHA-256(32 zero bytes ‖ digest) (:func:`cmcp_verifier.binding.bundle_measurement`):
  a verifier recomputes that one value from the claim's bundle hash, nothing to replay. An
  NV index rather than a PCR: it collides with no boot or OS measurement, a reload resets it
  (PCRs only reset at reboot, except the debug PCR 16 and PCR 23 which other software uses),
  and it leaves the quoted PCRs — the launch measurement — independent of the bundle.

Members (the verifier's embedded form, :mod:`cmcp_verifier.evidence.tpm`): ``quote``,
``signature``, ``ak_public``, ``ak_cert`` (+ ``ak_chain``), ``pcrs``, ``event_log``,
``bundle_nv_public``, ``bundle_nv_attest``, ``bundle_nv_signature``. Measurement: the quote's
``sha256:<pcrDigest>``.

Options (``attestation.tpm``): ``tcti`` (default ``device:/dev/tpmrm0``; ``CMCP_TPM_TCTI``
overrides), ``pcrs`` (list of PCR indices, default 0-7), ``pcr_bank`` (default ``sha256``),
``ak_handle`` (a persistent AK), ``ak_cert`` / ``ak_chain`` (files, PEM or DER: the AK
certificate an operator's CA issued and its intermediates; a certificate in the platform's NV
— Azure, GCE — is used otherwise), ``bundle_nv_index`` (default 0x018C4D50 in the owner range;
``null`` disables), ``event_log`` (a path, ``auto`` or ``null``). Without an AK certificate the
provider refuses: claims would not verify. ``python -m cmcp_sidecar.attest.tpm ak`` prints the
AK an operator certifies (docs/attestation.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.evidence.tpm_pcrs import pcrs_to_json
from cmcp_verifier.evidence.tpm_structures import HASH_BY_NAME

from .base import AttestationError, AttestationProvider, Evidence, Probe
from .registry import ProviderContext, register_builtin
from .tpm_device import Ak, TpmDevice, TpmError, in_thread

DEFAULT_TCTI = "device:/dev/tpmrm0"
ENV_TCTI = "CMCP_TPM_TCTI"
DEFAULT_PCRS = tuple(range(8))
BUNDLE_NV_INDEX = 0x018C4D50
EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
MAX_EVENT_LOG = 16 << 20
QUOTE_ATTEMPTS = 3


def _nv_extend_attributes() -> int:
    from tpm2_pytss import TPM2_NT, TPMA_NV

    return int(
        TPMA_NV.AUTHWRITE
        | TPMA_NV.AUTHREAD
        | TPMA_NV.OWNERREAD
        | TPMA_NV.NO_DA
        | (TPM2_NT.EXTEND << TPMA_NV.TPM2_NT_SHIFT)
    )


@dataclass(frozen=True)
class TpmSettings:
    """``attestation.tpm`` (see the module docs)."""

    tcti: str = DEFAULT_TCTI
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    pcr_bank: str = "sha256"
    ak_handle: int | None = None
    ak_cert: Path | None = None
    ak_chain: Path | None = None
    bundle_nv_index: int | None = BUNDLE_NV_INDEX
    event_log: Path | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], provider: str = "tpm") -> TpmSettings:
        """Validate the config section; the environment's CMCP_TPM_TCTI wins over ``tcti``."""
        unknown = sorted(set(options) - _KEYS)
        if unknown:
            raise _config(provider, f"unknown keys {unknown}; known: {sorted(_KEYS)}")
        tcti = os.environ.get(ENV_TCTI) or options.get("tcti") or DEFAULT_TCTI
        if not isinstance(tcti, str):
            raise _config(provider, "tcti must be a string such as 'device:/dev/tpmrm0'")
        pcrs = options.get("pcrs", DEFAULT_PCRS)
        if (
            not isinstance(pcrs, list | tuple)
            or not pcrs
            or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 23 for p in pcrs)
        ):
            raise _config(provider, "pcrs must be a non-empty list of PCR indices 0-23")
        bank = options.get("pcr_bank", "sha256")
        if bank not in ("sha1", "sha256", "sha384", "sha512"):
            raise _config(provider, "pcr_bank must be sha1, sha256, sha384 or sha512")
        nv = options.get("bundle_nv_index", BUNDLE_NV_INDEX)
        return cls(
            tcti=tcti,
            pcrs=tuple(sorted(set(pcrs))),
            pcr_bank=bank,
            ak_handle=_handle(provider, options.get("ak_handle"), "ak_handle", 0x81000000),
            ak_cert=_path(provider, options.get("ak_cert"), "ak_cert"),
            ak_chain=_path(provider, options.get("ak_chain"), "ak_chain"),
            bundle_nv_index=_handle(provider, nv, "bundle_nv_index", 0x01000000),
            event_log=_event_log(provider, options.get("event_log", "auto"), tcti),
        )


_KEYS = frozenset(
    {"tcti", "pcrs", "pcr_bank", "ak_handle", "ak_cert", "ak_chain", "bundle_nv_index", "event_log"}
)


def _config(provider: str, message: str) -> AttestationError:
    return AttestationError(
        provider, f"attestation.{provider}: {message}", code="attestation.config"
    )


def _handle(provider: str, value: Any, key: str, base: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise _config(provider, f"{key} must be a number such as 0x{base:08x}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value >> 24 != base >> 24:
        raise _config(provider, f"{key} must be a handle 0x{base >> 24:02x}xxxxxx")
    return value


def _path(provider: str, value: Any, key: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _config(provider, f"{key} must be a file path")
    return Path(value)


def _event_log(provider: str, value: Any, tcti: str) -> Path | None:
    if value is None:
        return None
    if value == "auto":  # the machine's log describes the machine's TPM only
        return Path(EVENT_LOG) if tcti.startswith("device:") else None
    return _path(provider, value, "event_log")


class TpmProvider(AttestationProvider):
    """TPM 2.0 quotes (see the module docs)."""

    name = "tpm"
    evidence_type = "tpm"
    platform = "tpm2"

    def __init__(self, settings: TpmSettings, device: TpmDevice | None = None) -> None:
        self.settings = settings
        self.device = device or TpmDevice(settings.tcti)
        self._ak: Ak | None = None
        self._chain: bytes | None = None
        self._measured: str | None = None

    async def probe(self) -> Probe:
        ak = await in_thread(self.name, self._prepare)
        return Probe(True, f"TPM at {self.settings.tcti}, AK: {ak.source}")

    async def measure_bundle(self, bundle_hash: str) -> None:
        index = self.settings.bundle_nv_index
        if index is None or bundle_hash == self._measured:
            return
        await in_thread(self.name, self._measure, index, bundle_hash)
        self._measured = bundle_hash

    async def collect(self, report_data: bytes) -> Evidence:
        return await in_thread(self.name, self._collect, report_data)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._release)

    # -- blocking work (worker thread) -----------------------------------------------------------

    def _prepare(self) -> Ak:
        if self._ak is None:
            cert = self._read_file(self.settings.ak_cert, "ak_cert")
            self._chain = self._read_file(self.settings.ak_chain, "ak_chain", der=False)
            ak = self.device.load_ak(self.settings.ak_handle, cert)
            if ak.certificate is None:
                self.device.release(ak)
                raise AttestationError(
                    self.name,
                    f"no certificate for the attestation key ({ak.source}): "
                    "claims would not verify",
                    code="attestation.no_ak_certificate",
                    hint="certify the AK (python -m cmcp_sidecar.attest.tpm ak prints it) and "
                    "set attestation.tpm.ak_cert; see docs/attestation.md",
                )
            self._ak = ak
        return self._ak

    def _read_file(self, path: Path | None, key: str, *, der: bool = True) -> bytes | None:
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AttestationError(
                self.name,
                f"cannot read attestation.tpm.{key} {str(path)!r}: {exc.strerror}",
                code="attestation.config",
            ) from None
        if not der or b"-----BEGIN" not in data:
            return data
        try:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise AttestationError(
                self.name,
                f"attestation.tpm.{key} is not a certificate: {exc}",
                code="attestation.config",
            ) from None

    def _measure(self, index: int, bundle_hash: str) -> None:
        digest = bytes.fromhex(bundle_hash.removeprefix("sha256:"))
        try:
            self.device.nv_define(index, 32, _nv_extend_attributes())
            self.device.nv_extend(index, digest)
        except TpmError as exc:
            raise TpmError(
                f"cannot record the bundle in NV index 0x{index:08x}: {exc}",
                "the owner hierarchy needs an empty authorisation to define the index; or "
                "choose another attestation.tpm.bundle_nv_index (null disables it)",
            ) from None

    def _collect(self, binding: bytes) -> Evidence:
        ak = self._prepare()
        s = self.settings
        quote, values = self._consistent_quote(ak, binding)
        members: dict[str, bytes] = {
            "quote": quote.attest,
            "signature": quote.signature,
            "ak_public": ak.public,
            "pcrs": canonical_bytes(pcrs_to_json({HASH_BY_NAME[s.pcr_bank].alg_id: values})),
        }
        if ak.certificate is not None:
            members["ak_cert"] = ak.certificate
        if self._chain:
            members["ak_chain"] = self._chain
        if s.bundle_nv_index is not None and self._measured is not None:
            nv = self.device.nv_certify(ak, s.bundle_nv_index, 32, binding)
            members["bundle_nv_public"] = self.device.nv_public(s.bundle_nv_index)
            members["bundle_nv_attest"] = nv.attest
            members["bundle_nv_signature"] = nv.signature
        log = _read_event_log(s.event_log)
        if log is not None:
            members["event_log"] = log
        from tpm2_pytss import TPMS_ATTEST

        attest, _ = TPMS_ATTEST.unmarshal(quote.attest)
        return Evidence(
            members=members,
            measurement="sha256:" + self.device.pcr_digest(quote.attest).hex(),
            report_data=bytes(attest.extraData),
            collected_at=int(time.time()),
            facts={
                "tcti": s.tcti,
                "ak": ak.source,
                "pcrs": f"{s.pcr_bank}:{','.join(map(str, s.pcrs))}",
                "bundle_nv_index": None
                if s.bundle_nv_index is None
                else f"0x{s.bundle_nv_index:08x}",
                "event_log": log is not None,
            },
        )

    def _consistent_quote(self, ak: Ak, binding: bytes) -> tuple[Any, dict[int, bytes]]:
        """A quote and PCR values that match its pcrDigest (PCRs may move between the two)."""
        s = self.settings
        for _ in range(QUOTE_ATTEMPTS):
            values = self.device.pcr_values(s.pcr_bank, s.pcrs)
            quote = self.device.quote(ak, s.pcr_bank, s.pcrs, binding)
            composite = hashlib.sha256(b"".join(values[i] for i in s.pcrs)).digest()
            if composite == self.device.pcr_digest(quote.attest):
                return quote, values
        raise TpmError(
            f"PCRs {s.pcr_bank}:{','.join(map(str, s.pcrs))} kept changing during the quote",
            "something extends these PCRs continuously; quote other PCRs (attestation.tpm.pcrs)",
        )

    def _release(self) -> None:
        if self._ak is not None:
            self.device.release(self._ak)
            self._ak = None
        self.device.close()


def _read_event_log(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_EVENT_LOG + 1)
    except OSError:
        return None  # securityfs not mounted or not readable: the quote stands alone
    return data if 0 < len(data) <= MAX_EVENT_LOG else None


def _factory(context: ProviderContext) -> TpmProvider:
    return TpmProvider(TpmSettings.from_options(context.options))


register_builtin(TpmProvider.name, _factory)


def main(argv: list[str] | None = None) -> int:
    """``python -m cmcp_sidecar.attest.tpm ak [--tcti T]``: the AK an operator certifies."""
    parser = argparse.ArgumentParser(prog="python -m cmcp_sidecar.attest.tpm")
    parser.add_argument("command", choices=["ak"])
    parser.add_argument("--tcti", default=os.environ.get(ENV_TCTI, DEFAULT_TCTI))
    parser.add_argument("--ak-handle", default=None, help="a persistent AK handle")
    args = parser.parse_args(argv)
    try:
        settings = TpmSettings.from_options({"tcti": args.tcti, "ak_handle": args.ak_handle})
        device = TpmDevice(settings.tcti)
        try:
            ak = device.load_ak(settings.ak_handle, None)
            device.release(ak)
        finally:
            device.close()
    except (TpmError, AttestationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    key = load_der_public_key(ak.spki)
    sys.stdout.write(f"# AK: {ak.source}; TPM2B_PUBLIC: {ak.public.hex()}\n")
    sys.stdout.write(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
