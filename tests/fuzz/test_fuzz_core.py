"""Fuzzing the core formats: strict JSON, claims, audit logs, catalogs and bundle directories.

Inputs are random bytes, byte flips of a valid claim, and structured edits (_json_mutate: other
types, huge integers, floats, NaN as text, duplicate keys, added or removed members,
non-canonical base64url), re-signed half of the time so that the checks behind the signatures
see them. Nothing may raise anything but a CmcpError (verify_claim: nothing at all), and a
claim or log whose meaning changed must never verify.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from cmcp_verifier import audit
from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.canonical import canonical_bytes, parse_json
from cmcp_verifier.catalog import parse_catalog
from cmcp_verifier.claim import sign_object
from cmcp_verifier.digests import sha256_digest
from cmcp_verifier.errors import CmcpError
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..verifier.claimfactory import make_claim
from ._json_mutate import edited_json
from ._settings import fuzz_settings

KEY = Ed25519PrivateKey.generate()
CLAIM_DOC, LOG = make_claim(KEY)
CLAIM = json.dumps(CLAIM_DOC).encode()
RECORDS = audit.read_log(LOG)
POLICY = ClaimPolicy(allow_software=True)
CATALOG = {
    "format": "cmcp-catalog/v1",
    "tools": [
        {
            "upstream": "crm",
            "name": "contacts",
            "definition_hash": sha256_digest(b"t"),
            "labels": ["pii"],
        },
        {"upstream": "crm", "name": "notes", "definition_hash": sha256_digest(b"n")},
    ],
}


@fuzz_settings
@given(st.binary(max_size=512))
def test_parse_json_never_crashes(data: bytes) -> None:
    with contextlib.suppress(CmcpError):
        parse_json(data)


@fuzz_settings
@given(edited_json(CLAIM_DOC))
def test_structured_json_is_read_strictly(edit: tuple[str, bool]) -> None:
    text, _ = edit
    try:
        value = parse_json(text.encode())
    except CmcpError:
        return
    canonical_bytes(value)  # whatever the strict reader accepts has a canonical form


@fuzz_settings
@given(st.data())
def test_mutated_claims_are_rejected_cleanly(data: st.DataObject) -> None:
    blob = bytearray(CLAIM)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    report = verify_claim(bytes(blob), POLICY)
    if bytes(blob) != CLAIM:
        # Whitespace-only changes leave the claim valid; anything else must be rejected.
        try:
            same = json.loads(bytes(blob)) == json.loads(CLAIM)
        except ValueError:
            same = False
        assert report.verified == same


def _resigned(text: str) -> bytes | None:
    """The edited claim signed again with the claim's key, when it still can be."""
    try:
        doc = parse_json(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("trace"), dict):
            return None
        return canonical_bytes(sign_object({**doc, "trace": sign_object(doc["trace"], KEY)}, KEY))
    except CmcpError:
        return None


@fuzz_settings
@given(edited_json(CLAIM_DOC), st.booleans())
def test_structured_claims(edit: tuple[str, bool], resign: bool) -> None:
    text, changed = edit
    signed = _resigned(text) if resign else None
    report = verify_claim(signed or text.encode(), POLICY)  # never raises
    if signed is None:
        assert report.verified == (not changed), report.render()


@fuzz_settings
@given(st.binary(max_size=400))
def test_audit_lines_never_crash(data: bytes) -> None:
    with contextlib.suppress(CmcpError):
        audit.read_log(data)


def _line(body: bytes) -> bytes:
    """An audit line around ``body`` with a correct entry hash: the reader gets past it."""
    return b'{"entry":' + body + b',"hash":"' + sha256_digest(body).encode() + b'"}\n'


@fuzz_settings
@given(st.data())
def test_structured_audit_logs(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(RECORDS) - 1))
    text, _ = data.draw(edited_json(RECORDS[i].entry))
    body = text.encode("utf-8", "surrogatepass")
    lines = [r.line + b"\n" for r in RECORDS]
    lines[i] = _line(body)
    log = b"".join(lines)
    with contextlib.suppress(CmcpError):
        audit.verify_chain(audit.read_log(log))
    report = verify_claim(CLAIM, ClaimPolicy(allow_software=True, audit_log=log))
    original = RECORDS[i].line[len(b'{"entry":') : -len(',"hash":"sha256:"}') - 64]
    assert report.verified == (body == original), report.render()


@fuzz_settings
@given(edited_json(CATALOG))
def test_structured_catalogs(edit: tuple[str, bool]) -> None:
    with contextlib.suppress(CmcpError):
        parse_catalog(edit[0].encode("utf-8", "surrogatepass"))


NAMES = st.one_of(
    st.sampled_from(
        ["schema.cedarschema", "manifest.json", "a.cedar", "z.cedar", ".hidden", "README.md"]
    ),
    st.from_regex(r"[A-Za-z0-9._-]{1,12}(\.cedar)?", fullmatch=True),
    st.text(min_size=1, max_size=12).filter(lambda n: "/" not in n and "\0" not in n),
)


@fuzz_settings
@given(
    st.dictionaries(NAMES, st.binary(max_size=64), max_size=6),
    st.sets(NAMES, max_size=2),
    st.sets(NAMES, max_size=2),
)
def test_bundle_dir_reader(files: dict[str, bytes], dirs: set[str], links: set[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="cmcp-fuzz-bundle-") as tmp:
        root = Path(tmp)
        for name, content in files.items():
            with contextlib.suppress(OSError, ValueError):
                (root / name).write_bytes(content)
        for name in dirs:
            with contextlib.suppress(OSError, ValueError):
                (root / name).mkdir()
        for name in links:  # dangling, or pointing at a member
            with contextlib.suppress(OSError, ValueError):
                (root / name).symlink_to(root / next(iter(files), "nowhere"))
        try:
            bundle = read_bundle_dir(root)
        except CmcpError:
            return
        assert bundle.hash.startswith("sha256:")
