"""Secrets never leave the gateway: not in logs, metrics, claims, audit entries or exports.

A real ``cmcp start`` runs with a distinctive agent bearer token (``CMCP_BEARER_TOKEN``), a
distinctive named token (``auth.bearer_tokens``), distinctive upstream credentials
(``headers_from_file``) and debug logging; the agent makes allowed, denied, redacted, failing
and unauthorised calls whose arguments carry a distinctive secret value, a wrong token is
tried, and the credentials are reloaded (SIGHUP) from a broken file. Then every output is
searched for every secret: the gateway's log, ``/metrics``, ``/readyz``, ``/attestation``,
every claim file and ``/claims/{id}``, the audit log and ``/audit/export``. The upstream's
``header`` tool shows the credential did reach the upstream, so the search is not vacuous.

Also: bearer tokens are compared in constant time (the code uses ``hmac.compare_digest``
against every configured token, with no early exit).
"""

from __future__ import annotations

import ast
import inspect
import json
import secrets
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from cmcp_sidecar.server import security
from tests.mcp.peers import modern_headers, modern_request, sdk_server

from .harness import GatewayProcess, GatewaySetup, get_json, get_text, write_setup


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_secrets_appear_in_no_output(tmp_path: Path) -> None:
    mark = secrets.token_hex(6)
    agent_token = f"agent-token-{mark}"
    named_token = f"named-token-{mark}"
    upstream_key = f"upstream-key-{mark}"
    argument = f"secret-argument-{mark}"
    wrong_token = f"wrong-token-{mark}"
    needles = (agent_token, named_token, upstream_key, argument, wrong_token)
    (tmp_path / "named.token").write_text(named_token + "\n")
    headers_file = tmp_path / "upstream.headers"
    headers_file.write_text(f"X-Upstream-Key: {upstream_key}\n")
    with sdk_server() as upstream:
        setup = write_setup(
            tmp_path / "gw",
            upstream,
            upstreams=[{"name": "demo", "url": upstream, "headers_from_file": str(headers_file)}],
            auth={"bearer_tokens": [{"name": "named-agent", "token_file": "../named.token"}]},
            claims={"mode": "call"},
            logging={"format": "json", "level": "debug"},
        )
        env = {"CMCP_BEARER_TOKEN": agent_token}
        with GatewayProcess(setup, env=env) as gateway:
            gateway.wait_ready()
            outputs = _exercise(setup, (agent_token, named_token), argument, wrong_token)
            headers_file.write_text("this line is not a header: " + upstream_key + "\n")
            gateway.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            time.sleep(0.5)  # the broken file is refused (and must not be quoted)
            outputs["/metrics"] = get_text(f"{setup.base}/metrics")
            outputs["/readyz"] = json.dumps(get_json(f"{setup.base}/readyz")[1])
            outputs["/attestation"] = get_text(f"{setup.base}/attestation?nonce=AAAAAAAAAAAAAAAA")
        sources = {
            "gateway log": setup.log_file.read_text(),
            "audit log": setup.audit_log.read_text(),
            **{f"claim {p.name}": p.read_text() for p in setup.claims_dir.glob("*.json")},
            **outputs,
        }
    assert len([s for s in sources if s.startswith("claim ")]) >= 3, "no claims were written"
    assert (
        "refusing the new credentials" in sources["gateway log"]
        or "keeping the previous" in (sources["gateway log"])
    )
    leaks = [
        (name, needle) for name, text in sources.items() for needle in needles if needle in text
    ]
    assert leaks == [], leaks


def _exercise(
    setup: GatewaySetup, tokens: tuple[str, str], argument: str, wrong_token: str
) -> dict[str, str]:
    """Calls of every kind; returns the gateway outputs an auditor or operator can read."""
    base, url = setup.base, setup.url
    agent_token, named_token = tokens
    auth = {"Authorization": f"Bearer {agent_token}"}
    calls = [
        ("echo", {"text": argument}),  # allowed
        ("get_env", {"name": argument}),  # denied by policy
        ("lookup_customer", {"customer_id": argument}),  # redacted
        ("fail", {}),  # the tool fails
        ("send_email", {"to": argument, "body": argument}),
    ]
    sessions = set()
    for n, (tool, arguments) in enumerate(calls):
        for token in (agent_token, named_token):
            body = modern_request(n, "tools/call", {"name": tool, "arguments": arguments})
            headers = {**modern_headers("tools/call", tool), "Authorization": f"Bearer {token}"}
            status, _ = _post(url, body, headers)
            assert status == 200, (tool, status)
    proof = modern_request(
        99, "tools/call", {"name": "header", "arguments": {"name": "x-upstream-key"}}
    )
    status, text = _post(url, proof, {**modern_headers("tools/call", "header"), **auth})
    assert "upstream-key-" in text, "the upstream never received the credential"
    for bad in (wrong_token, f"{agent_token}x"):
        body = modern_request(7, "tools/call", {"name": "echo", "arguments": {"text": argument}})
        headers = {**modern_headers("tools/call", "echo"), "Authorization": f"Bearer {bad}"}
        assert _post(url, body, headers)[0] == 401
    request = urllib.request.Request(f"{base}/audit/export", headers=auth)
    with urllib.request.urlopen(request, timeout=30) as resp:
        exported = resp.read().decode()
    for line in exported.splitlines():
        session = json.loads(line)["entry"].get("session")
        if session:
            sessions.add(session)
    outputs = {"/audit/export": exported}
    for session in sorted(sessions):
        request = urllib.request.Request(f"{base}/claims/{session}", headers=auth)
        with urllib.request.urlopen(request, timeout=30) as resp:
            outputs[f"/claims/{session}"] = resp.read().decode()
    return outputs


def test_bearer_tokens_are_compared_in_constant_time() -> None:
    """Code-level: hmac.compare_digest against every token, no ``==`` on a token, no early
    exit from the loop (timing says nothing about which token nearly matched)."""
    tree = ast.parse(inspect.getsource(security.principal_for))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert len(calls) == 1
    [loop] = [node for node in ast.walk(tree) if isinstance(node, ast.For)]
    assert not any(isinstance(n, ast.Break | ast.Return) for n in ast.walk(loop))
    compared = {
        n.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and not isinstance(node.ops[0], ast.Is | ast.IsNot)
        for n in ast.walk(node)
        if isinstance(n, ast.Name)
    }
    assert not compared & {"token", "given", "presented"}, compared
    tokens = {"a" * 32: "one", "b" * 32: "two"}
    assert security.principal_for("Bearer " + "b" * 32, tokens, "-") == "two"
    assert security.principal_for("Bearer " + "b" * 31 + "a", tokens, "-") is None
