"""The seed product, cmcp-runtime 0.7.1 (PyPI, MIT), run beside ours for comparison.

It is installed with uv into a venv of its own under the cache (never into the project's
venv; none of its code is in this repository) and started as its documentation says:
``CMCP_DEV_MODE=1 cmcp start --config cmcp-config.yaml`` (software attestation). Its catalog
routes the tool ``echo`` to the same upstream our gateway fronts: cmcp-runtime forwards a
``tools/call`` as a 2026-07-28 JSON-RPC POST to the catalog entry's ``server.url``, which
the benchmark upstream answers like any other client's. Its policy bundle permits
everything (Cedar, like ours); its audit chain is its SQLite ``audit.db``.

One thing is changed, because the product cannot serve a sustained load without it:
cmcp-runtime 0.7.1 refuses every call after the tenth of a session ("exceeded call budget":
``GovernancePolicy.max_tool_calls = 10``, not configurable). The harness raises that budget
at start-up (a ``sitecustomize`` in a directory put on its ``PYTHONPATH``; the installed
package is untouched). Everything else runs as shipped: it answers on its own endpoint shape
(it reads a JSON-RPC ``tools/call`` and ignores the MCP headers), keeps one session, and
writes an access log line per request (uvicorn's default).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.mcp.peers import free_port, wait_port

from .common import CACHE
from .peers import ECHO_SCHEMA, Peer

VERSION = "0.7.1"
NAME = f"cmcp-runtime {VERSION}"
VENV = CACHE / "seed" / f"cmcp-runtime-{VERSION}"
# cmcp-runtime's "no pin recorded" placeholder: plain-http upstreams cannot be pinned anyway.
PLACEHOLDER_FINGERPRINT = "SHA256:" + "A" * 43 + "="


def ensure_installed() -> Path:
    """The seed's ``cmcp`` console script, installing it first when needed (idempotent)."""
    script = VENV / "bin" / "cmcp"
    if script.exists():
        return script
    uv = CACHE / "tools" / "bin" / "uv"
    if not uv.exists():
        raise RuntimeError(f"{uv} is missing: run bash .ci/bootstrap.sh first")
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")}
    subprocess.run([str(uv), "venv", "-q", "--python", "python3", str(VENV)], env=env, check=True)
    subprocess.run(
        [str(uv), "pip", "install", "-q", f"cmcp-runtime=={VERSION}"],
        env={**env, "VIRTUAL_ENV": str(VENV)},
        check=True,
    )
    return script


def write_config(work: Path, port: int, upstream_url: str) -> Path:
    """Config, catalog and an allow-all bundle in cmcp-runtime's formats."""
    bundle = work / "policies"
    bundle.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": "1",
        "authored_at": "2026-01-01T00:00:00Z",
        "author_identity": "bench",
        "commit_sha": "0" * 40,
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "policies.cedar").write_text("permit(principal, action, resource);\n")
    (bundle / "schema.cedarschema").write_text("")
    definition = {"description": "echo", "input_schema": ECHO_SCHEMA}
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    entry: dict[str, Any] = {
        "tool_name": "echo",
        "server": {
            "display_name": "bench",
            "url": upstream_url,
            "tls_fingerprint": PLACEHOLDER_FINGERPRINT,
            "transport": "streamable-http",
        },
        "approved_definition": definition,
        "definition_hash": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
        "added_at": "2026-01-01T00:00:00Z",
        "approved_by": "bench",
    }
    (work / "catalog.json").write_text(json.dumps([entry]))
    config = work / "cmcp-config.yaml"
    config.write_text(
        json.dumps(
            {
                "attestation": {"provider": "auto", "enforcement_mode": "enforcing"},
                "listen_addr": f"127.0.0.1:{port}",
                "policy_bundle_path": str(bundle),
                "catalog_path": str(work / "catalog.json"),
                "audit_db_path": str(work / "audit.db"),
            }
        )
    )
    return config


BUDGET_OVERRIDE = """\
# Written by tests/bench/seed.py: lift cmcp-runtime's fixed 10-calls-per-session budget.
import cmcp_runtime.runtime_gateway as _gateway

_init = _gateway.GovernancePolicy.__init__


def _unbounded(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.max_tool_calls = 10**12


_gateway.GovernancePolicy.__init__ = _unbounded
"""


def start(upstream_url: str, work: Path) -> Peer:
    """Install (once) and start cmcp-runtime in dev mode in front of ``upstream_url``."""
    script = ensure_installed()
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(work, port, upstream_url)
    override = work / "override"
    override.mkdir(exist_ok=True)
    (override / "sitecustomize.py").write_text(BUDGET_OVERRIDE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(script), "start", "--config", str(config)],
        cwd=work,
        env={**env, "CMCP_DEV_MODE": "1", "PYTHONPATH": str(override)},
        stdout=subprocess.DEVNULL,
        stderr=(work / "seed.log").open("wb"),
    )
    wait_port(port, proc, timeout=60)
    return Peer(NAME, proc, port, work, {"version": VERSION})
