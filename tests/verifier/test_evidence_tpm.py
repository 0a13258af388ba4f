"""TPM 2.0 quotes: the real GCE vTPM samples of EXPECTED.md, Azure's vTPM quote through the
library API, byte flips, and hostile input. (Quotes made live with swtpm + tpm2-tools are in
test_evidence_tpm_swtpm.py.)"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from cmcp_verifier.cli import main
from cmcp_verifier.digests import b64url_encode
from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence import EvidencePolicy, EvidenceReport, evidence_types
from cmcp_verifier.evidence.tcg_eventlog import parse_event_log, replay
from cmcp_verifier.evidence.tpm import embed_evidence, verify_quote, verify_quotes
from cmcp_verifier.evidence.tpm_gotpm import Attestation, parse_gotpm_attestation
from cmcp_verifier.evidence.tpm_keys import ak_from_jwk, load_ak_public
from cmcp_verifier.evidence.tpm_pcrs import parse_pcr_file, pcrs_to_json
from cmcp_verifier.evidence.tpm_structures import (
    HASH_BY_NAME,
    parse_tpms_attest,
    parse_tpmt_public,
    parse_tpmt_signature,
)
from cmcp_verifier.report import Status
from cmcp_verifier.roots import root_bytes

NONCE = bytes.fromhex("9009")
SHA1, SHA256, SHA384 = 0x0004, 0x000B, 0x000C


def _sample(evidence_dir: Path, name: str) -> tuple[Path, Attestation]:
    path = evidence_dir / "tpm" / f"gce-cos-85-{name}.attestation.json"
    return path, parse_gotpm_attestation(path.read_bytes())


def _verify(att: Attestation, **kw: Any) -> EvidenceReport:
    return verify_quotes(
        att.quotes, att.ak_public, event_log=att.event_log, ak_cert=att.ak_cert, **kw
    )


def _status(report: EvidenceReport) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def _sha256_quote(att: Attestation) -> Any:
    return next(q for q in att.quotes if isinstance(q.pcrs, dict) and SHA256 in q.pcrs)


# --- EXPECTED.md, TPM rows ----------------------------------------------------------------


def test_gce_nonce9009_is_verified_in_every_check(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    report = _verify(att, nonce=NONCE)
    assert report.verified, report.render()
    status = _status(report)
    expected = ["ak.key", "ak.certificate", "quotes.extra_data"]
    for i in range(3):
        expected += [f"quote[{i}].{c}" for c in ("format", "signature", "nonce", "pcr_digest")]
    expected += ["event_log.sha1", "event_log.sha256", "event_log.sha384"]
    assert {n: status.get(n) for n in expected} == dict.fromkeys(expected, Status.PASS)
    details = {c.name: c.detail for c in report.checks}
    for bank in ("sha1", "sha256", "sha384"):
        assert "reproduce PCR 0-9" in details[f"event_log.{bank}"]
    assert "gce-tpm" not in details["ak.certificate"]  # names the certificates themselves
    assert "tpm_ek_v1_cloud_host-signer-0-2020-10-22" in details["ak.certificate"]
    assert "tpm_ek_v1_cloud_host_root-signer" in details["ak.certificate"]
    # Each quote: RSASSA-SHA256 over its own bank, pcrDigest always SHA-256.
    facts = report.facts["quotes"]
    assert [f["pcr_selection"][0]["hash"] for f in facts] == ["sha1", "sha256", "sha384"]
    assert all(f["signature"] == "rsassa-sha256" for f in facts)
    assert all(f["pcr_selection"][0]["pcrs"] == list(range(24)) for f in facts)
    assert report.report_data == NONCE
    assert report.platform == "tpm2"
    sha256_digest = parse_tpms_attest(_sha256_quote(att).attest).pcr_digest
    assert report.measurement == "sha256:" + sha256_digest.hex()
    assert report.facts["ak"]["key"] == "RSA-2048"


def test_gce_no_nonce_is_rejected_when_a_nonce_is_required(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "no-nonce")
    assert all(parse_tpms_attest(q.attest).extra_data == b"" for q in att.quotes)
    required = _verify(att, nonce=NONCE)
    assert not required.verified
    assert {c.name for c in required.failures} == {f"quote[{i}].nonce" for i in range(3)}
    # Everything else about it is genuine: signature, chain, PCRs, event log.
    relaxed = _verify(att)
    assert relaxed.verified, relaxed.render()
    assert relaxed.report_data == b""


@pytest.mark.parametrize(
    ("name", "nonce", "code"),
    [("nonce9009", "9009", 0), ("no-nonce", "9009", 1), ("nonce9009", "9008", 1)],
)
def test_gce_samples_through_the_cli(
    evidence_dir: Path, capsys: pytest.CaptureFixture[str], name: str, nonce: str, code: int
) -> None:
    path, _ = _sample(evidence_dir, name)
    argv = ["evidence", "--type", "tpm", "--attestation", str(path), "--nonce", nonce]
    assert main([*argv, "-o", "json"]) == code
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == ("verified" if code == 0 else "rejected")
    assert main(argv) == code
    text = capsys.readouterr().out
    assert text.strip().splitlines()[-1] == "verified" if code == 0 else "rejected: " in text


def _write_single_quote(tmp_path: Path, att: Attestation, *, pcr_form: str = "json") -> list[str]:
    """The sample's SHA-256-bank quote as the separate files tpm2-tools users have."""
    quote = _sha256_quote(att)
    files = {
        "quote.msg": quote.attest,
        "quote.sig": quote.signature,
        "ak.pub": att.ak_public,
        "ak.crt": att.ak_cert or b"",
        "eventlog.bin": att.event_log or b"",
    }
    if pcr_form == "json":
        files["pcrs"] = json.dumps(pcrs_to_json(quote.pcrs)).encode()
    else:  # tpm2_pcrread-style YAML
        lines = ["sha256:"] + [
            f"  {i:<2}: 0x{v.hex().upper()}" for i, v in quote.pcrs[SHA256].items()
        ]
        files["pcrs"] = "\n".join(lines).encode()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [
        "evidence", "--type", "tpm",
        "--quote", str(tmp_path / "quote.msg"),
        "--signature", str(tmp_path / "quote.sig"),
        "--ak", str(tmp_path / "ak.pub"),
        "--ak-cert", str(tmp_path / "ak.crt"),
        "--pcrs", str(tmp_path / "pcrs"),
        "--event-log", str(tmp_path / "eventlog.bin"),
    ]  # fmt: skip


@pytest.mark.parametrize("pcr_form", ["json", "yaml"])
def test_gce_quote_as_separate_files(
    evidence_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], pcr_form: str
) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    argv = _write_single_quote(tmp_path, att, pcr_form=pcr_form)
    assert main([*argv, "--nonce", "9009", "-o", "json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["event_log.sha256"]["status"] == "pass"
    assert checks["event_log.sha1"]["status"] == "skip"  # only the SHA-256 bank was quoted
    assert checks["ak.certificate"]["status"] == "pass"
    # The certificate alone identifies the AK too.
    argv_cert_only = [a for a in argv if a not in ("--ak", str(tmp_path / "ak.pub"))]
    assert main(argv_cert_only) == 0
    capsys.readouterr()


def test_gce_chain_needs_the_pinned_roots(evidence_dir: Path, tmp_path: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    only_root = tmp_path / "roots-without-intermediate"
    only_root.mkdir()
    (only_root / "gce-tpm-ek-root-1.cer").write_bytes(root_bytes("gce-tpm-ek-root-1.cer"))
    report = _verify(att, nonce=NONCE, roots_dir=only_root)
    assert _status(report)["ak.certificate"] is Status.FAIL
    # The intermediate supplied by the caller completes the chain to the pinned root.
    inter = root_bytes("gce-tpm-ek-intermediate-2.crt")
    from cmcp_verifier.evidence._common import load_certificate

    chained = _verify(
        att, nonce=NONCE, roots_dir=only_root, ak_chain=[load_certificate(inter, what="i")]
    )
    assert chained.verified, chained.render()
    # Another vendor's root directory has no TPM root at all.
    other = tmp_path / "amd-only"
    other.mkdir()
    shutil.copy(evidence_dir / "roots" / "amd-milan-ask-ark-asvk.pem", other)
    failed = _verify(att, nonce=NONCE, roots_dir=other)
    assert "no pinned TPM roots" in {c.name: c.detail for c in failed.checks}["ak.certificate"]


def test_gce_chain_checked_at_the_given_time(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    before_issue = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    report = _verify(att, nonce=NONCE, at=before_issue)
    assert _status(report)["ak.certificate"] is Status.FAIL
    assert "not valid at 2021-01-01" in {c.name: c.detail for c in report.checks}["ak.certificate"]


def test_ak_certificate_must_hold_the_ak(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    other_key = (
        "0001000b00050072000000100014000b0800000000000100" + "c1" * 255 + "01"
    )  # a different RSA-2048 public key with the same template
    report = verify_quotes(att.quotes, bytes.fromhex(other_key), ak_cert=att.ak_cert)
    status = _status(report)
    assert status["ak.certificate"] is Status.FAIL
    assert status["quote[0].signature"] is Status.FAIL


# --- byte flips ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_flipped_byte_of_quote_or_signature_is_rejected(
    evidence_dir: Path, index: int
) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = att.quotes[index]
    ak = load_ak_public(att.ak_public)

    def verdict(attest: bytes, sig: bytes) -> bool:
        return verify_quote(attest, sig, ak, pcrs=quote.pcrs, nonce=NONCE).verified

    assert verdict(quote.attest, quote.signature)
    for i in range(len(quote.attest)):
        flipped = bytearray(quote.attest)
        flipped[i] ^= 0x01
        assert not verdict(bytes(flipped), quote.signature), f"attest byte {i}"
    for i in range(len(quote.signature)):
        flipped = bytearray(quote.signature)
        flipped[i] ^= 0x01
        assert not verdict(quote.attest, bytes(flipped)), f"signature byte {i}"


def test_tampered_pcr_value_or_event_log_is_rejected(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = _sha256_quote(att)
    pcrs = {SHA256: dict(quote.pcrs[SHA256])}
    pcrs[SHA256][4] = bytes(32)
    report = verify_quote(quote.attest, quote.signature, att.ak_public, pcrs=pcrs)
    assert [c.name for c in report.failures] == ["quote.pcr_digest"]

    log = bytearray(att.event_log or b"")
    events = parse_event_log(bytes(log)).events
    digest = events[5].digests[SHA256]
    at = bytes(log).index(digest)
    log[at] ^= 0xFF
    report = verify_quote(
        quote.attest, quote.signature, att.ak_public, pcrs=quote.pcrs, event_log=bytes(log)
    )
    assert [c.name for c in report.failures] == ["event_log.sha256"]
    assert "replay differs at PCR" in report.failures[0].detail
    report = verify_quote(
        quote.attest, quote.signature, att.ak_public, pcrs=quote.pcrs, event_log=bytes(log[:-7])
    )
    assert [c.name for c in report.failures] == ["event_log.parse"]


def test_event_log_needs_verified_pcrs(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = _sha256_quote(att)
    report = verify_quote(quote.attest, quote.signature, att.ak_public, event_log=att.event_log)
    assert [c.name for c in report.failures] == ["event_log.replay"]


def test_replay_is_per_bank_and_honours_startup_locality(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    log = parse_event_log(att.event_log or b"")
    assert log.crypto_agile and log.banks == ["sha1", "sha256", "sha384"]
    assert len(log.events) == 44
    for q in att.quotes:
        assert isinstance(q.pcrs, dict)
        ((alg_id, values),) = q.pcrs.items()
        alg = next(a for a in HASH_BY_NAME.values() if a.alg_id == alg_id)
        regs = replay(log.events, alg)
        assert sorted(regs) == list(range(10))
        assert all(regs[i] == values[i] for i in regs)
    # A StartupLocality event (EV_NO_ACTION) sets PCR 0's initial value to the locality.
    from cmcp_verifier.evidence.tcg_eventlog import Event

    sha256 = HASH_BY_NAME["sha256"]
    ev = Event(0, 1, {SHA256: bytes(32)}, b"")
    loc = Event(0, 3, {SHA256: bytes(32)}, b"StartupLocality\x00\x03")
    assert replay([loc, ev], sha256)[0] == sha256.digest(bytes(31) + b"\x03" + bytes(32))
    assert replay([ev], sha256)[0] == sha256.digest(bytes(64))


# --- Azure: the library API with an HCL attestation key ------------------------------------


def _hcl_ak_jwk(report: bytes) -> dict[str, Any]:
    start = report.index(b'{"keys"')
    runtime = report[start : report.rindex(b"}") + 1]
    return next(k for k in json.loads(runtime)["keys"] if k["kid"] == "HCLAkPub")


@pytest.mark.parametrize("tee", ["snp", "tdx"])
def test_azure_vtpm_quote_verifies_with_the_hcl_key(evidence_dir: Path, tee: str) -> None:
    base = evidence_dir / "azure-cvm" / tee
    ak = ak_from_jwk(_hcl_ak_jwk((base / "hcl-report.bin").read_bytes()))
    quote = json.loads((base / "tpm-quote-v1.json").read_text())
    pcrs = {SHA256: {i: bytes.fromhex(v) for i, v in enumerate(quote["pcrs"])}}
    msg, sig = bytes.fromhex(quote["message"]), bytes.fromhex(quote["signature"])
    report = verify_quote(msg, sig, ak, pcrs=pcrs, nonce=b"challenge")
    assert report.verified, report.render()
    assert _status(report)["ak.key"] is Status.SKIP  # a JWK carries no TPM attributes
    assert report.report_data == b"challenge"
    assert not verify_quote(msg, sig, ak, nonce=b"challengf").verified


def test_azure_quote_from_evidence_json(evidence_dir: Path) -> None:
    evidence = json.loads((evidence_dir / "azure-cvm/snp/evidence-v0.json").read_text())
    ak = ak_from_jwk(_hcl_ak_jwk(bytes(evidence["report"])))
    q = evidence["quote"]
    pcrs = {SHA256: {i: bytes(v) for i, v in enumerate(q["pcrs"])}}
    report = verify_quote(bytes(q["message"]), bytes(q["signature"]), ak, pcrs=pcrs)
    assert report.verified, report.render()


# --- the claim's embedded form ---------------------------------------------------------------


def test_embedded_form_round_trip_and_fail_closed(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = _sha256_quote(att)
    kind = evidence_types()["tpm"]
    evidence = embed_evidence(
        quote.attest,
        quote.signature,
        att.ak_public,
        ak_cert=att.ak_cert,
        pcrs=quote.pcrs,
        event_log=att.event_log,
    )
    assert set(evidence) == {"quote", "signature", "ak_public", "ak_cert", "pcrs", "event_log"}
    # The claim's nonce lives in the binding digest, so the policy nonce is not compared here.
    report = kind.verify_embedded(evidence, EvidencePolicy(nonce=b"other"))
    assert report.verified, report.render()
    assert report.report_data == NONCE
    without_cert = {k: v for k, v in evidence.items() if k != "ak_cert"}
    report = kind.verify_embedded(without_cert, EvidencePolicy())
    assert [c.name for c in report.failures] == ["ak.certificate"]
    with pytest.raises(InputError):
        kind.verify_embedded({**evidence, "extra": "AA"}, EvidencePolicy())
    with pytest.raises(InputError):
        kind.verify_embedded({**evidence, "quote": "not base64!"}, EvidencePolicy())
    chain = embed_evidence(
        quote.attest,
        quote.signature,
        att.ak_public,
        ak_cert=att.ak_cert,
        ak_chain=[root_bytes("gce-tpm-ek-intermediate-2.crt")] * 2,
    )
    assert kind.verify_embedded(chain, EvidencePolicy()).verified


# --- bad input ----------------------------------------------------------------------------


def test_structure_parsers_are_strict(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    attest = att.quotes[0].attest
    sig = att.quotes[0].signature
    cases = [
        (parse_tpms_attest, attest + b"\x00", "tpm.trailing"),
        (parse_tpms_attest, attest[:-1], "evidence.truncated"),
        (parse_tpms_attest, b"\x00" + attest[1:], "tpm.magic"),
        (parse_tpms_attest, attest[:4] + b"\x80\x17" + attest[6:], "tpm.attest_type"),
        (parse_tpms_attest, attest[:6] + b"\xff\xff" + attest[8:], "tpm.size"),
        (parse_tpmt_signature, sig + b"\x00", "tpm.trailing"),
        (parse_tpmt_signature, b"\x00\x10" + sig[2:], "tpm.sig_scheme"),
        (parse_tpmt_signature, sig[:4] + b"\x02\x01" + sig[6:], "tpm.size"),
        (parse_tpmt_public, att.ak_public[:-3], "evidence.truncated"),
        (parse_tpmt_public, b"\x00\x08" + att.ak_public[2:], "tpm.key_type"),
    ]
    for parse, data, code in cases:
        with pytest.raises(InputError) as err:
            parse(data)
        assert err.value.code == code, (parse.__name__, err.value.message)
    # A TPM2B_ATTEST (tpm2-pytss marshal()) is unwrapped; a TPM2B_PUBLIC too.
    assert parse_tpms_attest(struct.pack(">H", len(attest)) + attest).raw == attest
    wrapped = struct.pack(">H", len(att.ak_public)) + att.ak_public
    assert parse_tpmt_public(wrapped).raw == att.ak_public


def test_pcr_file_forms(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = _sha256_quote(att)
    sel = parse_tpms_attest(quote.attest).pcr_selection
    values = quote.pcrs[SHA256]
    raw = b"".join(values[i] for i in range(24))
    as_json = json.dumps({"pcrs": pcrs_to_json(quote.pcrs)}).encode()
    yaml_text = "pcrs:\n  sha256:\n" + "".join(
        f"    {i} : 0x{v.hex()}\n" for i, v in values.items()
    )
    for data in (raw, as_json, yaml_text.encode()):
        assert parse_pcr_file(data, sel) == quote.pcrs
    bad = {
        b'{"sha256": {"0": "00"}}': "pcrs.value",
        b'{"md5": {"0": "00"}}': "pcrs.bank",
        b'{"sha256": {"32": "' + b"00" * 32 + b'"}}': "pcrs.format",
        b"sha256:\n  0: [1, 2]\n": "pcrs.value",
        b"sha256: [\n": "pcrs.format",
        raw[:-1]: "pcrs.format",
        b"\x00" * 10: "pcrs.format",
    }
    for data, code in bad.items():
        with pytest.raises(InputError) as err:
            parse_pcr_file(data, sel)
        assert err.value.code == code, (data[:30], err.value.message)


HOSTILE = {
    "empty": b"",
    "zeros": bytes(4096),
    "huge size prefix": bytes.fromhex("ff544347801800ff") + b"\xff" * 64,
    "json": b'{"a": 1}',
    "pem garbage": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    "text": b"hello world\n",
}


@pytest.mark.parametrize("role", ["quote", "signature", "ak", "ak-cert", "pcrs", "event-log"])
@pytest.mark.parametrize("content", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_files_are_rejected_cleanly(
    evidence_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    role: str,
    content: bytes,
) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    argv = _write_single_quote(tmp_path, att)
    target = Path(argv[argv.index(f"--{role}") + 1])
    target.write_bytes(content)
    assert main([*argv, "--nonce", "9009"]) == 1
    out = capsys.readouterr()
    assert "rejected: " in out.out
    assert "Traceback" not in out.out + out.err


def test_usage_errors_exit_2(
    evidence_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, att = _sample(evidence_dir, "nonce9009")
    argv = _write_single_quote(tmp_path, att)
    cases = [
        ["evidence", "--type", "tpm", "--quote", argv[4]],  # no signature, no AK
        [*argv[:4], str(tmp_path / "missing.msg"), *argv[5:]],  # unreadable file
        [*argv, "--sig-hash", "md5"],
        ["evidence", "--type", "tpm", "--attestation", str(path), "--quote", argv[4]],
    ]
    for case in cases:
        with pytest.raises(SystemExit) as exc:
            main(case)
        assert exc.value.code == 2, case
        assert "cmcp-verify: error[" in capsys.readouterr().err


def test_embedded_hostile_members_never_raise_unexpectedly(evidence_dir: Path) -> None:
    _, att = _sample(evidence_dir, "nonce9009")
    quote = _sha256_quote(att)
    base = embed_evidence(quote.attest, quote.signature, att.ak_public, ak_cert=att.ak_cert)
    kind = evidence_types()["tpm"]
    for member in ("quote", "signature", "ak_public", "ak_cert", "ak_chain", "pcrs", "event_log"):
        for junk in (b"", b"\x30\x82\xff\xff", b"{}", b"\xff" * 300):
            evidence = {**base, member: b64url_encode(junk)}
            try:
                report = kind.verify_embedded(evidence, EvidencePolicy())
            except InputError:
                continue
            harmless = member == "ak_chain" and junk == b""  # no extra intermediates
            assert report.verified == harmless, (member, junk)


def test_gotpm_attestation_reader_rejects_malformed(tmp_path: Path) -> None:
    for doc in (
        {},
        {"quotes": []},
        {"quotes": [1]},
        {"quotes": [{"tpms_attest_hex": "zz", "tpmt_signature_hex": ""}], "ak_public_tpmt_hex": ""},
        {
            "quotes": [{"tpms_attest_hex": "", "tpmt_signature_hex": "", "pcrs": {}}],
            "ak_public_tpmt_hex": "",
        },
        {"quotes": [{"tpms_attest_hex": "", "tpmt_signature_hex": ""}], "ak_cert_der_b64": "%%"},
    ):
        with pytest.raises(InputError):
            parse_gotpm_attestation(json.dumps(doc).encode())
