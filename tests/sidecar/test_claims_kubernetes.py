"""The Kubernetes claim sink's names, objects and configuration (the API itself: e2e)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmcp_sidecar.claims.kubernetes import (
    KubernetesConfigMapSink,
    from_environment,
    label_value,
    object_name,
)
from cmcp_verifier.errors import CmcpError

LABEL_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ENV = {
    "CMCP_POD_NAME": "agent-7d9f-x2",
    "CMCP_POD_NAMESPACE": "agents",
    "CMCP_POD_UID": "0b1c",
    "CMCP_GATEWAY_NAME": "gw",
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
}


@given(st.text(min_size=1, max_size=300))
def test_label_values_are_valid_and_distinct(text: str) -> None:
    value = label_value(text)
    assert LABEL_RE.fullmatch(value) and len(value) <= 63
    if LABEL_RE.fullmatch(text) and len(text) <= 63:
        assert value == text  # valid values are kept as they are


@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,250}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,120}", fullmatch=True),
)
def test_object_names_are_deterministic_dns_names(pod: str, claim: str) -> None:
    name = object_name(pod, claim)
    assert len(name) <= 253 and name == object_name(pod, claim)
    assert SUBDOMAIN_RE.fullmatch(name), name


def test_environment_required(tmp_path: Path) -> None:
    for key in ENV:
        env = {k: v for k, v in ENV.items() if k != key}
        with pytest.raises(CmcpError) as err:
            from_environment(tmp_path, env)
        assert err.value.code == "claims.kubernetes_env" and key in err.value.message
    sink = from_environment(tmp_path, {**ENV, "CMCP_SERVICEACCOUNT_DIR": str(tmp_path)})
    assert sink.target.server == "https://10.96.0.1:443"
    assert sink.target.token_file == tmp_path / "token" and sink.target.ca_file is None


def test_configmap_object(tmp_path: Path) -> None:
    sink = from_environment(tmp_path, ENV)
    claim = json.dumps({"gateway": {"session_id": "Mcp-Session/ABC"}}).encode()
    cm = sink.configmap("mcp-session-abc-5", claim)
    meta = cm["metadata"]
    assert meta["name"] == "claim-agent-7d9f-x2-mcp-session-abc-5" and cm["immutable"] is True
    assert meta["namespace"] == "agents"
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "agent-7d9f-x2", "uid": "0b1c"}
    ]
    assert meta["labels"]["cmcp.dev/session"] == label_value("Mcp-Session/ABC")
    assert meta["annotations"]["cmcp.dev/session"] == "Mcp-Session/ABC"
    assert cm["data"]["claim.json"] == claim.decode()


async def test_local_copy_is_durable_when_the_api_is_unreachable(tmp_path: Path) -> None:
    """put() returns once the claim is on disk; publishing waits for the API (nothing listens
    on port 1, so every attempt fails and the claim stays pending)."""
    sink = from_environment(
        tmp_path / "claims",
        {
            **ENV,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": "1",
            "CMCP_SERVICEACCOUNT_DIR": str(tmp_path),
        },
    )
    (tmp_path / "token").write_text("t")
    await sink.put("s-1", b'{"gateway": {"session_id": "s"}}')
    assert await sink.get("s-1") == b'{"gateway": {"session_id": "s"}}'
    assert await sink.names() == ["s-1"]
    assert not await sink.flush(0.5)
    assert sink.stats.pending == 1 and sink.stats.failures >= 1
    await sink.aclose(timeout=0.1)
    again = KubernetesConfigMapSink(tmp_path / "claims", sink.target, sink.pod)
    assert await again.start() == 1  # found again after a restart
    await again.aclose(timeout=0.1)
