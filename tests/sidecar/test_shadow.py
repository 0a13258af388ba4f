"""Shadow evaluation of a candidate bundle: decisions stay the active bundle's, the
disagreements are counted per tool and outcome with audit references, in a verified claim
and in metrics. Real bundle, catalog, audit log, claims and SDK peers (see test_enforce)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from cmcp_verifier import audit as audit_format
from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim
from mcp import Client
from tests.mcp.peers import transport
from tests.sidecar.test_enforce import (  # noqa: F401
    BUNDLE,
    audit_entries,
    enforced,
    pin,
    server_url,
)

# The candidate: get_env becomes allowed, echo becomes forbidden; the rest as in demo.
CANDIDATE_POLICIES = (
    (BUNDLE / "policies.cedar")
    .read_text()
    .replace('resource == Tool::"get_env"', 'resource == Tool::"echo"')
)


def candidate(tmp_path: Path) -> Path:
    path = tmp_path / "candidate"
    shutil.copytree(BUNDLE, path)
    (path / "policies.cedar").write_text(CANDIDATE_POLICIES)
    return path


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
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url.removesuffix("/mcp") + "/metrics") as resp,
        ):
            metrics = await resp.text()
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
    policy = ClaimPolicy(
        approved_bundle_hashes=(gw["bundle"]["hash"],), allow_software=True, audit_log=exported
    )
    report = verify_claim(json.dumps(claim).encode(), policy)
    assert report.verified, report.failures
    assert 'cmcp_shadow_evaluations_total{agreement="disagree"} 3.0' in metrics


async def test_candidate_catalog_is_evaluated_in_shadow(server_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The candidate carries its own catalog: without ``echo`` (its guard would refuse it),
    with ``add`` (which the active catalog lacks), and ``lookup_customer`` unlabelled (its
    policy sees no pii). Same policies: every disagreement is the catalogs'. What the agent
    sees and gets stays the active bundle's and catalog's."""
    own = await pin(server_url, {}, drop=("echo",))
    (tmp_path / "candidate-catalog.json").write_text(json.dumps(own))
    config = {"shadow_bundle_path": str(BUNDLE), "shadow_catalog_path": "candidate-catalog.json"}
    async with enforced(server_url, tmp_path, drop=("add",), **config) as (server, enf):
        async with Client(transport(server.url), mode="legacy") as c:
            listed = {t.name for t in (await c.list_tools()).tools}
            assert "echo" in listed and "add" not in listed  # the active catalog filters
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
    assert set(rows) == {
        ("echo", "allow", "deny:catalog"),
        ("add", "deny:catalog", "allow"),
        ("lookup_customer", "redact", "allow"),
    }
    assert shadow["disagreeing"] == 3 and shadow["evaluated"] >= 4
    by_hash = {r.hash: r.entry for r in audit_format.read_log(exported)}
    for (tool, active, _), row in rows.items():
        [ref] = row["audit_refs"]
        assert by_hash[ref]["tool"] == tool
        assert by_hash[ref]["decision"] == active.partition(":")[0]
    policy = ClaimPolicy(
        approved_bundle_hashes=(claim["gateway"]["bundle"]["hash"],),
        allow_software=True,
        audit_log=exported,
    )
    report = verify_claim(json.dumps(claim).encode(), policy)
    assert report.verified, report.failures


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
        sid = next(iter(enf.issuer._closed_ids))
        claim = await enf.claim(sid)
    assert claim is not None
    shadow = claim["gateway"]["shadow"]
    assert (shadow["evaluated"], shadow["disagreeing"], shadow["disagreements"]) == (1, 0, [])


def test_verifier_rejects_a_malformed_shadow_member() -> None:
    from tests.verifier.claimfactory import make_claim

    def mutate(trace: dict[str, object], gw: dict[str, object]) -> None:
        gw["shadow"] = {"bundle_hash": "nope", "evaluated": 1, "disagreeing": 0}

    claim, _ = make_claim(mutate=mutate)
    report = verify_claim(json.dumps(claim).encode(), ClaimPolicy(allow_software=True))
    assert not report.verified
    assert any("gateway.shadow" in c.detail for c in report.failures)
