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
from tests.sidecar.test_enforce import BUNDLE, audit_entries, enforced, server_url  # noqa: F401

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


def test_verifier_rejects_a_malformed_shadow_member() -> None:
    from tests.verifier.claimfactory import make_claim

    def mutate(trace: dict[str, object], gw: dict[str, object]) -> None:
        gw["shadow"] = {"bundle_hash": "nope", "evaluated": 1, "disagreeing": 0}

    claim, _ = make_claim(mutate=mutate)
    report = verify_claim(json.dumps(claim).encode(), ClaimPolicy(allow_software=True))
    assert not report.verified
    assert any("gateway.shadow" in c.detail for c in report.failures)
