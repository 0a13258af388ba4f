"""Fail closed: in enforcing mode no call is forwarded when the gateway cannot vouch for it, and
the reason shows in /readyz (JSON), the log (a structured line) and /metrics.

The upstream is the SDK test server with ``--record``: it lists every request it received, so
"not forwarded" is what the upstream saw, not what the gateway says. Every call carries a
unique marker argument.

* **Refused start** (a real ``cmcp start``): invalid bundle, bundle hash differing from the
  pinned ``policy_bundle_expected_hash``, failed attestation (a pinned measurement the platform
  does not have), read-only audit storage. The process exits 1 with ``error[<code>]`` and a JSON
  line ``event: start_refused, reason: <code>``; nothing listens, so /readyz and /metrics are
  not served — the refused start *is* the fail-closed state (in a pod, the sidecar's startup
  probe never passes and the agent container never starts).
* **While running** (a real ``cmcp start``): audit storage full (tmpfs), shut down after an
  I/O error (ext4, EIO) or made immutable (ext4, EPERM); a policy whose evaluation errors.
* **Attestation going stale** (a real ``cmcp start`` with the TPM provider on swtpm): the TPM
  stops answering (SIGSTOP) and the short-lived evidence expires.
* **While running, in-process** (the fault needs a provider that misbehaves on cue, which no
  real provider does on demand; the double wraps the real software provider and says so):
  evidence that no longer binds the gateway's signing key ("verifier key mismatch", see
  docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmcp_sidecar.attest import AttestationError, AttestationProvider, Evidence, Probe
from cmcp_sidecar.attest.identity import SigningIdentity
from cmcp_sidecar.attest.software import SoftwareProvider
from cmcp_sidecar.audit import json_digest
from cmcp_sidecar.config import LoadedConfig, parse_config
from cmcp_sidecar.enforce import Enforcement
from cmcp_sidecar.server.app import Server
from cmcp_verifier.binding import binding_digest
from cmcp_verifier.digests import sha256_digest
from tests.mcp.peers import sdk_server

from . import storage
from .harness import (
    GatewayProcess,
    GatewaySetup,
    audit_records,
    call_tool,
    get_json,
    get_text,
    pin_catalog,
    upstream_requests,
    write_setup,
)

GATEWAY_NOT_READY, POLICY_DENIED = -32014, -32010
ZERO = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    with sdk_server("--record") as url:
        yield url, pin_catalog(url, labels={"lookup_customer": ["pii"]})


def forwarded(upstream: str, marker: str) -> list[dict[str, Any]]:
    """tools/call requests the upstream received that carry ``marker``."""
    return [
        r
        for r in upstream_requests(upstream)
        if r["method"] == "tools/call" and marker in json.dumps(r["arguments"])
    ]


def setup_for(tmp_path: Path, upstream: tuple[str, Any], **config: Any) -> GatewaySetup:
    return write_setup(tmp_path, upstream[0], catalog=upstream[1], **config)


def assert_visible(setup: GatewaySetup, gateway: GatewayProcess | None, reason: str) -> None:
    """The reason in /readyz (503, JSON), /metrics and, for a process, its structured log."""
    status, body = get_json(f"{setup.base}/readyz")
    assert status == 503 and body["ready"] is False, body
    assert reason in body["reasons"], body
    assert any(v.startswith(f"{reason}: ") for v in body["checks"].values()), body
    assert body["refused"].get(reason, 0) >= 1, body
    metrics = get_text(f"{setup.base}/metrics")
    assert "cmcp_ready 0.0" in metrics
    assert f'cmcp_not_ready_reason{{reason="{reason}"}} 1.0' in metrics
    assert f'cmcp_fail_closed_total{{reason="{reason}"}}' in metrics
    if gateway is not None:
        assert any(
            line.get("event") == "fail_closed" and line.get("reason") == reason
            for line in gateway.log_lines()
        ), gateway.log_tail()


def refused_with(reply: Any, code: int, reason: str) -> bool:
    error = (reply or {}).get("error") or {}
    return error.get("code") == code and error.get("data", {}).get("cmcp_code") == reason


# -- refused start ----------------------------------------------------------------------------


def _break_bundle(setup: GatewaySetup) -> None:
    (setup.root / "bundle" / "policies.cedar").write_text(
        "permit(principal, action, resource);\n"
        'forbid(principal, action == Action::"call_tool", resource == Tol::"x");\n'
    )


@contextlib.contextmanager
def _read_only_audit(setup: GatewaySetup) -> Iterator[None]:
    with storage.tmpfs(setup.root / "audit", "1m") as mnt:
        done = storage._run("mount", "-o", "remount,ro", str(mnt))
        assert done.returncode == 0, done.stderr
        yield


START_CASES = {
    "invalid_bundle": ({}, "bundle.", _break_bundle),
    "bundle_hash_mismatch": ({"policy_bundle_expected_hash": ZERO}, "bundle.hash_mismatch", None),
    "attestation_failed": (
        {"attestation": {"expected_measurement": ZERO}},
        "attestation.measurement_mismatch",
        None,
    ),
    "audit_read_only": ({}, "audit.read_only", "read_only"),
}


@pytest.mark.parametrize("case", sorted(START_CASES))
def test_refused_start(tmp_path: Path, upstream: tuple[str, Any], case: str) -> None:
    config, reason, prepare = START_CASES[case]
    setup = setup_for(tmp_path, upstream, **config)
    seen_before = len(upstream_requests(upstream[0]))
    with contextlib.ExitStack() as stack:
        if prepare == "read_only":
            stack.enter_context(_read_only_audit(setup))
        elif prepare is not None:
            prepare(setup)
        gateway = GatewayProcess(setup).start()
        assert gateway.wait_exit(60) == 1, gateway.log_tail()
    text = setup.log_file.read_text()
    assert f"error[{reason}" in text, text
    assert any(
        line.get("event") == "start_refused" and line["reason"].startswith(reason)
        for line in gateway.log_lines()
    ), text
    assert call_tool(setup.url, "echo", {"text": f"fc-{case}"}) is None  # nothing listens
    assert len(upstream_requests(upstream[0])) == seen_before  # the upstream saw nothing


# -- while running: audit storage --------------------------------------------------------------


def test_audit_disk_full(tmp_path: Path, upstream: tuple[str, Any]) -> None:
    """A full volume is seen when the space reserved ahead of the log cannot be renewed: new
    calls are refused while those already forwarded still have room for their entries; freeing
    space lets calls through again."""
    setup = setup_for(tmp_path, upstream, audit={"reserve_bytes": 32768})
    url = upstream[0]
    with storage.tmpfs(setup.root / "audit", "4m") as mnt, GatewayProcess(setup) as gateway:
        gateway.wait_ready()
        assert "result" in call_tool(setup.url, "echo", {"text": "fc-full-before"})
        filler = storage.fill(mnt)
        replies = []
        for n in range(400):  # the reserve holds some entries, then renewal fails
            reply = call_tool(setup.url, "echo", {"text": f"fc-full-n{n}"}, n)
            replies.append(reply)
            if "error" in reply:
                break
        assert refused_with(replies[-1], GATEWAY_NOT_READY, "audit.disk_full"), replies[-1]
        first_refused = len(replies) - 1
        for n in range(first_refused + 1, first_refused + 5):  # and so are later ones
            reply = call_tool(setup.url, "echo", {"text": f"fc-full-n{n}"}, n)
            assert refused_with(reply, GATEWAY_NOT_READY, "audit.disk_full"), reply
        assert_visible(setup, gateway, "audit.disk_full")
        sent = {r["arguments"]["text"] for r in forwarded(url, "fc-full-n")}
        assert sent == {f"fc-full-n{n}" for n in range(first_refused)}, "refused calls went out"
        audited = {e.get("arguments") for e in audit_records(setup.audit_log)}
        assert all(json_digest({"text": t}) in audited for t in sent), "forwarded but unaudited"
        filler.unlink()  # space again: the writer renews its reserve and calls flow
        deadline = time.monotonic() + 10
        while get_json(f"{setup.base}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "result" in call_tool(setup.url, "echo", {"text": "fc-full-after"})
        assert any(line.get("event") == "recovered" for line in gateway.log_lines())


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("shutdown", "audit.io_error"), ("immutable", "audit.permission_denied")],
)
def test_audit_storage_fails_while_running(
    tmp_path: Path, upstream: tuple[str, Any], fault: str, reason: str
) -> None:
    """ext4 shut down (EIO) or the log made immutable (EPERM): the very next call is refused
    before it is forwarded (a zero-byte write probes the file system's write checks)."""
    setup = setup_for(tmp_path, upstream)
    url = upstream[0]
    with storage.ext4_volume(setup.root / "audit") as mnt, GatewayProcess(setup) as gateway:
        gateway.wait_ready()
        assert "result" in call_tool(setup.url, "echo", {"text": f"fc-{fault}-before"})
        if fault == "shutdown":
            storage.shutdown(mnt)
        else:
            storage.set_immutable(setup.audit_log, True)
        try:
            for n in range(3):
                reply = call_tool(setup.url, "echo", {"text": f"fc-{fault}-after-{n}"}, n)
                assert refused_with(reply, GATEWAY_NOT_READY, reason), reply
            assert forwarded(url, f"fc-{fault}-after") == []
            assert_visible(setup, gateway, reason)
        finally:
            gateway.stop()
            if fault == "immutable":
                storage.set_immutable(setup.audit_log, False)


def test_frozen_audit_storage_holds_calls_until_it_thaws(
    tmp_path: Path, upstream: tuple[str, Any]
) -> None:
    """A volume that hangs instead of failing (fsfreeze): the next call is held before it is
    forwarded (the zero-byte write check waits on the frozen file system), and so is the whole
    event loop — /healthz stops answering, so the kubelet's probes take the pod out of
    service; past the stall threshold (5 s) the watchdog logs where the loop is held and why.
    Once the volume thaws the held call goes out, is audited and answered."""
    setup = setup_for(tmp_path, upstream)
    url = upstream[0]
    with storage.ext4_volume(setup.root / "audit") as mnt, GatewayProcess(setup) as gateway:
        gateway.wait_ready()
        assert "result" in call_tool(setup.url, "echo", {"text": "fc-frozen-before"})
        pool = concurrent.futures.ThreadPoolExecutor(1)
        with storage.frozen(mnt):
            held = pool.submit(call_tool, setup.url, "echo", {"text": "fc-frozen-held"})
            time.sleep(1.0)
            assert not held.done()
            assert get_json(f"{setup.base}/healthz", timeout=1.0) == (0, None)
            assert forwarded(url, "fc-frozen-held") == []
            stalled = wait_log(gateway, "loop_stalled", timeout=15)
        reply = held.result(timeout=30)  # thawed at the end of the block
        assert stalled["where"].startswith("check_writable (cmcp_sidecar/audit/log.py:")
        assert "audit volume does not answer" in stalled["hint"]
        assert wait_log(gateway, "loop_recovered", timeout=5)["held_s"] >= 5
        pool.shutdown()
        assert "result" in reply, reply
        assert get_json(f"{setup.base}/healthz")[0] == 200
        assert [r["arguments"]["text"] for r in forwarded(url, "fc-frozen-held")] == [
            "fc-frozen-held"
        ]
        audited = {e.get("arguments") for e in audit_records(setup.audit_log)}
        assert json_digest({"text": "fc-frozen-held"}) in audited
        assert "cmcp_event_loop_stalls_total 1.0" in get_text(f"{setup.base}/metrics")


def wait_log(gateway: GatewayProcess, event: str, timeout: float) -> dict[str, Any]:
    """The gateway's first structured log line with ``event``, awaited."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in gateway.log_lines() if line.get("event") == event]
        if lines:
            return lines[0]
        assert time.monotonic() < deadline, f"no {event} in the gateway's log: {gateway.log_tail()}"
        time.sleep(0.2)


# -- while running: policy evaluation error -----------------------------------------------------


def test_policy_evaluation_error(tmp_path: Path, upstream: tuple[str, Any]) -> None:
    """A forbid that cannot be evaluated (a string where the schema says Long) denies: Cedar
    alone would skip the failing policy and allow. The gateway stays ready (other calls pass);
    /readyz and /metrics count the refusals."""
    setup = setup_for(tmp_path, upstream)
    bundle = setup.root / "bundle"
    schema = (bundle / "schema.cedarschema").read_text()
    (bundle / "schema.cedarschema").write_text(
        schema.replace("type Arguments = {\n", "type Arguments = {\n  text?: Long,\n", 1)
    )
    (bundle / "policies.cedar").write_text(
        '@id("allow-all")\npermit(principal, action, resource);\n'
        '@id("broken")\nforbid(principal, action == Action::"call_tool", resource)\n'
        "  when { context.arguments has text && context.arguments.text > 100 };\n"
    )
    with GatewayProcess(setup) as gateway:
        gateway.wait_ready()
        reply = call_tool(setup.url, "echo", {"text": "fc-policy-error"})
        assert refused_with(reply, POLICY_DENIED, "policy.error"), reply
        assert reply["error"]["data"]["reason"] == "error"
        assert reply["error"]["data"]["policies"] == ["broken"]
        assert "result" in call_tool(setup.url, "lookup_customer", {"customer_id": "fc-ok"})
        assert forwarded(upstream[0], "fc-policy-error") == []
        status, body = get_json(f"{setup.base}/readyz")
        assert status == 200 and body["refused"] == {"policy.error": 1}, body
        assert 'cmcp_fail_closed_total{reason="policy.error"} 1.0' in get_text(
            f"{setup.base}/metrics"
        )
        decisions = [line for line in gateway.log_lines() if line.get("logger") == "cmcp.decision"]
        assert any(d["reason"] == "error" and d["decision"] == "deny" for d in decisions)
    [entry] = [e for e in audit_records(setup.audit_log) if e.get("tool") == "echo"]
    assert (entry["decision"], entry["forwarded"], entry["error"]) == (
        "error",
        False,
        "policy.error",
    )


# -- while running, in-process: attestation ---------------------------------------------------


class MisbehavingProvider(AttestationProvider):
    """The software provider with a fault switched on at will (a test double: no real
    provider stops answering or rebinds on cue). ``hang``: collections never return (a TEE
    device or attestation agent that stopped answering); ``rebind``: the evidence carries
    another key's binding digest (an agent serving a report made for someone else)."""

    name = "software"
    evidence_type = "software"
    platform = "software-only"

    def __init__(self, fault: str | None = None) -> None:
        self.inner = SoftwareProvider(dev_mode=True)
        self.fault = fault
        self.collections = 0

    async def probe(self) -> Probe:
        return await self.inner.probe()

    async def collect(self, report_data: bytes) -> Evidence:
        self.collections += 1
        if self.fault == "rebind":
            other = SigningIdentity.generate().thumbprint
            report_data = binding_digest(other, sha256_digest(b"b"), sha256_digest(b"c"), b"")
        return await self.inner.collect(report_data)


@contextlib.asynccontextmanager
async def in_process(
    setup: GatewaySetup, provider: AttestationProvider
) -> AsyncIterator[Enforcement]:
    data = yaml.safe_load(setup.config_path.read_text())
    loaded = LoadedConfig(parse_config(data), setup.root, env={"CMCP_DEV_MODE": "1"})
    async with Enforcement.open(loaded, provider) as enforcement:
        server = Server(enforcement.gateway(), "127.0.0.1", setup.port)
        await server.start()
        try:
            yield enforcement
        finally:
            await server.stop()


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(
        getattr(r, "event", None) == "fail_closed" and getattr(r, "reason", None) == reason
        for r in caplog.records
    )


@pytest.mark.tpm
def test_attestation_stale_when_the_tpm_stops_answering(
    tmp_path: Path, upstream: tuple[str, Any]
) -> None:
    """A real ``cmcp start`` with the TPM provider on a real swtpm (AK certified by a test
    CA), evidence valid for 2 s; then the TPM is frozen (SIGSTOP): collections hang, the
    evidence goes stale, nothing is forwarded."""
    from tests.sidecar.attestkit import AkCa, ak_pem
    from tests.tpm_fixtures import running_swtpm

    with running_swtpm(tmp_path / "swtpm", pcr_banks="sha256", ek_cert=True) as tpm:
        cert = AkCa(tmp_path / "roots").issue(ak_pem(tpm), tmp_path / "ak.pem")
        attestation = {"provider": "tpm", "validity_seconds": 2}
        attestation["tpm"] = {"tcti": tpm.tcti, "ak_cert": str(cert)}
        setup = setup_for(tmp_path / "gw", upstream, attestation=attestation)
        with GatewayProcess(setup, env={"CMCP_DEV_MODE": "0"}) as gateway:
            gateway.wait_ready()
            assert "result" in call_tool(setup.url, "echo", {"text": "fc-stale-before"})
            os.kill(tpm.pid, signal.SIGSTOP)
            try:
                deadline, n = time.monotonic() + 15, 0
                while time.monotonic() < deadline:  # fresh until the evidence expires
                    n += 1
                    reply = call_tool(setup.url, "echo", {"text": f"fc-stale-{n}-"}, n)
                    if "error" in reply:
                        break
                    time.sleep(0.2)
                assert refused_with(reply, GATEWAY_NOT_READY, "attestation.stale"), reply
                for _ in range(3):
                    reply = call_tool(setup.url, "echo", {"text": "fc-stale-after"}, 99)
                    assert refused_with(reply, GATEWAY_NOT_READY, "attestation.stale"), reply
                assert forwarded(upstream[0], f"fc-stale-{n}-") == []
                assert forwarded(upstream[0], "fc-stale-after") == []
                assert_visible(setup, gateway, "attestation.stale")
            finally:
                os.kill(tpm.pid, signal.SIGCONT)
                gateway.stop()


async def test_evidence_that_no_longer_binds_the_signing_key(
    tmp_path: Path, upstream: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh returns evidence for another key: forwarding stops at once (the old
    evidence is still within its validity) and stays stopped."""
    caplog.set_level(logging.INFO)
    setup = setup_for(tmp_path, upstream, attestation={"validity_seconds": 6})
    provider = MisbehavingProvider()
    async with in_process(setup, provider) as enforcement:
        ok = await asyncio.to_thread(call_tool, setup.url, "echo", {"text": "fc-rebind-before"})
        assert "result" in ok
        provider.fault = "rebind"
        await _until(lambda: enforcement.attestor.integrity_error is not None)
        assert enforcement.attestor.fresh  # not staleness: the mismatch alone stops forwarding
        reply = await asyncio.to_thread(call_tool, setup.url, "echo", {"text": "fc-rebind-after"})
        assert refused_with(reply, GATEWAY_NOT_READY, "attestation.binding_mismatch"), reply
        await asyncio.to_thread(assert_visible, setup, None, "attestation.binding_mismatch")
        provider.fault = None  # good evidence again does not lift the latch
        await asyncio.sleep(3.5)
        reply = await asyncio.to_thread(call_tool, setup.url, "echo", {"text": "fc-rebind-later"})
        assert refused_with(reply, GATEWAY_NOT_READY, "attestation.binding_mismatch"), reply
    assert forwarded(upstream[0], "fc-rebind-") == [
        r for r in forwarded(upstream[0], "fc-rebind-before")
    ]
    assert _logged(caplog, "attestation.binding_mismatch")


async def test_evidence_for_another_key_at_start(tmp_path: Path, upstream: tuple[str, Any]) -> None:
    setup = setup_for(tmp_path, upstream)
    seen_before = len(upstream_requests(upstream[0]))
    with pytest.raises(AttestationError) as refused:
        async with in_process(setup, MisbehavingProvider("rebind")):
            pytest.fail("the gateway started on evidence that does not bind its key")
    assert refused.value.code == "attestation.binding_mismatch"
    assert len(upstream_requests(upstream[0])) == seen_before
