"""The verifier stands alone: its base install pulls only cryptography, rfc8785 and PyYAML, and
importing it (and running ``cmcp-verify --help``) loads no gateway or operator dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

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
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def test_importing_the_verifier_loads_no_gateway_dependency() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert "usage: cmcp-verify" in proc.stdout
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    assert "cmcp_sidecar" not in loaded and "cmcp_operator" not in loaded
