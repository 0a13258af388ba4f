"""Hostile input for every ``cmcp-verify`` subcommand and input slot.

Each file of a corpus of hostile files (empty, one byte, 20 MiB of zeros, random bytes,
truncated real samples, JSON with duplicate keys, floats, 2^53+1, NaN, deep nesting, wrong
types, non-canonical base64url, unknown versions) goes into each input slot of each
subcommand, the other slots holding valid samples. Every run must end in exit status 1
(``rejected: <reason>`` as the last line, or ``-o json`` with verdict "rejected") or 2 (one
``cmcp-verify: error[<code>]: … (hint: …)`` line), never a traceback and never the
fail-closed internal-error report, and each must finish within a few seconds (20 MiB of
zeros is refused by the size limits, not parsed). The runs call ``main()`` in-process; a few
are repeated as real processes.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.cli import main
from cmcp_verifier.evidence.tpm_gotpm import parse_gotpm_attestation

from .claimfactory import make_claim
from .test_docs_errors import documented_codes

SECONDS = 5.0
ERROR_CODES = set(documented_codes())
USAGE_LINE = re.compile(r"cmcp-verify: error\[[a-z0-9-]+\.[a-z0-9_]+\]: .+ \(hint: .+\)")


def _corpus(directory: Path, evidence: Path) -> dict[str, Path]:
    claim, log = make_claim()
    text = json.dumps(claim)
    rng = random.Random(2)
    nested = "[" * 100_000 + "]" * 100_000
    samples = {
        "empty": b"",
        "one byte": b"{",
        "zeros 20 MiB": bytes(20 * 2**20),
        "random": rng.randbytes(4096),
        "claim truncated": text.encode()[: len(text) // 2],
        "log truncated": log[: len(log) // 2 + 3],
        "quote truncated": (evidence / "tdx" / "trustee-v5.quote.dat").read_bytes()[:700],
        "report truncated": (evidence / "sev-snp" / "trustee-milan.report.bin").read_bytes()[:600],
        "duplicate keys": text.replace(
            '{"cmcp_version": "1.0",', '{"cmcp_version": "1.0", "cmcp_version": "1.0",', 1
        ).encode(),
        "float": text.replace('"length": 5', '"length": 5.0').encode(),
        "2^53+1": text.replace('"length": 5', '"length": 9007199254740993').encode(),
        "NaN": text.replace('"length": 5', '"length": NaN').encode(),
        "deep nesting": nested.encode(),
        "wrong types": json.dumps({**claim, "trace": [1, 2], "gateway": "x"}).encode(),
        "non-canonical base64": json.dumps(
            {**claim, "signature": claim["signature"] + "=="}
        ).encode(),
        "unknown version": text.replace('"cmcp_version": "1.0"', '"cmcp_version": "9.9"').encode(),
        "unknown audit version": log.replace(b'"v":1', b'"v":2', 1),
        "pem garbage": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "huge length prefix": b"\x30\x84\xff\xff\xff\xff" + bytes(16),
        "json array": b"[]",
        "utf-16": '{"a": 1}'.encode("utf-16"),
    }
    paths = {}
    for name, data in samples.items():
        path = directory / name.replace(" ", "_").replace("^", "")
        path.write_bytes(data)
        paths[name] = path
    return paths


def _slots(evidence: Path, tmp: Path) -> dict[str, list[str]]:
    """Each command line with one slot left as ``{}`` for the hostile file."""
    snp, tdx, nv, tpm = (evidence / d for d in ("sev-snp", "tdx", "nvidia", "tpm"))
    claim_path = tmp / "valid-claim.json"
    claim, _ = make_claim()
    claim_path.write_bytes(canonical_bytes(claim))
    gce = parse_gotpm_attestation((tpm / "gce-cos-85-nonce9009.attestation.json").read_bytes())
    quote = gce.quotes[1]
    (tmp / "q.msg").write_bytes(quote.attest)
    (tmp / "q.sig").write_bytes(quote.signature)
    (tmp / "ak.pub").write_bytes(gce.ak_public)
    report, vcek = str(snp / "trustee-milan.report.bin"), str(snp / "trustee-milan.vcek.der")
    td_quote = str(tdx / "go-tdx-guest-v5.quote.dat")
    gpu, certs = str(nv / "hopper.report.hex.txt"), str(nv / "hopper-cert-chain-case1.txt")
    tq = ["evidence", "--type", "tpm", "--quote", str(tmp / "q.msg")]
    return {
        "claim": ["claim", "{}"],
        "claim --audit": ["claim", str(claim_path), "--allow-software", "--audit", "{}"],
        "audit": ["audit", "{}"],
        "sev-snp --report": ["evidence", "--type", "sev-snp", "--report", "{}", "--vcek", vcek],
        "sev-snp --vcek": ["evidence", "--type", "sev-snp", "--report", report, "--vcek", "{}"],
        "sev-snp --chain": ["evidence", "--type", "sev-snp", "--vcek", vcek, "--chain", "{}"],
        "sev-snp --cert-table": [
            "evidence",
            "--type",
            "sev-snp",
            "--report",
            report,
            "--cert-table",
            "{}",
        ],
        "tdx --tdx-quote": ["evidence", "--type", "tdx", "--tdx-quote", "{}"],
        "tdx --tcb-info": [
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            td_quote,
            "--tcb-info",
            "{}",
            "--tcb-info-chain",
            str(tdx / "go-tdx-guest.tcbinfo-issuer-chain.pem"),
        ],
        "tdx --pck-crl": ["evidence", "--type", "tdx", "--tdx-quote", td_quote, "--pck-crl", "{}"],
        "tdx --qe-identity": [
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            td_quote,
            "--qe-identity",
            "{}",
            "--qe-identity-chain",
            str(tdx / "go-tdx-guest.qeidentity-issuer-chain.pem"),
        ],
        "tdx --tcb-info-chain": [
            *["evidence", "--type", "tdx", "--tdx-quote", td_quote],
            *["--tcb-info", str(tdx / "go-tdx-guest-v5.tcbinfo.json"), "--tcb-info-chain", "{}"],
        ],
        "tdx --root-crl": [
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            td_quote,
            "--root-crl",
            "{}",
        ],
        "tdx --tdx-acpi-table": [
            *["evidence", "--type", "tdx", "--tdx-quote", str(tdx / "gcp-cos-ccel.quote.dat")],
            *["--tdx-event-log", str(tdx / "gcp-cos-ccel.eventlog.bin")],
            *["--tdx-acpi-table", "{}"],
        ],
        "azure-cvm --azure-evidence": ["evidence", "--type", "azure-cvm", "--azure-evidence", "{}"],
        "tdx --tdx-event-log": [
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            str(tdx / "gcp-cos-ccel.quote.dat"),
            "--tdx-event-log",
            "{}",
        ],
        "tpm --quote": [
            "evidence",
            "--type",
            "tpm",
            "--quote",
            "{}",
            "--signature",
            str(tmp / "q.sig"),
            "--ak",
            str(tmp / "ak.pub"),
        ],
        "tpm --signature": [*tq, "--signature", "{}", "--ak", str(tmp / "ak.pub")],
        "tpm --ak": [*tq, "--signature", str(tmp / "q.sig"), "--ak", "{}"],
        "tpm --pcrs": [
            *tq,
            "--signature",
            str(tmp / "q.sig"),
            "--ak",
            str(tmp / "ak.pub"),
            "--pcrs",
            "{}",
        ],
        "tpm --event-log": [
            *tq,
            "--signature",
            str(tmp / "q.sig"),
            "--ak",
            str(tmp / "ak.pub"),
            "--event-log",
            "{}",
        ],
        "tpm --ak-cert": [*tq, "--signature", str(tmp / "q.sig"), "--ak-cert", "{}"],
        "tpm --ak-chain": [
            *[*tq, "--signature", str(tmp / "q.sig"), "--ak", str(tmp / "ak.pub")],
            *["--ak-chain", "{}"],
        ],
        "tpm --attestation": ["evidence", "--type", "tpm", "--attestation", "{}"],
        "gpu-cc --gpu-report": [
            "evidence",
            "--type",
            "gpu-cc",
            "--gpu-report",
            "{}",
            "--gpu-certs",
            certs,
        ],
        "gpu-cc --gpu-certs": [
            "evidence",
            "--type",
            "gpu-cc",
            "--gpu-report",
            gpu,
            "--gpu-certs",
            "{}",
        ],
        "gpu-cc --rim": [
            "evidence",
            "--type",
            "gpu-cc",
            "--gpu-report",
            gpu,
            "--gpu-certs",
            certs,
            "--rim",
            "{}",
        ],
    }


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exc:  # usage errors (exit 2)
        code = int(exc.code or 0)
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    return code, out, err, elapsed


def _judge(what: str, code: int, out: str, err: str, elapsed: float) -> None:
    assert elapsed < SECONDS, f"{what}: took {elapsed:.1f} s"
    assert "Traceback" not in out + err, f"{what}: {err}"
    assert "verifier.internal_error" not in out, f"{what}: {out}"
    if code == 2:
        assert not out and USAGE_LINE.fullmatch(err.strip()), f"{what}: {err!r}"
        assert len(err.strip().splitlines()) == 1, f"{what}: {err!r}"
        return
    assert code == 1, f"{what}: exit {code}\n{out}"
    if out.startswith("{"):  # -o json
        doc = json.loads(out)
        assert doc["verdict"] == "rejected", f"{what}: {out}"
        failed = [c for c in doc["checks"] if c["status"] == "fail"]
        assert failed and all(c["detail"] for c in failed), f"{what}: {out}"
        # A failure named by an error code (the input could not be read) says what to do.
        assert all(c.get("hint") for c in failed if c["name"] in ERROR_CODES), f"{what}: {out}"
    else:
        last = out.strip().splitlines()[-1]
        assert last.startswith("rejected: "), f"{what}: {out}"
        if last.split(":", 2)[1].strip() in ERROR_CODES:
            assert last.endswith(")") and " (hint: " in last, f"{what}: {out}"


def test_every_hostile_file_in_every_slot(
    evidence_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _corpus(tmp_path, evidence_dir)
    for slot, template in _slots(evidence_dir, tmp_path).items():
        for name, path in corpus.items():
            argv = [str(path) if a == "{}" else a for a in template]
            _judge(f"{slot} ← {name}", *_run(argv, capsys))


def test_hostile_directories_and_options(
    evidence_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c").mkdir()
    corpus = _corpus(tmp_path / "c", evidence_dir)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, path in corpus.items():  # hostile bundle members under member names
        target = {"zeros 20 MiB": "big.cedar", "NaN": "manifest.json"}.get(name)
        if target:
            (bundle / target).write_bytes(path.read_bytes())
    (bundle / "schema.cedarschema").mkdir()
    report = str(evidence_dir / "sev-snp" / "trustee-milan.report.bin")
    cases = {
        "bundle of hostile members": ["bundle", str(bundle)],
        "bundle is a file": ["bundle", str(corpus["random"])],
        "bundle bad expected hash": ["bundle", str(bundle), "--expected-hash", "md5:00"],
        "roots of hostile files": [
            "evidence",
            "--type",
            "sev-snp",
            "--report",
            report,
            "--roots",
            str(tmp_path / "c"),
        ],
        "roots is a file": [
            "evidence",
            "--type",
            "tpm",
            "--attestation",
            str(evidence_dir / "tpm" / "gce-cos-85-nonce9009.attestation.json"),
            "--roots",
            str(corpus["random"]),
        ],
        "nonce not hex": ["evidence", "--type", "sev-snp", "--report", report, "--nonce", "zz"],
        "nonce bad base64": [
            "evidence",
            "--type",
            "sev-snp",
            "--report",
            report,
            "--nonce",
            "b64:a==",
        ],
        "nonce too long": [
            "evidence",
            "--type",
            "sev-snp",
            "--report",
            report,
            "--nonce",
            "00" * 65,
        ],
        "bad time": ["evidence", "--type", "sev-snp", "--report", report, "--at", "yesterday"],
        "unknown type": ["evidence", "--type", "sgx"],
        "unknown option": ["claim", str(corpus["random"]), "--frobnicate"],
        "negative max age": ["claim", str(corpus["random"]), "--max-age", "-1"],
        "missing claim": ["claim", str(tmp_path / "absent.json")],
        "claim is a directory": ["claim", str(tmp_path)],
        "missing audit log": ["audit", str(tmp_path / "absent.log")],
    }
    for what, argv in cases.items():
        _judge(what, *_run(argv, capsys))
        _judge(f"{what} -o json", *_run([*argv, "-o", "json"], capsys))


def test_as_real_processes(evidence_dir: Path, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, evidence_dir)
    for argv in (
        ["claim", str(corpus["duplicate keys"])],
        ["audit", str(corpus["zeros 20 MiB"])],
        ["evidence", "--type", "tdx", "--tdx-quote", str(corpus["quote truncated"])],
        ["bundle", str(tmp_path / "absent")],
        ["claim", "-", "-o", "json"],
    ):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "cmcp_verifier", *argv],
            input=b"[" * 50_000,
            capture_output=True,
            timeout=30,
            check=False,
        )
        _judge(
            " ".join(argv),
            proc.returncode,
            proc.stdout.decode(),
            proc.stderr.decode(),
            time.perf_counter() - started,
        )
