"""``make demo``: a dev-mode gateway in front of a real MCP server, a few decided calls, a
verified claim.

1. starts the Python SDK test server (tests/servers/sdk_server.py) on a loopback port;
2. pins its catalog with ``cmcp catalog pin`` and writes a config using the example bundle
   ``policies/demo`` (everything allowed, ``get_env`` denied, the SSN of ``lookup_customer``
   redacted);
3. starts ``cmcp start`` with ``CMCP_DEV_MODE=1`` (software attestation) and a bearer token;
4. drives an allowed, a denied and a redacted call with the official MCP Python SDK client;
5. closes the session (``POST /sessions/{id}/close``), saves the claim and the exported audit
   log, and verifies them with ``cmcp-verify claim --allow-software``.

Everything runs in a temporary directory; ``--keep DIR`` keeps it there instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.graceful import sigterm_as_interrupt

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "demo-token-" + os.urandom(8).hex()


def step(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def fail(text: str) -> None:
    print(f"\n\033[31mdemo failed: {text}\033[0m", file=sys.stderr)
    raise SystemExit(1)


def cli(tool: str, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one of the project's commands, printing its output indented."""
    done = subprocess.run(
        [str(BIN / tool), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if show:
        print("  " + (done.stdout + done.stderr).strip().replace("\n", "\n  "))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cmcp-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run(work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


async def run(work: Path) -> None:
    sys.path.insert(0, str(REPO))
    from cmcp_verifier.bundle import read_bundle_dir
    from tests.mcp.peers import free_port, sdk_server

    bundle = REPO / "policies" / "demo"
    if not (bundle / "manifest.json").is_file():
        fail(f"the example bundle {bundle} is missing (it ships with the policy engine)")
    stack = contextlib.ExitStack()
    try:
        step("starting a real MCP server (Python SDK) on loopback")
        upstream = stack.enter_context(sdk_server())
        print(f"  {upstream}")

        step("pinning its tool catalog: cmcp catalog pin")
        pinned = cli("cmcp", "catalog", "pin", "--upstream", upstream, "--name", "demo", show=False)
        if pinned.returncode != 0:
            fail(pinned.stderr.strip())
        catalog = json.loads(pinned.stdout)
        for tool in catalog["tools"]:
            if tool["name"] == "lookup_customer":
                tool["labels"] = ["pii"]
        (work / "catalog.json").write_text(json.dumps(catalog, indent=2))
        print(f"  {len(catalog['tools'])} tools approved with their definition hashes")

        gw_port = free_port()
        config = work / "cmcp-config.yaml"
        config.write_text(
            f"attestation: {{provider: auto, enforcement_mode: enforcing}}\n"
            f"policy_bundle_path: {bundle}\n"
            f"catalog_path: ./catalog.json\n"
            f'listen_addr: "127.0.0.1:{gw_port}"\n'
            f"upstreams:\n  - {{name: demo, url: '{upstream}'}}\n"
            f"identity: {{principal: demo/agent}}\n"
            f"audit: {{path: ./audit/, fsync: batch}}\n"
            f"claims: {{mode: session, dir: ./claims/}}\n"
        )
        step("checking the policy bundle: cmcp validate-bundle")
        bundle_hash = read_bundle_dir(bundle).hash  # in real life: the hash the reviewer approved
        checked = cli(
            "cmcp", "validate-bundle", "--bundle-path", str(bundle), "--expected-hash", bundle_hash
        )
        if checked.returncode != 0:
            fail("the demo bundle is invalid")

        step("validating the config: cmcp validate-config")
        checked = cli("cmcp", "validate-config", "--config", str(config))
        if checked.returncode != 0:
            fail("the generated config is invalid")

        step("starting the gateway in dev mode: CMCP_DEV_MODE=1 cmcp start")
        gw_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CMCP_DEV_MODE": "1",
            "CMCP_BEARER_TOKEN": TOKEN,
            "CMCP_LOG_FORMAT": "text",
        }
        log_file = stack.enter_context((work / "gateway.log").open("wb"))
        gateway = subprocess.Popen(
            [str(BIN / "cmcp"), "start", "--config", str(config)],
            cwd=work,
            env=gw_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop, gateway)
        base = f"http://127.0.0.1:{gw_port}"
        await wait_ready(base, gateway, work / "gateway.log")

        step("calling tools through the gateway with the official MCP Python SDK client")
        session_id = await drive(f"{base}/mcp")

        step(f"closing the session {session_id} and fetching its claim")
        claim_file, audit_file = await fetch_claim(base, session_id, work)

        step("verifying the claim offline: cmcp-verify claim --allow-software")
        verify = cli(
            "cmcp-verify",
            "claim",
            str(claim_file),
            "--allow-software",
            "--bundle-hash",
            bundle_hash,
            "--audit",
            str(audit_file),
        )
        if verify.returncode != 0:
            fail("the claim did not verify")
        print("\n\033[32mdemo complete: every call was decided, audited and covered by a")
        print("verified claim\033[0m")
    finally:
        stack.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: the gateway shuts down gracefully
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import aiohttp

    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                fail(
                    "the gateway did not start:\n  " + log.read_text().strip().replace("\n", "\n  ")
                )
            try:
                async with http.get(f"{base}/readyz") as resp:
                    body = await resp.json()
                    if resp.status == 200:
                        print(f"  ready: {json.dumps(body['checks'])}")
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    fail("the gateway did not become ready within 30 s")


async def drive(url: str) -> str:
    """Three calls through the gateway; the claim session the gateway named (response header)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp import Client

    claim_sessions: set[str] = set()

    async def remember(response: httpx2.Response) -> None:
        if "cmcp-claim-session" in response.headers:
            claim_sessions.add(response.headers["cmcp-claim-session"])

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=httpx2.Timeout(30),
        event_hooks={"response": [remember]},
    )
    transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
    async with http, Client(transport, mode="legacy") as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        print(f"  tools/list: {len(tools)} tools visible")
        await show("echo (allowed)", c.call_tool("echo", {"text": "hello through the gateway"}))
        await show("get_env (denied by policy)", c.call_tool("get_env", {"name": "HOME"}))
        await show(
            "lookup_customer (SSN redacted)",
            c.call_tool("lookup_customer", {"customer_id": "c-42"}),
        )
    if len(claim_sessions) != 1:
        fail(f"expected one claim session, saw {sorted(claim_sessions)}")
    return claim_sessions.pop()


async def show(label: str, call: Any) -> None:
    from mcp.shared.exceptions import MCPError

    try:
        result = await call
    except MCPError as exc:
        print(f"  {label:34s} → JSON-RPC error {exc.error.code}: {exc.error.message}")
        return
    text = " ".join(getattr(block, "text", "") for block in result.content)[:160]
    print(f"  {label:34s} → {'error' if result.is_error else 'ok'}: {text}")


async def fetch_claim(base: str, session_id: str, work: Path) -> tuple[Path, Path]:
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/sessions/{session_id}/close") as resp:
            if resp.status != 200:
                fail(f"closing the session: HTTP {resp.status} {await resp.text()}")
            claim = await resp.json()
        async with http.get(f"{base}/audit/export", params={"session_id": session_id}) as resp:
            audit_log = await resp.read()
    claim_file, audit_file = work / "claim.json", work / "audit-export.jsonl"
    claim_file.write_text(json.dumps(claim, indent=2))
    audit_file.write_bytes(audit_log)
    trace = claim.get("trace", {})
    print(
        f"  claim: {claim_file} ({trace.get('tool_transcript', {}).get('call_count', '?')} calls, "
        f"platform {trace.get('runtime', {}).get('platform', '?')})"
    )
    return claim_file, audit_file


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
