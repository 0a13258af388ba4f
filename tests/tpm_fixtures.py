"""A real software TPM for tests: swtpm on 127.0.0.1, driven with tpm2-tools.

Use the ``swtpm`` fixture (function scope, registered in tests/conftest.py) or, for another
scope, the :func:`running_swtpm` context manager::

    def test_x(swtpm: Swtpm) -> None:
        swtpm.tool("tpm2_pcrread", "sha256:0")          # TPM2TOOLS_TCTI is set for you
        os.environ["CMCP_TPM_TCTI"] = swtpm.tcti        # "swtpm:host=127.0.0.1,port=…"

Each instance gets its own state directory and free TCP ports (server P, control P+1, as the
swtpm TCTI expects), is manufactured by ``swtpm_setup`` with the requested PCR banks (and, on
request, EK certificates from a CA kept in the state directory), and is stopped (SIGTERM, then
SIGKILL) when the test ends. ``tests/tools/install-tpm-tools.sh`` installs swtpm and tpm2-tools.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_SCRIPT = Path(__file__).resolve().parent / "tools" / "install-tpm-tools.sh"
HOST = "127.0.0.1"


def ensure_tpm_tools() -> None:
    """Install swtpm and tpm2-tools if missing; fail the test with the script's reason."""
    if all(shutil.which(c) for c in ("swtpm", "swtpm_setup", "tpm2_quote")):
        return
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot install swtpm/tpm2-tools: {proc.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class Swtpm:
    """A running swtpm: where it listens, its TCTI string and its state directory."""

    host: str
    port: int
    ctrl_port: int
    state_dir: Path
    pid: int

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-tools and tpm2-pytss (``TPM2TOOLS_TCTI``, ``CMCP_TPM_TCTI``)."""
        return f"swtpm:host={self.host},port={self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "TPM2TOOLS_TCTI": self.tcti, "TSS2_LOG": "all+none"}

    def tool(self, *args: str, cwd: Path | None = None) -> str:
        """Run a tpm2-tools command; then flush transient objects and sessions (there is no
        resource manager in front of swtpm). Returns stdout; a failure fails the test."""
        try:
            proc = subprocess.run(
                args, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=60
            )
            if proc.returncode != 0:
                pytest.fail(f"{' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
            return proc.stdout
        finally:
            for kind in ("-t", "-s"):
                subprocess.run(
                    ["tpm2_flushcontext", kind], env=self.env(), capture_output=True, timeout=30
                )


def _free_port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1):
                    s = stack.enter_context(socket.socket())
                    s.bind((HOST, p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _localca_config(state: Path) -> Path:
    """swtpm_setup config whose EK-certificate CA lives in ``state`` (never /var/lib)."""
    ca = state / "localca"
    ca.mkdir()
    (ca / "swtpm-localca.conf").write_text(
        f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
        f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
    )
    (ca / "swtpm-localca.options").write_text(
        "--platform-manufacturer cmcp-tests\n--platform-version 2.1\n--platform-model swtpm\n"
    )
    conf = ca / "swtpm_setup.conf"
    conf.write_text(
        "create_certs_tool = swtpm_localca\n"
        f"create_certs_tool_config = {ca}/swtpm-localca.conf\n"
        f"create_certs_tool_options = {ca}/swtpm-localca.options\n"
    )
    return conf


def _manufacture(state: Path, pcr_banks: str, ek_cert: bool) -> None:
    tpm = state / "tpm"
    tpm.mkdir()
    cmd = ["swtpm_setup", "--tpm2", "--tpmstate", str(tpm), "--pcr-banks", pcr_banks]
    if ek_cert:
        cmd += ["--create-ek-cert", "--config", str(_localca_config(state))]
    else:
        empty = state / "swtpm_setup.conf"
        empty.write_text("")
        cmd += ["--config", str(empty)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"swtpm_setup failed: {(proc.stdout + proc.stderr).strip()[-800:]}")


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def running_swtpm(
    state_dir: Path | None = None, *, pcr_banks: str = "sha1,sha256,sha384", ek_cert: bool = False
) -> Iterator[Swtpm]:
    """Manufacture and start a swtpm; stop it (and remove a temporary state dir) on exit."""
    ensure_tpm_tools()
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swtpm-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        _manufacture(state_dir, pcr_banks, ek_cert)
        log = state_dir / "swtpm.log"
        for _attempt in range(5):
            port = _free_port_pair()
            proc = subprocess.Popen(
                [
                    "swtpm", "socket", "--tpm2",
                    "--tpmstate", f"dir={state_dir / 'tpm'}",
                    "--server", f"type=tcp,port={port},bindaddr={HOST}",
                    "--ctrl", f"type=tcp,port={port + 1},bindaddr={HOST}",
                    "--flags", "not-need-init,startup-clear",
                    "--log", f"file={log},level=1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            stack.callback(_stop, proc)
            if _wait_listening(proc, port):
                yield Swtpm(HOST, port, port + 1, state_dir, proc.pid)
                return
            _stop(proc)
        pytest.fail(f"swtpm did not start; log: {log.read_text()[-800:] if log.exists() else '-'}")


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    """A fresh swtpm (SHA-1, SHA-256 and SHA-384 banks) for one test."""
    with running_swtpm(tmp_path / "swtpm") as tpm:
        yield tpm
