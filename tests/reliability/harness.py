"""A real ``cmcp start`` process for reliability tests and campaigns.

:func:`write_setup` lays out what a deployed gateway has on disk (config file, a copy of a
policy bundle, a catalog pinned from the live upstream with ``cmcp catalog pin``, audit and
claims directories); :class:`GatewayProcess` runs ``cmcp start`` on it in development mode
(software attestation), waits for ``/readyz``, and stops it with SIGTERM or SIGKILL. The
gateway's log (JSON lines on stderr) goes to ``gateway.log`` in the setup directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.mcp.peers import REPO, free_port

BIN = Path(sys.executable).parent
DEMO_BUNDLE = REPO / "policies" / "demo"
PRINCIPAL = "test/agent"


def pin_catalog(
    upstream: str, name: str = "demo", labels: dict[str, list[str]] | None = None
) -> Any:
    """``cmcp catalog pin`` of a live upstream, with operator labels added."""
    done = subprocess.run(
        [str(BIN / "cmcp"), "catalog", "pin", "--upstream", upstream, "--name", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cmcp catalog pin failed: {done.stderr.strip()}")
    catalog = json.loads(done.stdout)
    for tool in catalog["tools"]:
        if labels and tool["name"] in labels:
            tool["labels"] = labels[tool["name"]]
    return catalog


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested mappings key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class GatewaySetup:
    """A gateway's files on disk and the loopback port it listens on."""

    root: Path
    port: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "cmcp-config.yaml"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.log"

    @property
    def claims_dir(self) -> Path:
        return self.root / "claims"

    @property
    def log_file(self) -> Path:
        return self.root / "gateway.log"

    def write(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))


def write_setup(
    root: Path,
    upstream: str,
    *,
    bundle: Path = DEMO_BUNDLE,
    catalog: Any = None,
    labels: dict[str, list[str]] | None = None,
    **config: Any,
) -> GatewaySetup:
    """Config, bundle copy and pinned catalog for a gateway in front of ``upstream``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle, root / "bundle", dirs_exist_ok=True)
    if catalog is None:
        catalog = pin_catalog(upstream, labels=labels or {"lookup_customer": ["pii"]})
    (root / "catalog.json").write_text(json.dumps(catalog, indent=2))
    port = free_port()
    base: dict[str, Any] = {
        "attestation": {"provider": "auto", "enforcement_mode": "enforcing"},
        "policy_bundle_path": "./bundle/",
        "catalog_path": "./catalog.json",
        "listen_addr": f"127.0.0.1:{port}",
        "upstreams": [{"name": "demo", "url": upstream}],
        "identity": {"principal": PRINCIPAL},
        "audit": {"path": "./audit/", "fsync": "batch"},
        "claims": {"mode": "session", "dir": "./claims/"},
        "logging": {"format": "json", "level": "info"},
    }
    setup = GatewaySetup(root, port, merge(base, config))
    setup.write()
    return setup


class GatewayError(RuntimeError):
    """The gateway process exited or never became ready."""


class GatewayProcess:
    """``cmcp start`` on a :class:`GatewaySetup` (development mode unless ``env`` says)."""

    def __init__(self, setup: GatewaySetup, env: dict[str, str] | None = None) -> None:
        self.setup = setup
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CMCP_DEV_MODE": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.setup.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "cmcp"), "start", "--config", str(self.setup.config_path)],
                cwd=self.setup.root,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/readyz`` until it says ready; its body."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise GatewayError(f"cmcp start exited ({self.returncode()}): {self.log_tail()}")
            status, body = get_json(f"{self.setup.base}/readyz")
            if status == 200:
                return dict(body)
            last = body
            time.sleep(0.05)
        raise GatewayError(f"not ready after {timeout} s: {last}; {self.log_tail()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not end in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        """The structured (JSON) lines of the gateway's log."""
        out = []
        for line in self.setup.log_file.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
        return out

    def log_tail(self, lines: int = 15) -> str:
        if not self.setup.log_file.exists():
            return "(no log)"
        return "\n".join(self.setup.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON body) of a GET on loopback; (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")
    except (OSError, ValueError):
        return 0, None


def get_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The entries of an audit log (complete lines only)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line)["entry"] for line in data.split(b"\n") if line]


def call_tool(url: str, tool: str, arguments: dict[str, Any], request_id: int = 1) -> Any:
    """One stateless (2026-07-28) ``tools/call`` over HTTP: the JSON-RPC reply (JSON or SSE),
    or None when nothing answers (connection refused)."""
    from tests.mcp.peers import modern_headers, modern_request

    body = json.dumps(
        modern_request(request_id, "tools/call", {"name": tool, "arguments": arguments})
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers=modern_headers("tools/call", tool), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read().decode()
            content_type = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        text, content_type = exc.read().decode(), exc.headers.get("Content-Type", "")
    except OSError:
        return None
    if content_type.startswith("text/event-stream"):
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        return next((e for e in events if e.get("id") == request_id), None)
    return json.loads(text)


def upstream_requests(upstream: str) -> list[dict[str, Any]]:
    """Every request a ``--record`` SDK test server received (its /state)."""
    return list(get_json(upstream.replace("/mcp", "/state"))[1]["requests"])
