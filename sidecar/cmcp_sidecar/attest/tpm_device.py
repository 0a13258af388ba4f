"""Blocking TPM 2.0 operations for the ``tpm`` and ``azure-cvm`` providers (tpm2-pytss).

One :class:`TpmDevice` holds one ESAPI context on one TCTI (``device:/dev/tpmrm0``,
``swtpm:host=…,port=…``, …). Every method blocks: the providers call them from a worker thread,
one at a time (the attestor serialises collections; a lock here guards the context anyway).
Errors are :class:`TpmError` with a hint; the providers turn them into AttestationError.

Attestation keys (:meth:`TpmDevice.load_ak`), in this order:

1. a persistent handle given in the configuration (``attestation.tpm.ak_handle``);
2. Azure: the AK at persistent handle 0x81000003 when its certificate is at NV 0x01C101D0;
3. GCE: the AK template at NV 0x01C10003 (ECC) or 0x01C10001 (RSA), created as a primary key
   in the endorsement hierarchy, with its certificate at NV 0x01C10002 / 0x01C10000;
4. otherwise :data:`DEFAULT_AK_TEMPLATE`: an ECC P-256 restricted signing key (ECDSA-SHA256,
   fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth) created as a primary key in the
   endorsement hierarchy. The TPM derives a primary key from its endorsement seed and the
   template alone, so it is the same key at every start: an operator certifies it once
   (``python -m cmcp_sidecar.attest.tpm ak``, docs/attestation.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from .base import AttestationError

T = TypeVar("T")
AZURE_AK_CERT_NV = 0x01C101D0
AZURE_AK_HANDLE = 0x81000003
GCE_AK_CERT_NV = {"ecc": 0x01C10002, "rsa": 0x01C10000}
GCE_AK_TEMPLATE_NV = {"ecc": 0x01C10003, "rsa": 0x01C10001}
NV_CHUNK = 512  # below every TPM's TPM2_PT_NV_BUFFER_MAX
MAX_NV_READ = 64 * 1024


class TpmError(Exception):
    """A TPM operation failed; ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str = "check the TPM (tpm2_getcap properties-fixed)"):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Ak:
    """A loaded attestation key."""

    handle: Any  # ESYS_TR
    public: bytes  # TPM2B_PUBLIC
    spki: bytes  # DER SubjectPublicKeyInfo
    source: str  # how it was found
    certificate: bytes | None  # DER, from NV or configuration
    transient: bool  # flush on close
    ecc: bool


@dataclass(frozen=True)
class SignedAttest:
    """A TPMS_ATTEST and its TPMT_SIGNATURE."""

    attest: bytes
    signature: bytes


async def in_thread(provider: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; a :class:`TpmError` becomes ``provider``'s
    AttestationError (code ``attestation.device``) with the same hint."""
    try:
        return await asyncio.to_thread(fn, *args)
    except TpmError as exc:
        raise AttestationError(
            provider, str(exc), hint=exc.hint, code="attestation.device"
        ) from None


def _pytss() -> Any:
    # tpm2-tss logs expected failures (probing NV indices that do not exist) to stderr
    # unless told otherwise; an operator's own TSS2_LOG still wins.
    os.environ.setdefault("TSS2_LOG", "all+none")
    try:
        import tpm2_pytss
    except ImportError as exc:  # the `tpm` extra is not installed, or libtss2 is missing
        raise TpmError(
            f"tpm2-pytss is not usable: {exc}",
            "install confidential-mcp[tpm] (needs the tpm2-tss libraries, e.g. libtss2-esys)",
        ) from None
    return tpm2_pytss


def default_ak_template() -> Any:
    """The TPM2B_PUBLIC of the default AK (see the module docs)."""
    t = _pytss()
    attrs = (
        t.TPMA_OBJECT.RESTRICTED
        | t.TPMA_OBJECT.SIGN_ENCRYPT
        | t.TPMA_OBJECT.FIXEDTPM
        | t.TPMA_OBJECT.FIXEDPARENT
        | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | t.TPMA_OBJECT.USERWITHAUTH
    )
    public = t.TPM2B_PUBLIC(
        t.TPMT_PUBLIC(type=t.TPM2_ALG.ECC, nameAlg=t.TPM2_ALG.SHA256, objectAttributes=attrs)
    )
    ecc = public.publicArea.parameters.eccDetail
    ecc.symmetric.algorithm = t.TPM2_ALG.NULL
    ecc.scheme.scheme = t.TPM2_ALG.ECDSA
    ecc.scheme.details.ecdsa.hashAlg = t.TPM2_ALG.SHA256
    ecc.curveID = t.TPM2_ECC.NIST_P256
    ecc.kdf.scheme = t.TPM2_ALG.NULL
    return public


def der_prefix(data: bytes) -> bytes:
    """The DER object at the start of ``data`` (NV indices are often zero padded)."""
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError("not a DER certificate", "check the AK certificate")
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    n = first & 0x7F
    if not 1 <= n <= 3 or len(data) < 2 + n:
        raise TpmError("bad DER length in a certificate", "check the AK certificate")
    end = 2 + n + int.from_bytes(data[2 : 2 + n], "big")
    if end > len(data):
        raise TpmError("truncated DER certificate", "check the AK certificate")
    return data[:end]


class TpmDevice:
    """One ESAPI context on ``tcti`` (opened lazily, reopened after a failure)."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti
        self._esapi: Any = None
        self._lock = threading.Lock()

    # -- context -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """The ESAPI context; any TPM error closes it so the next call starts afresh."""
        t = _pytss()
        with self._lock:
            if self._esapi is None:
                try:
                    self._esapi = t.ESAPI(self.tcti)
                except (t.TSS2_Exception, RuntimeError, TypeError) as exc:
                    raise TpmError(
                        f"cannot open TPM {self.tcti!r}: {exc}", _open_hint(self.tcti)
                    ) from None
            try:
                yield self._esapi
            except t.TSS2_Exception as exc:
                self._close()
                raise TpmError(f"TPM command failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._esapi is not None:
            with contextlib.suppress(Exception):
                self._esapi.close()
            self._esapi = None

    # -- NV ----------------------------------------------------------------------------------

    def nv_size(self, index: int) -> int | None:
        """The data size of NV index ``index``, or None when it is not defined."""
        t = _pytss()
        with self.session() as e:
            try:
                handle = e.tr_from_tpmpublic(index)
            except t.TSS2_Exception:
                return None
            try:
                public, _ = e.nv_read_public(handle)
                return int(public.nvPublic.dataSize)
            finally:
                e.tr_close(handle)

    def nv_read(self, index: int, *, owner_auth: bool = False) -> bytes:
        """The whole contents of NV index ``index`` (chunked reads)."""
        t = _pytss()
        size = self.nv_size(index)
        if size is None:
            raise TpmError(f"NV index 0x{index:08x} is not defined")
        if size > MAX_NV_READ:
            raise TpmError(f"NV index 0x{index:08x} is larger than {MAX_NV_READ} bytes")
        with self.session() as e:
            handle = e.tr_from_tpmpublic(index)
            auth = t.ESYS_TR.OWNER if owner_auth else handle
            try:
                out = bytearray()
                while len(out) < size:
                    n = min(NV_CHUNK, size - len(out))
                    out += bytes(e.nv_read(handle, n, len(out), auth_handle=auth))
                return bytes(out)
            finally:
                e.tr_close(handle)

    def nv_define(self, index: int, size: int, attributes: int) -> None:
        """(Re)define NV index ``index`` under the owner hierarchy (empty authorisation)."""
        t = _pytss()
        with self.session() as e:
            self._undefine(e, index)
            public = t.TPM2B_NV_PUBLIC(
                t.TPMS_NV_PUBLIC(
                    nvIndex=index, nameAlg=t.TPM2_ALG.SHA256, attributes=attributes, dataSize=size
                )
            )
            handle = e.nv_define_space(b"", public, t.ESYS_TR.OWNER)
            e.tr_close(handle)

    def _undefine(self, e: Any, index: int) -> None:
        t = _pytss()
        try:
            handle = e.tr_from_tpmpublic(index)
        except t.TSS2_Exception:
            return
        e.nv_undefine_space(handle, t.ESYS_TR.OWNER)

    def nv_write(self, index: int, data: bytes, *, owner_auth: bool = False) -> None:
        t = _pytss()
        with self.session() as e:
            handle = e.tr_from_tpmpublic(index)
            try:
                auth = t.ESYS_TR.OWNER if owner_auth else handle
                e.nv_write(handle, data, 0, auth_handle=auth)
            finally:
                e.tr_close(handle)

    def nv_extend(self, index: int, data: bytes) -> None:
        with self.session() as e:
            handle = e.tr_from_tpmpublic(index)
            try:
                e.nv_extend(handle, data, auth_handle=handle)
            finally:
                e.tr_close(handle)

    def nv_public(self, index: int) -> bytes:
        """TPM2B_NV_PUBLIC of ``index``."""
        with self.session() as e:
            handle = e.tr_from_tpmpublic(index)
            try:
                public, _ = e.nv_read_public(handle)
                return bytes(public.marshal())
            finally:
                e.tr_close(handle)

    def nv_certify(self, ak: Ak, index: int, size: int, qualifying: bytes) -> SignedAttest:
        """TPM2_NV_Certify of the first ``size`` bytes of ``index``, signed by ``ak``."""
        t = _pytss()
        with self.session() as e:
            handle = e.tr_from_tpmpublic(index)
            try:
                attest, sig = e.nv_certify(
                    ak.handle,
                    handle,
                    qualifying,
                    _scheme(ak),
                    size,
                    0,
                    auth_handle=handle,
                    session2=t.ESYS_TR.PASSWORD,
                )
            finally:
                e.tr_close(handle)
        return SignedAttest(bytes(attest), bytes(sig.marshal()))

    # -- keys and quotes -----------------------------------------------------------------------

    def load_ak(self, ak_handle: int | None, ak_cert: bytes | None) -> Ak:
        """Find or create the AK (see the module docs); ``ak_cert`` overrides NV certificates."""
        if ak_handle is not None:
            return self._persistent(ak_handle, ak_cert, f"persistent handle 0x{ak_handle:08x}")
        if self.nv_size(AZURE_AK_CERT_NV) is not None:
            azure_cert = ak_cert or der_prefix(self.nv_read(AZURE_AK_CERT_NV, owner_auth=True))
            return self._persistent(AZURE_AK_HANDLE, azure_cert, "Azure vTPM AK (0x81000003)")
        for kind in ("ecc", "rsa"):
            if self.nv_size(GCE_AK_TEMPLATE_NV[kind]) is not None:
                t = _pytss()
                raw = self.nv_read(GCE_AK_TEMPLATE_NV[kind], owner_auth=True)
                template = t.TPM2B_PUBLIC(t.TPMT_PUBLIC.unmarshal(raw)[0])
                cert: bytes | None = ak_cert
                if cert is None and self.nv_size(GCE_AK_CERT_NV[kind]) is not None:
                    cert = der_prefix(self.nv_read(GCE_AK_CERT_NV[kind], owner_auth=True))
                return self._primary(template, cert, f"GCE {kind.upper()} AK template")
        return self._primary(default_ak_template(), ak_cert, "default ECC P-256 AK template")

    def _persistent(self, handle: int, cert: bytes | None, source: str) -> Ak:
        t = _pytss()
        with self.session() as e:
            try:
                tr = e.tr_from_tpmpublic(handle)
            except t.TSS2_Exception:
                raise TpmError(f"no key at {source}", "check attestation.tpm.ak_handle") from None
            public, _, _ = e.read_public(tr)
        return _ak(tr, public, source, cert, transient=False)

    def _primary(self, template: Any, cert: bytes | None, source: str) -> Ak:
        t = _pytss()
        with self.session() as e:
            handle, public, _, _, _ = e.create_primary(
                t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.ENDORSEMENT
            )
        return _ak(handle, public, source, cert, transient=True)

    def release(self, ak: Ak) -> None:
        """Flush a transient AK."""
        if ak.transient:
            with contextlib.suppress(TpmError), self.session() as e:
                e.flush_context(ak.handle)

    def pcr_values(self, bank: str, pcrs: Sequence[int]) -> dict[int, bytes]:
        """Current values of ``pcrs`` in ``bank`` (TPM2_PCR_Read returns at most 8 at a time)."""
        t = _pytss()
        values: dict[int, bytes] = {}
        with self.session() as e:
            for start in range(0, len(pcrs), 8):
                chunk = pcrs[start : start + 8]
                selection = t.TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, chunk))}")
                _, _, digests = e.pcr_read(selection)
                got = [bytes(d) for d in digests.digests]
                if len(got) != len(chunk):
                    raise TpmError(
                        f"the TPM returned {len(got)} of {len(chunk)} {bank} PCRs",
                        f"is the {bank} PCR bank allocated? (tpm2_getcap pcrs)",
                    )
                values.update(zip(chunk, got, strict=True))
        return values

    def quote(self, ak: Ak, bank: str, pcrs: Sequence[int], qualifying: bytes) -> SignedAttest:
        """TPM2_Quote over ``bank:pcrs`` with ``qualifying`` as extraData."""
        t = _pytss()
        selection = t.TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, pcrs))}")
        with self.session() as e:
            attest, sig = e.quote(ak.handle, selection, qualifying, _scheme(ak))
        return SignedAttest(bytes(attest), bytes(sig.marshal()))

    def pcr_digest(self, attest: bytes) -> bytes:
        """pcrDigest of a quote's TPMS_ATTEST."""
        t = _pytss()
        parsed, _ = t.TPMS_ATTEST.unmarshal(attest)
        return bytes(parsed.attested.quote.pcrDigest)


def _ak(handle: Any, public: Any, source: str, cert: bytes | None, *, transient: bool) -> Ak:
    t = _pytss()
    spki = public.publicArea.to_der()
    key = load_der_public_key(spki)
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if cert is not None:
        try:
            holder = x509.load_der_x509_certificate(cert).public_key()
        except ValueError as exc:
            raise TpmError(
                f"AK certificate is not DER X.509: {exc}", "check the AK certificate"
            ) from None
        if holder.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != spki:
            raise TpmError(
                f"the AK certificate does not hold the key of the {source}",
                "the certificate belongs to another AK or TPM: re-enrol this TPM's AK",
            )
    return Ak(
        handle=handle,
        public=bytes(public.marshal()),
        spki=spki,
        source=source,
        certificate=cert,
        transient=transient,
        ecc=public.publicArea.type == t.TPM2_ALG.ECC,
    )


def _scheme(ak: Ak) -> Any:
    """The AK's own scheme, or RSASSA/ECDSA-SHA256 for keys whose scheme is NULL."""
    t = _pytss()
    scheme = t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.ECDSA if ak.ecc else t.TPM2_ALG.RSASSA)
    scheme.details.any.hashAlg = t.TPM2_ALG.SHA256
    public, _ = t.TPM2B_PUBLIC.unmarshal(ak.public)
    params = public.publicArea.parameters
    own = params.eccDetail.scheme.scheme if ak.ecc else params.rsaDetail.scheme.scheme
    return t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL) if own != t.TPM2_ALG.NULL else scheme


def _open_hint(tcti: str) -> str:
    if tcti.startswith("device:"):
        return (
            f"check that {tcti[7:] or '/dev/tpmrm0'} exists and the gateway may open it "
            "(group tss), or set attestation.tpm.tcti / CMCP_TPM_TCTI"
        )
    return "check that the TPM simulator is running, or set attestation.tpm.tcti / CMCP_TPM_TCTI"
