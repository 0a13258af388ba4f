"""The signing key lives only in memory: never serialised, never on disk after a full run."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from cmcp_sidecar.attest import SigningIdentity
from cmcp_verifier.digests import b64url_encode

from .trailkit import call, trail


def test_identity_refuses_serialisation_and_hides_the_key() -> None:
    identity = SigningIdentity.generate()
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="never"):
            attempt(identity)
    assert repr(identity) == f"SigningIdentity(thumbprint={identity.thumbprint!r})"
    assert set(identity.jwk) == {"kty", "crv", "x"}


async def test_private_key_never_reaches_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory is scanned too
    async with trail(tmp_path, mode="call") as t:
        key = t.identity.signing_key
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        pkcs8 = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        sid = t.issuer.claim_session_id(mcp_session_id="s-key", principal="p")
        for decision in ("allow", "deny", "redact"):
            await t.log.append(call(sid, decision))
        await t.issuer.close_session(sid or "")
        await t.issuer.claim_now(sid or "", b"nonce")
        await t.export()
    needles = [raw, pkcs8, raw.hex().encode(), b64url_encode(raw).encode()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parent.name == "claims" for p in files) and any(
        p.name == "audit.log" for p in files
    )
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, f"private key material found in {path}"
