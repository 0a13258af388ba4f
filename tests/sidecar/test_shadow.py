"""Shadow evaluation of a candidate bundle: decisions and list pages stay the active
bundle's, the disagreements (calls, and list items the candidate would show differently) are
counted per tool or item and outcome with audit references, in a verified claim and in
metrics. Real bundle, catalog, audit log, claims and SDK peers (see test_enforce)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from cmcp_sidecar.enforce import empty_catalog
from cmcp_sidecar.policy.catalog_guard import CatalogGuard, pin_catalog
from cmcp_sidecar.policy.shadow import MAX_KEYS, ShadowEvaluator
from cmcp_verifier import audit as audit_format
from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.cedar_bundle import load_bundle
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim
from mcp import Client
from tests.mcp.peers import transport
from tests.mcp.test_several_upstreams import all_pages
from tests.sidecar.test_enforce import (  # noqa: F401
    BUNDLE,
    audit_entries,
    enforced,
    live_tools,
    pin,
    server_url,
)

# The candidate: get_env becomes allowed, echo becomes forbidden; the rest as in demo.
CANDIDATE_POLICIES = (
    (BUNDLE / "policies.cedar")
    .read_text()
    .replace('resource == Tool::"get_env"', 'resource == Tool::"echo"')
)
# A candidate that withholds a tool, a prompt and a resource from list pages.
HIDING_POLICIES = (BUNDLE / "policies.cedar").read_text() + (
    '\n@id("hide-echo")\n'
    'forbid(principal, action == Action::"list_tools", resource == Tool::"echo");\n'
    '@id("hide-greet")\n'
    'forbid(principal, action == Action::"list_prompts", resource == Prompt::"greet");\n'
    '@id("hide-greeting")\n'
    'forbid(principal, action == Action::"list_resources",\n'
    '       resource == Resource::"res://greeting");\n'
)


def candidate(tmp_path: Path, policies: str = CANDIDATE_POLICIES) -> Path:
    path = tmp_path / "candidate"
    shutil.copytree(BUNDLE, path)
    (path / "policies.cedar").write_text(policies)
    return path


def list_entries(exported: bytes, method: str) -> dict[str, dict[str, object]]:
    """The audit entries of ``method`` list operations in an exported chain, by hash."""
    return {
        r.hash: r.entry
        for r in audit_format.read_log(exported)
        if r.entry.get("kind") == "list" and r.entry.get("method") == method
    }


def assert_claim_verifies(claim: dict[str, Any], exported: bytes) -> None:
    """The claim verifies offline against its own bundle hash and the exported chain."""
    policy = ClaimPolicy(
        approved_bundle_hashes=(claim["gateway"]["bundle"]["hash"],),
        allow_software=True,
        audit_log=exported,
    )
    report = verify_claim(json.dumps(claim).encode(), policy)
    assert report.verified, report.failures


async def metrics_text(url: str) -> str:
    """The gateway's /metrics page (``url``: its /mcp endpoint)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(url.removesuffix("/mcp") + "/metrics") as resp,
    ):
        return await resp.text()


async def active_view(url: str, tmp_path: Path, **config: Any) -> dict[str, set[str]]:
    """What the agent is shown (tools, prompts, resources) by a gateway with ``config``."""
    tmp_path.mkdir()
    async with (
        enforced(url, tmp_path, **config) as (server, _),
        Client(transport(server.url), mode="legacy") as c,
    ):
        return {
            "tools": {t.name for t in (await c.list_tools()).tools},
            "prompts": {p.name for p in (await c.list_prompts()).prompts},
            "resources": {str(r.uri) for r in (await c.list_resources()).resources},
        }


async def test_candidate_is_evaluated_never_enforced(server_url: str, tmp_path: Path) -> None:  # noqa: F811
    cand = candidate(tmp_path)
    cand_hash = read_bundle_dir(cand).hash
    async with enforced(server_url, tmp_path, shadow_bundle_path=str(cand)) as (server, enf):
        async with Client(transport(server.url), mode="legacy") as c:
            assert (await c.call_tool("echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
            with pytest.raises(MCPError):  # still denied: the active bundle decides
                await c.call_tool("get_env", {"name": "HOME"})
            await c.call_tool("echo", {"text": "again"})
            await c.call_tool("lookup_customer", {"customer_id": "c-1"})  # both: redact
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
        exported = await enf.audit_export(sid)
        metrics = await metrics_text(server.url)
    assert claim is not None
    gw = claim["gateway"]
    assert gw["bundle"] == {"hash": read_bundle_dir(BUNDLE).hash, "candidate_hash": cand_hash}
    shadow = gw["shadow"]
    assert shadow["bundle_hash"] == cand_hash
    assert shadow["disagreeing"] == 3 and shadow["evaluated"] >= 4
    rows = {(d["tool"], d["active"], d["candidate"]): d for d in shadow["disagreements"]}
    assert set(rows) == {("echo", "allow", "deny"), ("get_env", "deny", "allow")}
    assert rows["echo", "allow", "deny"]["count"] == 2
    # Each audit reference is the hash of the call's entry in the exported chain.
    chain = audit_format.read_log(exported)
    by_hash = {r.hash: r.entry for r in chain}
    for (tool, active, _), row in rows.items():
        assert len(row["audit_refs"]) == row["count"]
        for ref in row["audit_refs"]:
            assert by_hash[ref]["tool"] == tool and by_hash[ref]["decision"] == active
    calls = [e for e in audit_entries(tmp_path) if e.get("kind") == "call"]
    assert [(e["tool"], e["decision"], e["forwarded"]) for e in calls] == [
        ("echo", "allow", True),
        ("get_env", "deny", False),
        ("echo", "allow", True),
        ("lookup_customer", "redact", True),
    ]
    assert_claim_verifies(claim, exported)
    assert 'cmcp_shadow_evaluations_total{agreement="disagree"} 3.0' in metrics


async def test_candidate_catalog_is_evaluated_in_shadow(server_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The candidate carries its own catalog: without ``echo`` (its guard would refuse it),
    with ``add`` (which the active catalog lacks), and ``lookup_customer`` unlabelled (its
    policy sees no pii). Same policies: every disagreement is the catalogs'. What the agent
    sees and gets stays the active bundle's and catalog's."""
    own = await pin(server_url, {}, drop=("echo",))
    (tmp_path / "candidate-catalog.json").write_text(json.dumps(own))
    config = {"shadow_bundle_path": str(BUNDLE), "shadow_catalog_path": "candidate-catalog.json"}
    alone = await active_view(server_url, tmp_path / "alone", drop=("add",))
    async with enforced(server_url, tmp_path, drop=("add",), **config) as (server, enf):
        async with Client(transport(server.url), mode="legacy") as c:
            listed = {t.name for t in (await c.list_tools()).tools}
            assert "echo" in listed and "add" not in listed  # the active catalog filters
            assert listed == alone["tools"]  # the candidate changes nothing the agent sees
            assert (await c.call_tool("echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as refused:  # not in the active catalog
                await c.call_tool("add", {"a": 1, "b": 2})
            assert refused.value.error.data["reason"] == "catalog"
            record = await c.call_tool("lookup_customer", {"customer_id": "c-1"})
            assert record.structured_content is not None
            assert record.structured_content["ssn"] == "[REDACTED]"  # the active labels
            with pytest.raises(MCPError):  # both deny by policy: no disagreement
                await c.call_tool("get_env", {"name": "HOME"})
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
        exported = await enf.audit_export(sid)
    assert claim is not None
    shadow = claim["gateway"]["shadow"]
    assert shadow["bundle_hash"] == read_bundle_dir(BUNDLE).hash
    rows = {(d["tool"], d["active"], d["candidate"]): d for d in shadow["disagreements"]}
    calls = {
        ("echo", "allow", "deny:catalog"),
        ("add", "deny:catalog", "allow"),
        ("lookup_customer", "redact", "allow"),
    }
    # The list page: the candidate's catalog would hide echo and show add.
    listed_rows = {
        ("tools/list:echo", "visible", "hidden:catalog"),
        ("tools/list:add", "hidden:catalog", "visible"),
    }
    assert set(rows) == calls | listed_rows
    # 4 calls and every tool of the page compared; 3 calls and 2 list items disagree.
    assert shadow["evaluated"] == 4 + len(listed) + 1
    assert shadow["disagreeing"] == 5
    by_hash = {r.hash: r.entry for r in audit_format.read_log(exported)}
    for tool, active, _ in calls:
        [ref] = rows[tool, active, _]["audit_refs"]
        assert by_hash[ref]["tool"] == tool
        assert by_hash[ref]["decision"] == active.partition(":")[0]
    [list_ref] = list_entries(exported, "tools/list")  # the list operation's own entry
    for key in listed_rows:
        assert rows[key]["count"] == 1 and rows[key]["audit_refs"] == [list_ref]
    assert_claim_verifies(claim, exported)


async def test_candidate_without_a_catalog_shares_the_active_one(
    server_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A call the active catalog refuses is compared too: the candidate, checked against
    the same catalog, refuses it the same way."""
    async with enforced(server_url, tmp_path, drop=("add",), shadow_bundle_path=str(BUNDLE)) as (
        server,
        enf,
    ):
        async with Client(transport(server.url), mode="legacy") as c:
            with pytest.raises(MCPError):
                await c.call_tool("add", {"a": 1, "b": 2})
            tools = {t.name for t in (await c.list_tools()).tools}
            prompts = (await c.list_prompts()).prompts
            resources = (await c.list_resources()).resources
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
        metrics = enf.shadow.totals() if enf.shadow is not None else None
    assert claim is not None
    assert "add" not in tools  # hidden by the shared catalog, for both bundles alike
    shadow = claim["gateway"]["shadow"]
    # The call, every listed item, and add on the upstream's page (hidden by both).
    compared = 1 + len(tools) + 1 + len(prompts) + len(resources)
    assert (shadow["evaluated"], shadow["disagreeing"], shadow["disagreements"]) == (
        compared,
        0,
        [],
    )
    assert metrics is not None and (metrics.evaluated, metrics.disagreeing) == (compared, 0)


async def test_candidate_policy_hiding_list_items(server_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The candidate's ``list_*`` policies would withhold a tool, a prompt and a resource:
    each shows as a list disagreement referring to its list operation's audit entry; the
    pages, the entries and the claim's decision counts are the active bundle's alone."""
    alone = await active_view(server_url, tmp_path / "alone")
    cand = candidate(tmp_path, HIDING_POLICIES)
    async with enforced(server_url, tmp_path, shadow_bundle_path=str(cand)) as (server, enf):
        async with Client(transport(server.url), mode="legacy") as c:
            seen = {
                "tools": {t.name for t in (await c.list_tools()).tools},
                "prompts": {p.name for p in (await c.list_prompts()).prompts},
                "resources": {str(r.uri) for r in (await c.list_resources()).resources},
            }
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
        exported = await enf.audit_export(sid)
        metrics = await metrics_text(server.url)
    assert seen == alone
    assert {"echo"} <= seen["tools"] and "greet" in seen["prompts"]
    assert "res://greeting" in seen["resources"]
    assert claim is not None
    shadow = claim["gateway"]["shadow"]
    rows = {(d["tool"], d["active"], d["candidate"]): d for d in shadow["disagreements"]}
    expected = {
        ("tools/list:echo", "tools/list"),
        ("prompts/list:greet", "prompts/list"),
        ("resources/list:res://greeting", "resources/list"),
    }
    assert set(rows) == {(key, "visible", "hidden") for key, _ in expected}
    for key, method in expected:
        [ref] = list_entries(exported, method)
        assert rows[key, "visible", "hidden"]["audit_refs"] == [ref]
    assert shadow["disagreeing"] == 3
    assert shadow["evaluated"] == sum(len(v) for v in seen.values())  # every item listed
    assert 'cmcp_shadow_evaluations_total{agreement="disagree"} 3.0' in metrics
    # The list operations are audited as without a candidate: allowed, forwarded.
    listings = [
        (e["method"], e["decision"], e["forwarded"])
        for e in audit_entries(tmp_path)
        if e.get("kind") == "list"
    ]
    assert listings == [
        (m, "allow", True) for m in ("tools/list", "prompts/list", "resources/list")
    ]
    assert_claim_verifies(claim, exported)


async def test_list_rows_of_several_upstreams_carry_the_names_the_agent_sees(
    server_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two upstreams (prefixes a and b) in front of the same server: the candidate hides
    only b's echo, and the row names it as the agent sees it."""
    tools = await live_tools(server_url)
    catalog = pin_catalog({"demo": tools, "other": tools})
    policies = (BUNDLE / "policies.cedar").read_text() + (
        'forbid(principal, action == Action::"list_tools", resource == Tool::"b.echo");\n'
    )
    cand = candidate(tmp_path, policies)
    upstreams = [
        {"name": "demo", "url": server_url, "prefix": "a"},
        {"name": "other", "url": server_url, "prefix": "b"},
    ]
    async with enforced(
        server_url, tmp_path, catalog=catalog, shadow_bundle_path=str(cand), upstreams=upstreams
    ) as (server, enf):
        async with Client(transport(server.url), mode="legacy") as c:
            seen = {t.name for t in await all_pages(c, "list_tools")}  # a page per upstream
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
    assert {"a.echo", "b.echo"} <= seen
    assert claim is not None
    rows = claim["gateway"]["shadow"]["disagreements"]
    assert [(r["tool"], r["active"], r["candidate"]) for r in rows] == [
        ("tools/list:b.echo", "visible", "hidden")
    ]


def test_list_rows_and_call_rows_have_separate_key_budgets() -> None:
    shadow = ShadowEvaluator(load_bundle(BUNDLE), CatalogGuard(empty_catalog()))
    extra = 6
    for n in range(MAX_KEYS + extra):
        shadow.record("s", f"tools/list:t{n}", "visible", "hidden", f"list-{n}")
    for n in range(MAX_KEYS + extra):
        shadow.record("s", f"t{n}", "allow", "deny", f"call-{n}")
    shadow.record("s", "t0", "allow", "deny", "call-again")  # a kept key goes on counting
    summary = shadow.summary("s")
    assert summary is not None
    rows = {row["tool"]: row for row in summary["disagreements"]}
    listed = [t for t in rows if t.startswith("tools/list:")]
    assert len(listed) == MAX_KEYS and len(rows) == 2 * MAX_KEYS
    assert rows["t0"]["count"] == 2 and rows["t0"]["audit_refs"] == ["call-0", "call-again"]
    assert f"t{MAX_KEYS}" not in rows and f"tools/list:t{MAX_KEYS}" not in rows


def test_verifier_rejects_a_malformed_shadow_member() -> None:
    from tests.verifier.claimfactory import make_claim

    def mutate(trace: dict[str, object], gw: dict[str, object]) -> None:
        gw["shadow"] = {"bundle_hash": "nope", "evaluated": 1, "disagreeing": 0}

    claim, _ = make_claim(mutate=mutate)
    report = verify_claim(json.dumps(claim).encode(), ClaimPolicy(allow_software=True))
    assert not report.verified
    assert any("gateway.shadow" in c.detail for c in report.failures)


async def test_candidate_without_a_catalog_promoted_by_the_operator(
    server_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``shadow_catalog_fallback: empty`` (the operator's rendering of a candidate bundle
    without a catalog): promoted, it would approve no tool, so every listed tool shows as
    hidden by the catalog and a call as ``deny:catalog``; the agent still sees the active
    catalog's tools."""
    config = {"shadow_bundle_path": str(BUNDLE), "shadow_catalog_fallback": "empty"}
    async with enforced(server_url, tmp_path, **config) as (server, enf):
        async with Client(transport(server.url), mode="2026-07-28") as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert (await c.call_tool("echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
        [sid] = enf.issuer.open_sessions()
        claim = await enf.claim(sid)
    assert claim is not None and {"echo", "add", "lookup_customer"} <= tools
    shadow = claim["gateway"]["shadow"]
    rows = {(d["tool"], d["active"], d["candidate"]) for d in shadow["disagreements"]}
    assert rows == {(f"tools/list:{t}", "visible", "hidden:catalog") for t in tools} | {
        ("echo", "allow", "deny:catalog")
    }
    assert shadow["evaluated"] == shadow["disagreeing"] == len(tools) + 1
