"""The ``tpm`` provider end to end against real software TPMs (swtpm, started here with an EK
certificate): evidence → claim → ``verify_claim``; and what must be rejected: a second TPM's
quote, a replayed nonce, a bundle the TPM did not record, an AK certificate of another TPM."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cmcp_sidecar.attest import AttestationError, select_provider
from cmcp_sidecar.attest.tpm import BUNDLE_NV_INDEX, TpmProvider, TpmSettings
from cmcp_verifier.digests import b64url_decode, b64url_encode, sha256_digest
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..mcp.peers import REPO
from ..tpm_fixtures import Swtpm, running_swtpm
from .attestkit import AkCa, ak_pem, failed, resign, session_claim, status
from .test_cli import write_config
from .trailkit import BUNDLE, trail

pytestmark = pytest.mark.tpm


@pytest.fixture(scope="module")
def tpms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Swtpm, Swtpm]]:
    """Two independent software TPMs, each manufactured with an EK certificate."""
    root = tmp_path_factory.mktemp("swtpms")
    with (
        running_swtpm(root / "a", pcr_banks="sha256", ek_cert=True) as a,
        running_swtpm(root / "b", pcr_banks="sha256", ek_cert=True) as b,
    ):
        yield a, b


@pytest.fixture(scope="module")
def enrolled(tpms: tuple[Swtpm, Swtpm], tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("enrol")
    ca = AkCa(work / "roots")
    a, b = tpms
    return {
        "ca": ca,
        "cert_a": ca.issue(ak_pem(a), work / "ak-a.pem"),
        "cert_b": ca.issue(ak_pem(b), work / "ak-b.pem"),
    }


def provider(tpm: Swtpm, cert: Path, **extra: Any) -> TpmProvider:
    return TpmProvider(TpmSettings.from_options({"tcti": tpm.tcti, "ak_cert": str(cert), **extra}))


def policy(enrolled: Any, **kw: Any) -> ClaimPolicy:
    return ClaimPolicy(evidence=EvidencePolicy(roots_dir=enrolled["ca"].roots), **kw)


async def test_claim_on_swtpm_evidence_verifies(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    a, _ = tpms
    p = await select_provider(
        "tpm", False, options={"tpm": {"tcti": a.tcti, "ak_cert": str(enrolled["cert_a"])}}
    )
    nonce = os.urandom(16)
    async with trail(tmp_path, provider=p) as t:
        claim = await session_claim(t, nonce)
    report = verify_claim(claim, policy(enrolled, nonce=nonce, approved_bundle_hashes=(BUNDLE,)))
    assert report.verified, report.render()
    for name in (
        "tpm.ak.certificate",
        "tpm.quote.signature",
        "tpm.quote.pcr_digest",
        "tpm.bundle_nv",
        "attestation.report_data",
        "attestation.bundle_measurement",
        "runtime.measurement",
        "claim.nonce",
    ):
        assert status(report, name) is Status.PASS, name


async def test_second_tpms_quote_is_rejected(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    """TPM B quotes the very same binding; spliced into TPM A's claim (re-signed by the
    gateway key, so only the evidence is wrong) it does not verify: A's certificate does not
    hold B's key, and B's quote is not A's AK's signature."""
    a, b = tpms
    async with trail(tmp_path / "a", provider=provider(a, enrolled["cert_a"])) as ta:
        claim = await session_claim(ta)
        foreign = provider(b, enrolled["cert_b"])
        evidence = await foreign.collect(ta.attestor.current.binding)
        await foreign.aclose()

        def splice_quote(env: dict[str, Any]) -> None:
            ev = env["gateway"]["attestation"]["evidence"]
            ev["quote"] = b64url_encode(evidence.members["quote"])  # type: ignore[arg-type]
            ev["signature"] = b64url_encode(evidence.members["signature"])  # type: ignore[arg-type]

        def splice_ak_too(env: dict[str, Any]) -> None:
            splice_quote(env)
            ak = evidence.members["ak_public"]
            env["gateway"]["attestation"]["evidence"]["ak_public"] = b64url_encode(ak)  # type: ignore[arg-type]

        quote_only = verify_claim(resign(claim, ta, splice_quote), policy(enrolled))
        with_ak = verify_claim(resign(claim, ta, splice_ak_too), policy(enrolled))
    assert "tpm.quote.signature" in failed(quote_only)
    assert "tpm.ak.certificate" in failed(with_ak)
    assert not quote_only.verified and not with_ak.verified


async def test_replayed_nonce_is_rejected(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    a, _ = tpms
    old, fresh = os.urandom(16), os.urandom(16)
    async with trail(tmp_path, provider=provider(a, enrolled["cert_a"])) as t:
        replayed = await session_claim(t, old)

        def claim_fresh_nonce(env: dict[str, Any]) -> None:
            env["gateway"]["attestation"]["binding"]["nonce"] = b64url_encode(fresh)
            env["trace"]["runtime"]["nonce"] = b64url_encode(fresh)

        relabelled = resign(replayed, t, claim_fresh_nonce)
    # The old claim answered another challenge …
    assert "claim.nonce" in failed(verify_claim(replayed, policy(enrolled, nonce=fresh)))
    # … and relabelling it breaks the binding the TPM quoted.
    report = verify_claim(relabelled, policy(enrolled, nonce=fresh))
    assert {"attestation.binding"} <= failed(report)


async def test_bundle_the_tpm_did_not_record_is_rejected(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    """Someone re-extends the bundle NV index behind the gateway's back: the quote still binds
    the claim's bundle, but the TPM's own record shows another one."""
    a, _ = tpms
    p = provider(a, enrolled["cert_a"])
    async with trail(tmp_path, provider=p) as t:
        other = bytes.fromhex(sha256_digest(b"another bundle")[7:])
        p.device.nv_define(BUNDLE_NV_INDEX, 32, _extend_attributes())
        p.device.nv_extend(BUNDLE_NV_INDEX, other)
        claim = await session_claim(t, os.urandom(8))
    report = verify_claim(claim, policy(enrolled, approved_bundle_hashes=(BUNDLE,)))
    assert failed(report) == {"attestation.bundle_measurement"}


async def test_reload_measures_the_new_bundle(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    a, _ = tpms
    new_bundle = sha256_digest(b"reloaded bundle")
    async with trail(tmp_path, provider=provider(a, enrolled["cert_a"])) as t:
        await t.attestor.update(bundle_hash=new_bundle)
        claim = await session_claim(t, b"after reload")
    report = verify_claim(claim, policy(enrolled, approved_bundle_hashes=(new_bundle,)))
    assert report.verified, report.render()
    assert status(report, "attestation.bundle_measurement") is Status.PASS


async def test_other_tpms_certificate_is_refused_at_start(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any
) -> None:
    a, _ = tpms
    with pytest.raises(AttestationError) as err:
        await select_provider(
            "tpm", False, options={"tpm": {"tcti": a.tcti, "ak_cert": str(enrolled["cert_b"])}}
        )
    assert "does not hold the key" in err.value.message
    assert err.value.code == "attestation.unavailable"


async def test_uncertified_ak_is_refused(tpms: tuple[Swtpm, Swtpm]) -> None:
    a, _ = tpms
    with pytest.raises(AttestationError) as err:
        await select_provider("tpm", False, options={"tpm": {"tcti": a.tcti}})
    assert "no certificate for the attestation key" in err.value.message
    assert "python -m cmcp_sidecar.attest.tpm ak" in (err.value.hint or "")


async def test_unreachable_tpm_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider(
            "tpm", False, options={"tpm": {"tcti": "swtpm:host=127.0.0.1,port=1"}}
        )
    rendered = err.value.render()
    assert "attestation provider 'tpm'" in rendered
    assert "cannot open TPM" in rendered and "CMCP_TPM_TCTI" in rendered
    missing = tmp_path / "tpmrm9"
    with pytest.raises(AttestationError) as err:
        await select_provider("tpm", False, options={"tpm": {"tcti": f"device:{missing}"}})
    assert str(missing) in err.value.render()


def test_settings_validate_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMCP_TPM_TCTI", "swtpm:host=127.0.0.1,port=2321")
    s = TpmSettings.from_options({"tcti": "device:/dev/tpmrm0", "bundle_nv_index": "0x01800001"})
    assert s.tcti == "swtpm:host=127.0.0.1,port=2321" and s.bundle_nv_index == 0x01800001
    assert s.event_log is None  # a simulator's PCRs are not the machine's event log
    for bad in ({"pcrs": [24]}, {"ak_handle": "0x01000000"}, {"pcr_bank": "md5"}, {"nope": 1}):
        with pytest.raises(AttestationError) as err:
            TpmSettings.from_options(bad)
        assert err.value.code == "attestation.config"


def _extend_attributes() -> int:
    from cmcp_sidecar.attest.tpm import _nv_extend_attributes

    return _nv_extend_attributes()


async def test_tampered_bundle_record_is_rejected(
    tpms: tuple[Swtpm, Swtpm], enrolled: Any, tmp_path: Path
) -> None:
    a, _ = tpms
    async with trail(tmp_path, provider=provider(a, enrolled["cert_a"])) as t:
        claim = await session_claim(t)

        def drop_signature(env: dict[str, Any]) -> None:
            del env["gateway"]["attestation"]["evidence"]["bundle_nv_signature"]

        def ordinary_index(env: dict[str, Any]) -> None:
            ev = env["gateway"]["attestation"]["evidence"]
            public = bytearray(b64url_decode(ev["bundle_nv_public"]))
            public[2 + 6 + 3] &= 0x0F  # TPMA_NV bits 4-7: TPM_NT_ORDINARY instead of EXTEND
            ev["bundle_nv_public"] = b64url_encode(bytes(public))

        def stale_certification(env: dict[str, Any]) -> None:
            ev = env["gateway"]["attestation"]["evidence"]
            attest = bytearray(b64url_decode(ev["bundle_nv_attest"]))
            attest[-1] ^= 1  # the certified contents
            ev["bundle_nv_attest"] = b64url_encode(bytes(attest))

        for change in (drop_signature, ordinary_index, stale_certification):
            report = verify_claim(resign(claim, t, change), policy(enrolled))
            assert failed(report) == {"tpm.bundle_nv"}, change.__name__


def _start(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cmcp"), "start", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        timeout=60,
    )


def test_cmcp_start_refuses_when_the_tpm_is_unreachable(tmp_path: Path) -> None:
    """``cmcp start`` with ``provider: tpm`` and no TPM: no server, one error naming the
    provider, the cause and the fix — also in dev mode (a named provider never falls back)."""
    cfg = write_config(
        tmp_path,
        "attestation: {provider: tpm, tpm: {tcti: 'swtpm:host=127.0.0.1,port=1'}}\n"
        "catalog_path: null\nupstreams: [{name: a, url: 'http://127.0.0.1:9/mcp'}]\n",
    )
    for env in ({}, {"CMCP_DEV_MODE": "1"}):
        proc = _start(cfg, **env)
        assert proc.returncode == 1, proc.stderr
        first, *rest = proc.stderr.splitlines()
        assert first.startswith("error[attestation.unavailable]: attestation provider 'tpm'")
        assert "cannot open TPM 'swtpm:host=127.0.0.1,port=1'" in first
        assert any("CMCP_TPM_TCTI" in line and "never falls back" in line for line in rest)


def test_cmcp_start_refuses_an_uncertified_ak(tpms: tuple[Swtpm, Swtpm], tmp_path: Path) -> None:
    a, _ = tpms
    cfg = write_config(
        tmp_path,
        "attestation: {provider: tpm}\n"
        "catalog_path: null\nupstreams: [{name: a, url: 'http://127.0.0.1:9/mcp'}]\n",
    )
    proc = _start(cfg, CMCP_TPM_TCTI=a.tcti)
    assert proc.returncode == 1
    assert "no certificate for the attestation key" in proc.stderr
    assert "attestation.tpm.ak_cert" in proc.stderr
