"""The verifier stands alone: its base install pulls only cryptography, rfc8785 and PyYAML, and
importing it, running ``cmcp-verify --help`` and verifying a claim, an audit log and hardware
evidence load no gateway or operator dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from cmcp_verifier.canonical import canonical_bytes

from .claimfactory import make_claim

FORBIDDEN = ("aiohttp", "cedarpy", "kubernetes", "kopf", "pydantic", "prometheus_client", "mcp")
BASE = {"cryptography", "rfc8785", "pyyaml"}


def test_base_install_requires_only_the_verifier_dependencies() -> None:
    requirements = [Requirement(r) for r in metadata.requires("confidential-mcp") or []]
    base = {r.name.lower() for r in requirements if r.marker is None}
    assert base == BASE
    extras = {r.name.lower() for r in requirements if r.marker is not None}
    assert {"aiohttp", "cedarpy", "kubernetes", "kopf"} <= extras  # only behind extras


_PROBE = """
import json, pkgutil, sys, importlib
argv = json.loads(sys.argv[1])
import cmcp_verifier
from cmcp_verifier.evidence import evidence_types
from cmcp_verifier.cli import main
for info in pkgutil.walk_packages(cmcp_verifier.__path__, "cmcp_verifier."):
    if info.name != "cmcp_verifier.__main__":  # that one runs the CLI
        importlib.import_module(info.name)
evidence_types()
try:
    main(["--help"])
except SystemExit:
    pass
try:
    main(["evidence", "--help"])
except SystemExit:
    pass
codes = [main(args) for args in argv]
print(json.dumps([codes, sorted({m.split(".")[0] for m in sys.modules})]), file=sys.stderr)
"""


def test_importing_and_verifying_loads_no_gateway_dependency(
    tmp_path: Path, evidence_dir: Path
) -> None:
    claim, log = make_claim()
    (tmp_path / "claim.json").write_bytes(canonical_bytes(claim))
    (tmp_path / "audit.log").write_bytes(log)
    claim_args = ["claim", str(tmp_path / "claim.json"), "--audit", str(tmp_path / "audit.log")]
    argv = [
        [*claim_args, "--allow-software"],
        claim_args,  # software-only without --allow-software: rejected
        ["audit", str(tmp_path / "audit.log")],
        [
            "evidence",
            "--type",
            "tdx",
            "--tdx-quote",
            str(evidence_dir / "tdx/trustee-v5.quote.dat"),
        ],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "usage: cmcp-verify" in proc.stdout
    codes, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    assert codes == [0, 1, 0, 0], proc.stdout
    loaded = set(modules)
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    assert "cmcp_sidecar" not in loaded and "cmcp_operator" not in loaded
