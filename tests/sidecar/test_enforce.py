"""The enforcement implementation behind the proxy: real bundle, catalog, audit log, claims and
(software) attestation, with the SDK client against the SDK test server.

The bundle is ``policies/demo``: everything allowed, ``get_env`` denied, SSNs redacted for
tools labelled ``pii`` (the catalog labels ``lookup_customer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from mcp.shared.exceptions import MCPError

from cmcp_sidecar.attest import select_provider
from cmcp_sidecar.config import LoadedConfig, UpstreamConfig, parse_config
from cmcp_sidecar.enforce import Enforcement
from cmcp_sidecar.mcp.client import ControlClient
from cmcp_sidecar.mcp.upstream import Upstream
from cmcp_sidecar.policy.catalog_guard import pin_catalog
from cmcp_sidecar.server.app import Server
from cmcp_verifier import audit as audit_format
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim
from mcp import Client
from tests.mcp.peers import (
    REPO,
    legacy_headers,
    legacy_session,
    modern_headers,
    modern_request,
    sdk_server,
    transport,
)

BUNDLE = REPO / "policies" / "demo"


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def live_tools(url: str) -> list[dict[str, Any]]:
    """The tools the MCP server at ``url`` lists now."""
    up = Upstream(0, UpstreamConfig(name="demo", url=url), {}, max_response_bytes=1 << 24)
    await up.start()
    try:
        async with ControlClient(up) as client:
            return await client.list_all("tools/list", "tools")
    finally:
        await up.close()


async def pin(url: str, labels: dict[str, list[str]], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    tools = [t for t in await live_tools(url) if t["name"] not in drop]
    return pin_catalog({"demo": tools}, {("demo", k): v for k, v in labels.items()})


@contextlib.asynccontextmanager
async def enforced(
    url: str,
    tmp_path: Path,
    *,
    mode: str = "enforcing",
    drop: tuple[str, ...] = (),
    bundle: Path = BUNDLE,
    labels: dict[str, list[str]] | None = None,
    catalog: dict[str, Any] | None = None,
    **extra: Any,
) -> AsyncIterator[tuple[Server, Enforcement]]:
    """The enforcement in front of ``url`` (upstream ``demo``) with its catalog pinned from
    the live tools (or ``catalog``) and ``extra`` config keys, served on a free port."""
    if catalog is None:
        catalog = await pin(
            url, labels if labels is not None else {"lookup_customer": ["pii"]}, drop
        )
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    data: dict[str, Any] = {
        "listen_addr": "127.0.0.1:0",
        "upstreams": [{"name": "demo", "url": url}],
        "policy_bundle_path": str(bundle),
        "catalog_path": "catalog.json",
        "attestation": {"enforcement_mode": mode},
        "identity": {"principal": "test/agent"},
        "audit": {"path": "audit", "fsync": "batch"},
        "claims": {"dir": "claims"},
        **extra,
    }
    loaded = LoadedConfig(parse_config(data), tmp_path, env={"CMCP_DEV_MODE": "1"})
    provider = await select_provider("auto", True)
    async with Enforcement.open(loaded, provider) as enforcement:
        server = Server(enforcement.gateway(), "127.0.0.1", 0)
        await server.start()
        try:
            yield server, enforcement
        finally:
            await server.stop()


def audit_entries(tmp_path: Path) -> list[dict[str, Any]]:
    data = (tmp_path / "audit" / "audit.log").read_bytes()
    return [json.loads(line)["entry"] for line in data.splitlines()]


async def test_allow_deny_redact_audit_and_a_verified_claim(
    server_url: str, tmp_path: Path
) -> None:
    async with enforced(server_url, tmp_path) as (server, enforcement):
        async with Client(transport(server.url), mode="legacy") as c:
            listed = {t.name for t in (await c.list_tools()).tools}
            assert {"echo", "get_env", "lookup_customer"} <= listed
            echoed = await c.call_tool("echo", {"text": "hi"})
            assert echoed.content[0].text == "hi"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as denied:
                await c.call_tool("get_env", {"name": "HOME"})
            assert denied.value.error.code == -32010
            assert denied.value.error.data["policies"] == ["deny-get-env"]
            record = await c.call_tool("lookup_customer", {"customer_id": "c-1"})
            assert record.structured_content is not None
            assert record.structured_content["ssn"] == "[REDACTED]"
            assert "078-05-1120" not in json.dumps(record.model_dump(mode="json"))
        sid = next(iter(enforcement.issuer._closed_ids))  # the DELETE closed the session
        claim = await enforcement.claim(sid)
        exported = await enforcement.audit_export(sid)
    assert claim is not None
    calls = [e for e in audit_entries(tmp_path) if e.get("kind") == "call"]
    assert [(e["tool"], e["decision"], e["forwarded"]) for e in calls] == [
        ("echo", "allow", True),
        ("get_env", "deny", False),
        ("lookup_customer", "redact", True),
    ]
    assert calls[1]["policies"] == ["deny-get-env"] and calls[2]["labels"] == ["pii"]
    assert all(e["bundle"] == enforcement.bundle.hash for e in calls)
    assert "078-05-1120" not in (tmp_path / "audit" / "audit.log").read_text()  # digests only
    policy = ClaimPolicy(
        approved_bundle_hashes=(enforcement.bundle.hash,), allow_software=True, audit_log=exported
    )
    report = verify_claim(json.dumps(claim).encode(), policy)
    assert report.verified, report.failures
    chain = audit_format.verify_chain(
        audit_format.read_log((tmp_path / "audit" / "audit.log").read_bytes())
    )
    assert chain.length == len(audit_entries(tmp_path))


async def test_catalog_hides_and_denies_unapproved_tools(server_url: str, tmp_path: Path) -> None:
    async with (
        enforced(server_url, tmp_path, drop=("send_email",)) as (server, _),
        Client(transport(server.url), mode="2026-07-28") as c,
    ):
        assert "send_email" not in {t.name for t in (await c.list_tools()).tools}
        with pytest.raises(MCPError) as denied:
            await c.call_tool("send_email", {"to": "x@example.com", "body": "hi"})
        assert denied.value.error.data["reason"] == "catalog", denied.value.error
    entries = audit_entries(tmp_path)
    assert any(e.get("tool") == "send_email" and e["forwarded"] is False for e in entries)


async def test_a_stateless_interval_lets_go_of_its_data_labels_when_it_ends(
    server_url: str, tmp_path: Path
) -> None:
    claims = {"dir": "claims", "interval_seconds": 1}
    async with enforced(server_url, tmp_path, claims=claims) as (server, enf):
        async with Client(transport(server.url), mode="2026-07-28") as c:
            await c.call_tool("lookup_customer", {"customer_id": "c-1"})  # labelled pii
        assert len(enf._sessions) == 1
        with anyio.fail_after(10):
            while enf._sessions:  # the interval's claim session ends on its own
                await asyncio.sleep(0.1)


async def test_advisory_mode_forwards_but_audits_the_deny(server_url: str, tmp_path: Path) -> None:
    async with (
        enforced(server_url, tmp_path, mode="advisory") as (server, _),
        Client(transport(server.url), mode="legacy") as c,
    ):
        assert not (await c.call_tool("get_env", {"name": "HOME"})).is_error
        record = await c.call_tool("lookup_customer", {"customer_id": "c-1"})
        assert record.structured_content["ssn"] == "078-05-1120"  # type: ignore[index]
    calls = [e for e in audit_entries(tmp_path) if e.get("kind") == "call"]
    assert [(e["decision"], e["forwarded"], e["mode"]) for e in calls] == [
        ("deny", True, "advisory"),
        ("redact", True, "advisory"),
    ]


async def test_refusals_are_audited_and_operational_endpoints(
    server_url: str, tmp_path: Path
) -> None:
    async with enforced(server_url, tmp_path) as (server, _), aiohttp.ClientSession() as http:
        base = server.url.removesuffix("/mcp")
        async with http.get(f"{base}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["checks"]["attestation"] == "ok"
        async with http.get(
            f"{base}/attestation", params={"nonce": "AAAAAAAAAAAAAAAAAAAAAA"}
        ) as resp:
            evidence = await resp.json()
            assert resp.status == 200 and evidence["platform"] == "software-only"
        batch = json.dumps(
            [modern_request(1, "tools/call", {"name": "echo", "arguments": {"text": "x"}})]
        )
        async with http.post(
            server.url, data=batch, headers=modern_headers("tools/call", "echo")
        ) as resp:
            assert resp.status == 400
        body = modern_request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        async with http.post(
            server.url, json=body, headers=modern_headers("tools/call", "echo")
        ) as resp:
            claim_session = resp.headers["Cmcp-Claim-Session"]
            assert claim_session.startswith("st-")
        async with http.post(f"{base}/sessions/{claim_session}/close") as resp:
            claim = await resp.json()
            assert resp.status == 200 and claim["gateway"]["session_id"] == claim_session
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    faults = [e for e in audit_entries(tmp_path) if e.get("kind") == "fault"]
    assert [f["error"] for f in faults] == ["jsonrpc.batch"]
    assert "cmcp_audit_entries_total" in text and "cmcp_claims_issued_total" in text
    on_loop = re.search(r'^cmcp_audit_syncs_total\{where="loop"\} (\d+)', text, re.M)
    assert on_loop is not None and float(on_loop[1]) > 0  # one call at a time: on the loop


async def test_flow_rule_across_a_session(server_url: str, tmp_path: Path) -> None:
    """policies/mnpi-flow: after an mnpi result, a communication tool is denied (same session)."""
    labels = {"lookup_customer": ["mnpi"], "send_email": ["communication"]}
    bundle = REPO / "policies" / "mnpi-flow"
    async with (
        enforced(server_url, tmp_path, bundle=bundle, labels=labels) as (server, _),
        Client(transport(server.url), mode="legacy") as c,
    ):
        assert not (await c.call_tool("send_email", {"to": "a@b.c", "body": "before"})).is_error
        await c.call_tool("lookup_customer", {"customer_id": "c-9"})
        with pytest.raises(MCPError) as denied:
            await c.call_tool("send_email", {"to": "a@b.c", "body": "after"})
        assert denied.value.error.data["policies"] == ["no-mnpi-to-communication"]


async def test_a_reply_the_agent_left_before_it_was_durable(
    server_url: str, tmp_path: Path
) -> None:
    """The agent goes away while its reply waits for the audit sync (held back by the group
    commit delay): the entry still becomes durable and is counted, and the session still
    remembers the labels of that result (the flow rule denies the next send)."""
    labels = {"lookup_customer": ["mnpi"], "send_email": ["communication"]}
    held = {"path": "audit", "fsync": "batch", "batch_max_delay_ms": 400}
    async with (
        enforced(
            server_url, tmp_path, bundle=REPO / "policies" / "mnpi-flow", labels=labels, audit=held
        ) as (server, _),
        aiohttp.ClientSession() as http,
    ):
        sid = await legacy_session(http, server.url)
        lookup = {"name": "lookup_customer", "arguments": {"customer_id": "c-9"}}
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": lookup}
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                server.url,
                json=call,
                headers=legacy_headers(sid),
                timeout=aiohttp.ClientTimeout(total=0.15),
            ) as resp:
                await resp.read()
        for _ in range(100):
            entries = [e for e in audit_entries(tmp_path) if e.get("tool") == "lookup_customer"]
            if entries:
                break
            await asyncio.sleep(0.05)
        assert len(entries) == 1 and entries[0]["forwarded"] is True
        assert entries[0]["result"].startswith("sha256:")
        email = {"name": "send_email", "arguments": {"to": "a@b.c", "body": "x"}}
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": email}
        async with http.post(server.url, json=call, headers=legacy_headers(sid)) as resp:
            answer = await resp.json(content_type=None)
        assert answer["error"]["data"]["policies"] == ["no-mnpi-to-communication"]
        async with http.get(server.url.removesuffix("/mcp") + "/metrics") as resp:
            counted = re.search(r"^cmcp_audit_entries_total (\S+)", await resp.text(), re.M)
        calls = [e for e in audit_entries(tmp_path) if e["kind"] != "lifecycle"]  # start: before
    assert counted is not None and float(counted[1]) == len(calls) == 3  # initialize, 2 calls


async def test_rug_pull_hides_and_denies_the_changed_tool(tmp_path: Path) -> None:
    """A definition that changes after pinning is withheld and refused once the upstream
    announces the change (notifications/tools/list_changed on the session's GET stream)."""
    with sdk_server() as url:
        async with (
            enforced(url, tmp_path) as (server, enforcement),
            Client(transport(server.url), mode="legacy") as c,
        ):
            assert (await c.call_tool("echo", {"text": "before"})).content[0].text == "before"  # type: ignore[union-attr]
            await c.call_tool("rug_pull", {})
            with anyio.fail_after(10):
                while enforcement.guard.is_callable("demo", "echo"):
                    await anyio.sleep(0.05)
            assert "echo" not in {t.name for t in (await c.list_tools()).tools}
            with pytest.raises(MCPError) as denied:
                await c.call_tool("echo", {"text": "after"})
            assert denied.value.error.data["reason"] == "catalog"
            assert any(
                d.name == "echo" and d.reason == "definition_changed"
                for d in enforcement.guard.drift()
            )


async def test_policy_reload_swaps_valid_bundles_and_keeps_the_last_good_one(
    server_url: str, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    async with (
        enforced(server_url, tmp_path, bundle=bundle) as (server, enforcement),
        Client(transport(server.url), mode="2026-07-28") as c,
    ):
        first = enforcement.bundle.hash
        with pytest.raises(MCPError):
            await c.call_tool("get_env", {"name": "HOME"})
        assert not await enforcement.reload()  # nothing changed
        (bundle / "policies.cedar").write_text(
            '@id("allow-all")\npermit(principal, action, resource);\n'
        )
        assert await enforcement.reload()
        assert enforcement.bundle.hash != first
        assert enforcement.attestor.current.bundle_hash == enforcement.bundle.hash  # re-attested
        assert not (await c.call_tool("get_env", {"name": "HOME"})).is_error
        (bundle / "policies.cedar").write_text("permit(principal, action, resource")  # broken
        assert not await enforcement.reload()
        assert not (await c.call_tool("get_env", {"name": "HOME"})).is_error  # the last good one
    events = [e["event"] for e in audit_entries(tmp_path) if e.get("kind") == "lifecycle"]
    assert events == ["start", "bundle_loaded", "bundle_rejected", "stop"]
