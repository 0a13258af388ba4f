"""TPM quotes made live by a real software TPM (swtpm) with tpm2-tools, verified with the CLI
exactly as tpm2_quote wrote them: message, signature (tss and plain), PCRs (serialized and
values binary, tpm2-tools YAML), AK as TPM2B_PUBLIC and PEM, RSA (RSASSA, RSAPSS) and ECC keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_verifier.binding import binding_digest
from cmcp_verifier.cli import main
from cmcp_verifier.evidence import EvidencePolicy, evidence_types
from cmcp_verifier.evidence.tpm import embed_evidence
from cmcp_verifier.evidence.tpm_keys import load_ak_public
from cmcp_verifier.evidence.tpm_structures import parse_tpms_attest
from cmcp_verifier.keys import jwk_thumbprint, public_jwk
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..tpm_fixtures import Swtpm, running_swtpm
from .claimfactory import BUNDLE, CATALOG, make_claim

pytestmark = pytest.mark.tpm

# name: (tpm2_createak -G, -g, -s)
AKS = {
    "rsa": ("rsa", "sha256", "rsassa"),
    "pss": ("rsa", "sha256", "rsapss"),
    "ecc": ("ecc", "sha256", "ecdsa"),
    "rsa384": ("rsa", "sha384", "rsassa"),
    "ecc384": ("ecc384", "sha384", "ecdsa"),
    "other": ("rsa", "sha256", "rsassa"),
}
SELECTION = "sha1:0,1,2+sha256:0,1,2,3,8,9,16+sha384:0,7"


@dataclass(frozen=True)
class Lab:
    tpm: Swtpm
    dir: Path

    def quote(
        self, ak: str, nonce: str, *, tag: str, sig_format: str = "tss", pcrs: str = "serialized"
    ) -> dict[str, Path]:
        """tpm2_quote with ``ak``; returns the files it wrote plus its YAML stdout."""
        _, hash_alg, scheme = AKS[ak]
        files = {k: self.dir / f"{tag}.{k}" for k in ("msg", "sig", "pcrs", "yaml")}
        out = self.tpm.tool(
            "tpm2_quote", "-c", f"{ak}.ctx", "-l", SELECTION, "-q", nonce,
            "-m", str(files["msg"]), "-s", str(files["sig"]), "-f", sig_format,
            "-o", str(files["pcrs"]), "-F", pcrs, "-g", hash_alg, "--scheme", scheme,
            cwd=self.dir,
        )  # fmt: skip
        files["yaml"].write_text(out)
        return files


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One swtpm for the module: an EK and the AKs of AKS (as TPM2B_PUBLIC and PEM)."""
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as tpm:
        work = tmp_path_factory.mktemp("tpm-files")
        tpm.tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=work)
        for name, (alg, hash_alg, scheme) in AKS.items():
            tpm.tool(
                "tpm2_createak", "-C", "ek.ctx", "-c", f"{name}.ctx", "-G", alg,
                "-g", hash_alg, "-s", scheme, "-u", f"{name}.pub", "-n", f"{name}.name",
                "-r", f"{name}.priv", cwd=work,
            )  # fmt: skip
            tpm.tool(
                "tpm2_readpublic", "-c", f"{name}.ctx", "-f", "pem", "-o", f"{name}.pem", cwd=work
            )
        # Non-zero PCRs in every quoted bank, so a value mix-up cannot go unnoticed.
        tpm.tool("tpm2_pcrevent", "0", str(work / "ek.pub"))
        tpm.tool("tpm2_pcrevent", "7", str(work / "rsa.pub"))
        yield Lab(tpm, work)


def _cli(files: dict[str, Path], ak: Path, *extra: str) -> list[str]:
    return [
        "evidence", "--type", "tpm", "--quote", str(files["msg"]),
        "--signature", str(files["sig"]), "--ak", str(ak), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("ak", [a for a in AKS if a != "other"])
@pytest.mark.parametrize("sig_format", ["tss", "plain"])
def test_tpm2_quote_files_verify(
    lab: Lab, capsys: pytest.CaptureFixture[str], ak: str, sig_format: str
) -> None:
    files = lab.quote(ak, "c0ffee01", tag=f"{ak}-{sig_format}", sig_format=sig_format)
    for key in (lab.dir / f"{ak}.pub", lab.dir / f"{ak}.pem"):
        for pcrs in (files["pcrs"], files["yaml"]):
            argv = _cli(files, key, "--pcrs", str(pcrs), "--nonce", "c0ffee01", "-o", "json")
            assert main(argv) == 0, capsys.readouterr().out
            out = json.loads(capsys.readouterr().out)
            checks = {c["name"]: c["status"] for c in out["checks"]}
            assert checks["quote.signature"] == checks["quote.pcr_digest"] == "pass"
            assert checks["ak.key"] == ("pass" if key.suffix == ".pub" else "skip")
            ((quote,),) = [out["facts"]["quotes"]]
            assert [s["hash"] for s in quote["pcr_selection"]] == ["sha1", "sha256", "sha384"]
            assert quote["signature"].endswith(AKS[ak][1])


def test_values_pcr_file_is_read_against_the_quote_selection(lab: Lab) -> None:
    files = lab.quote("rsa", "aa", tag="values", pcrs="values")
    assert files["pcrs"].stat().st_size == 3 * 20 + 7 * 32 + 2 * 48
    assert main(_cli(files, lab.dir / "rsa.pub", "--pcrs", str(files["pcrs"]))) == 0


def test_pcrread_yaml_is_a_pcr_file(lab: Lab, tmp_path: Path) -> None:
    files = lab.quote("ecc", "bb", tag="pcrread")
    pcrread = tmp_path / "pcrread.yaml"
    pcrread.write_text(lab.tpm.tool("tpm2_pcrread", "sha1:all+sha256:all+sha384:all"))
    assert main(_cli(files, lab.dir / "ecc.pub", "--pcrs", str(pcrread))) == 0


def test_wrong_nonce_and_other_ak_are_rejected(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    files = lab.quote("rsa", "c0ffee02", tag="neg")
    assert main(_cli(files, lab.dir / "rsa.pub", "--nonce", "c0ffee03")) == 1
    assert "quote.nonce: extraData differs from the nonce" in capsys.readouterr().out
    assert main(_cli(files, lab.dir / "other.pub", "--nonce", "c0ffee02")) == 1
    assert "quote.signature: rsassa sha256 signature does not verify" in capsys.readouterr().out
    assert main(_cli(files, lab.dir / "ecc.pem")) == 1
    assert "rsassa signature, but the AK is an ECC key" in capsys.readouterr().out
    # PCR values read at another time than the quote do not match its pcrDigest.
    lab.tpm.tool("tpm2_pcrevent", "16", str(files["msg"]))
    later = lab.quote("rsa", "c0ffee02", tag="later")
    assert main(_cli(files, lab.dir / "rsa.pub", "--pcrs", str(later["pcrs"]))) == 1
    assert "quote.pcr_digest" in capsys.readouterr().out
    lab.tpm.tool("tpm2_pcrreset", "16")


# --- AK certificate from a CA of our own (how the sidecar can anchor a swtpm AK) -----------


def _issue_ak_cert(ak_pub: bytes, tmp: Path) -> tuple[Path, bytes]:
    """A test CA (written as roots dir file ``tpm-test-ca.pem``) and an AK certificate (DER)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "cmcp test TPM CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ak = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "swtpm AK")]))
        .issuer_name(ca_name)
        .public_key(load_ak_public(ak_pub).key)
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    roots = tmp / "roots"
    roots.mkdir()
    (roots / "tpm-test-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return roots, ak.public_bytes(serialization.Encoding.DER)


def test_ak_certificate_chains_to_a_pinned_tpm_root(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ak_pub = (lab.dir / "rsa.pub").read_bytes()
    roots, cert = _issue_ak_cert(ak_pub, tmp_path)
    (tmp_path / "ak.der").write_bytes(cert)
    files = lab.quote("rsa", "dd", tag="cert")
    argv = _cli(files, lab.dir / "rsa.pub", "--ak-cert", str(tmp_path / "ak.der"))
    assert main([*argv, "--roots", str(roots)]) == 0
    assert "ak.certificate: chain swtpm AK → cmcp test TPM CA" in capsys.readouterr().out
    assert main(argv) == 1  # the bundled roots do not know this CA
    assert "does not chain to a pinned TPM root" in capsys.readouterr().out
    assert main([*argv[:-4], "--ak", str(lab.dir / "other.pub"), *argv[-2:]]) == 1
    capsys.readouterr()

    # The claim form: what the sidecar's TPM provider embeds.
    pcr_values = {
        alg: {int(i): bytes.fromhex(v) for i, v in bank.items()}
        for alg, bank in (
            (0x0004, _yaml_bank(files["yaml"], "sha1")),
            (0x000B, _yaml_bank(files["yaml"], "sha256")),
            (0x000C, _yaml_bank(files["yaml"], "sha384")),
        )
    }
    evidence = embed_evidence(
        files["msg"].read_bytes(), files["sig"].read_bytes(), ak_pub, ak_cert=cert, pcrs=pcr_values
    )
    kind = evidence_types()["tpm"]
    report = kind.verify_embedded(evidence, EvidencePolicy(roots_dir=roots))
    assert report.verified, report.render()
    assert report.report_data == b"\xdd"
    assert not kind.verify_embedded(evidence, EvidencePolicy()).verified


def _yaml_bank(path: Path, bank: str) -> dict[str, str]:
    import yaml

    doc = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    return {k: v[2:] for k, v in doc["pcrs"][bank].items()}


# --- event log replay against a real TPM's extend ---------------------------------------------

BANKS = {0x0004: hashlib.sha1, 0x000B: hashlib.sha256, 0x000C: hashlib.sha384}


def _crypto_agile_log(events: list[tuple[int, bytes]]) -> bytes:
    """A TCG crypto-agile log of EV_IPL events (test writer; the parser is under test)."""
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(BANKS))
    spec += b"".join(struct.pack("<HH", a, h().digest_size) for a, h in BANKS.items()) + b"\x00"
    log = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec)) + spec
    for pcr, data in events:
        digests = b"".join(struct.pack("<H", a) + h(data).digest() for a, h in BANKS.items())
        log += struct.pack("<III", pcr, 0xD, len(BANKS)) + digests + struct.pack("<I", len(data))
        log += data
    return log


def test_event_log_replay_matches_the_tpm(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [(8, b"kernel cmdline"), (9, b"initrd"), (8, b"policy bundle sha256:00")]
    # PCR 8 and 9 start at zero in a fresh swtpm and no other test extends them.
    for pcr, data in events:
        spec = ",".join(f"{h().name}={h(data).hexdigest()}" for h in BANKS.values())
        lab.tpm.tool("tpm2_pcrextend", f"{pcr}:{spec}")
    log = tmp_path / "log.bin"
    log.write_bytes(_crypto_agile_log(events))
    files = lab.quote("rsa", "ee", tag="log")
    argv = _cli(files, lab.dir / "rsa.pub", "--pcrs", str(files["pcrs"]), "--event-log", str(log))
    assert main([*argv, "-o", "json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["event_log.sha256"]["status"] == "pass"
    assert "3 events reproduce PCR 8-9" in checks["event_log.sha256"]["detail"]
    assert checks["event_log.sha1"]["status"] == "skip"  # PCR 8/9 not in the SHA-1 selection
    log.write_bytes(_crypto_agile_log(events[:-1]))  # an event missing from the log
    assert main(argv) == 1
    assert "replay differs at PCR 8" in capsys.readouterr().out


def test_fixture_leaves_no_process(tmp_path: Path) -> None:
    with running_swtpm(tmp_path / "t", pcr_banks="sha256") as tpm:
        assert tpm.tcti == f"swtpm:host=127.0.0.1,port={tpm.port}"
        assert "sha256" in tpm.tool("tpm2_pcrread", "sha256:0")
        pid = tpm.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- a whole claim carrying a swtpm quote (what the sidecar's TPM provider produces) ---------


def test_claim_with_tpm_evidence_verifies(lab: Lab, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    nonce = b"auditor nonce"
    binding = binding_digest(jwk_thumbprint(public_jwk(key)), BUNDLE, CATALOG, nonce)
    ak_pub = (lab.dir / "ecc.pub").read_bytes()
    roots, cert = _issue_ak_cert(ak_pub, tmp_path)

    def claim_for(qualification: bytes) -> bytes:
        files = lab.quote("ecc", qualification.hex(), tag=f"claim-{qualification.hex()[:8]}")
        attest = files["msg"].read_bytes()
        evidence = embed_evidence(attest, files["sig"].read_bytes(), ak_pub, ak_cert=cert)
        digest = parse_tpms_attest(attest).pcr_digest

        def as_tpm(trace: dict[str, Any], gateway: dict[str, Any]) -> None:
            trace["runtime"]["platform"] = "tpm2"
            trace["runtime"]["measurement"] = "sha256:" + digest.hex()
            gateway["attestation"].update(type="tpm", evidence=evidence)

        claim, _ = make_claim(key, nonce=nonce, mutate=as_tpm)
        return json.dumps(claim).encode()

    policy = ClaimPolicy(nonce=nonce, evidence=EvidencePolicy(roots_dir=roots))
    report = verify_claim(claim_for(binding), policy)
    assert report.verified, report.render()
    status = {c.name: c.status for c in report.checks}
    for name in ("tpm.quote.signature", "tpm.ak.certificate", "attestation.report_data"):
        assert status[name] is Status.PASS, name
    assert status["runtime.measurement"] is Status.PASS
    # A quote over another value than the binding digest does not vouch for this claim.
    wrong = verify_claim(claim_for(bytes(32)), policy)
    assert [c.name for c in wrong.failures] == ["attestation.report_data"]
    # Without the private TPM root the AK is not anchored.
    unanchored = verify_claim(claim_for(binding), ClaimPolicy(nonce=nonce))
    assert [c.name for c in unanchored.failures] == ["tpm.ak.certificate"]
