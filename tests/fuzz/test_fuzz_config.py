"""Fuzzing the gateway's config loader: any file, any structure, any credentials file.

Whatever a config file holds, ``load_config`` either returns a config whose derived values
(listen address, principal, allowed hosts, instance id) can be read, or raises ConfigError —
never another exception. ``parse_header_lines`` (credentials files) raises only ConfigError
and never quotes a header value in its message: those values are secrets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from cmcp_sidecar.config import load_config, parse_config, parse_header_lines
from cmcp_verifier.errors import ConfigError

from ._mutate import mutated
from ._settings import fuzz_settings

VALID = b"""\
attestation: {provider: auto, enforcement_mode: enforcing, validity_seconds: 60}
policy_bundle_path: ./bundle/
policy_bundle_expected_hash: sha256:0000000000000000000000000000000000000000000000000000000000000000
catalog_path: ./catalog.json
listen_addr: "127.0.0.1:8443"
upstreams:
  - {name: crm, url: 'https://crm.example/mcp', prefix: crm, timeouts: {body_seconds: 5}}
  - name: b
    url: http://[::1]:9/mcp
    tls: {ca_file: ca.pem}
identity: {principal: team/agent}
auth: {bearer_tokens: [{name: a, token_file: t}]}
audit: {path: ./audit/, fsync: batch, reserve_bytes: 0}
claims: {mode: interval, interval_seconds: 30, data_classes: [public, secret]}
allowed_hosts: ["gw:*"]
logging: {format: json}
"""
FILE = Path(tempfile.mkdtemp(prefix="cmcp-fuzz-config-")) / "cmcp.yaml"


def _load(data: bytes) -> None:
    FILE.write_bytes(data)
    try:
        loaded = load_config(FILE)
    except ConfigError as exc:
        assert exc.code.startswith("config.") and exc.message
        event(exc.code)
        return
    config = loaded.config
    assert config.listen_host and 0 <= config.listen_port <= 65535
    assert loaded.principal and loaded.allowed_hosts() and loaded.instance_id
    event("loaded")


@fuzz_settings
@given(mutated(VALID, max_ops=6))
def test_mutated_config_files_load_or_raise_config_errors(data: bytes) -> None:
    _load(data)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    ["attestation", "upstreams", "listen_addr", "audit", "claims", "auth", "identity",
     "policy_bundle_expected_hash", "max_sessions", "allowed_hosts", "logging", "x"]
)  # fmt: skip


@fuzz_settings
@given(st.dictionaries(_KEYS, _values, max_size=6), st.booleans())
def test_any_structure_is_a_config_or_a_config_error(data: dict[str, Any], upstream: bool) -> None:
    if upstream:
        data.setdefault("upstreams", [{"name": "a", "url": "http://127.0.0.1:1/mcp"}])
    try:
        parse_config(data)
    except ConfigError as exc:
        assert exc.code == "config.invalid"
        event("invalid")
        return
    event("valid")


_SECRET = st.text("abcXYZ019=/+-_.:é€\x7f", min_size=8, max_size=12)
_NAMES = st.sampled_from(["Authorization", "X-Api-Key", "Host", "Mcp-Param-X", "bad name", ""])
_SEPARATORS = st.sampled_from([": ", ":", " ", "=", ":\t"])


@fuzz_settings
@given(st.lists(st.tuples(_NAMES, _SEPARATORS, _SECRET), min_size=1, max_size=4), st.data())
def test_credential_files_never_leak_values(
    lines: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    text = "\n".join(f"{n}{sep}{v}" for n, sep, v in lines)
    if data.draw(st.booleans()):
        text = text.replace("\n", data.draw(st.sampled_from(["\r\n", "\n\n", "\n# c\n"])))
    try:
        headers = parse_header_lines(text, "upstreams[0].headers_from_file")
    except ConfigError as exc:
        assert exc.code == "config.secret"
        for _, _, secret in lines:
            assert secret not in exc.message, "a credential value appeared in an error"
        event("refused")
        return
    assert all(isinstance(v, str) for v in headers.values())
    event("parsed")
