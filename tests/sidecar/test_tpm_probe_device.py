"""The TPM provider's probe refuses a missing ``device:`` TCTI without loading tpm2-tss."""

from __future__ import annotations

import subprocess
import sys

from cmcp_sidecar.attest.tpm import TpmProvider, TpmSettings, missing_device


def test_missing_device_paths() -> None:
    assert missing_device("device:/nonexistent/tpmrm9") == "/nonexistent/tpmrm9"
    assert missing_device("device:/dev/null") is None  # exists: tpm2-tss decides
    assert missing_device("swtpm:port=2321") is None
    assert missing_device("mssim:host=localhost,port=2321") is None


async def test_probe_says_which_device_is_missing() -> None:
    provider = TpmProvider(TpmSettings.from_options({"tcti": "device:/nonexistent/tpmrm9"}))
    probe = await provider.probe()
    assert not probe.available
    assert probe.reason == "no TPM device at /nonexistent/tpmrm9"
    assert probe.hint is not None and "CMCP_TPM_TCTI" in probe.hint


def test_probe_does_not_load_tpm2_tss() -> None:
    code = (
        "import asyncio, sys\n"
        "from cmcp_sidecar.attest.tpm import TpmProvider, TpmSettings\n"
        "p = TpmProvider(TpmSettings.from_options({'tcti': 'device:/nonexistent/tpmrm9'}))\n"
        "assert not asyncio.run(p.probe()).available\n"
        "print('tpm2_pytss' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
