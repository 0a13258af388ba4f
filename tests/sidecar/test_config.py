"""The config file: every error names its key path; paths resolve against the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cmcp_sidecar.config import LoadedConfig, load_config, parse_config, parse_header_lines
from cmcp_verifier.errors import ConfigError

UP = {"name": "crm", "url": "http://127.0.0.1:9/mcp"}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cfg.yaml")
    return info.value.message


def test_defaults_are_the_briefs() -> None:
    c = parse_config({"upstreams": [UP]})
    assert c.listen_addr == "127.0.0.1:8443"
    assert c.max_response_size_bytes == 2 * 1024 * 1024
    assert c.attestation.enforcement_mode == "enforcing"
    assert c.attestation.staleness_policy == "fail_closed"
    assert c.attestation.validity_seconds == 86400
    assert (c.audit.fsync, c.claims.mode, c.claims.interval_seconds) == ("batch", "session", 300)
    assert c.policy_reload_interval_seconds == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"upstreams": [UP, {"name": "b", "url": "ftp://x/mcp"}]},
            "cfg.yaml: upstreams[1].url: must be http(s)",
        ),
        ({"upstreams": [UP], "upsteams": []}, "cfg.yaml: upsteams: unknown key"),
        ({}, "cfg.yaml: upstreams: is required"),
        ({"upstreams": []}, "cfg.yaml: upstreams: list should have at least 1 item"),
        ({"upstreams": [UP, dict(UP)]}, "upstreams[1].name: 'crm' is already upstreams[0]'s"),
        (
            {
                "upstreams": [
                    {**UP, "prefix": "x"},
                    {"name": "b", "url": "http://h/mcp", "prefix": "x"},
                ]
            },
            "upstreams[1].prefix: 'x' collides with upstreams[0]",
        ),
        ({"upstreams": [UP], "listen_addr": 8443}, "listen_addr: input should be a valid string"),
        ({"upstreams": [UP], "listen_addr": "8443"}, "listen_addr: must be host:port"),
        (
            {"upstreams": [UP], "attestation": {"provider": "opaque"}},
            "attestation.provider: must be one of",
        ),
        (
            {"upstreams": [UP], "attestation": {"enforcement_mode": "strict"}},
            "attestation.enforcement_mode:",
        ),
        (
            {"upstreams": [UP], "claims": {"mode": "session", "interval_seconds": 0}},
            "claims.interval_seconds:",
        ),
        (
            {"upstreams": [{**UP, "url": "http://user:pw@h/mcp"}]},
            "upstreams[0].url: must not carry credentials",
        ),
        ({"upstreams": [{**UP, "prefix": "a.b"}]}, "upstreams[0].prefix: must be letters"),
        ({"upstreams": [{**UP, "name": "Bad Name"}]}, "upstreams[0].name: must be a lowercase"),
        (
            {"upstreams": [{**UP, "tls": {"insecure": True}}]},
            "upstreams[0].tls.insecure: unknown key",
        ),
        (
            {"upstreams": [UP], "max_response_size_bytes": "2MB"},
            "max_response_size_bytes: input should be",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    assert message in error_of(data)


def test_seed_provider_name_is_accepted() -> None:
    assert parse_config(
        {"upstreams": [UP], "attestation": {"provider": "software-only"}}
    ).attestation.provider == ("software")


def test_load_resolves_paths_and_reads_secrets(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "crm").write_text(
        "# credentials\nAuthorization: Bearer s3cret\nX-Tenant: acme\n"
    )
    (tmp_path / "agent.token").write_text("tok-1\n")
    cfg = tmp_path / "cmcp.yaml"
    cfg.write_text(
        "upstreams:\n"
        "  - name: crm\n"
        "    url: https://crm.example/mcp\n"
        "    headers_from_file: secrets/crm\n"
        "auth:\n"
        "  bearer_tokens: [{name: research-agent, token_file: agent.token}]\n"
        "audit: {path: ./audit/, fsync: every}\n"
    )
    loaded = load_config(cfg)
    assert loaded.path(loaded.config.audit.path) == tmp_path / "audit"
    assert loaded.upstream_headers(0) == {"Authorization": "Bearer s3cret", "X-Tenant": "acme"}
    env = LoadedConfig(loaded.config, loaded.base_dir, env={"CMCP_BEARER_TOKEN": "tok-env"})
    assert env.bearer_tokens() == {"tok-env": "standalone", "tok-1": "research-agent"}
    assert LoadedConfig(loaded.config, loaded.base_dir, env={"CMCP_DEV_MODE": "1"}).dev_mode
    assert not LoadedConfig(loaded.config, loaded.base_dir, env={"CMCP_DEV_MODE": "true"}).dev_mode


def test_tpm_tcti_env_overrides() -> None:
    c = parse_config({"upstreams": [UP], "attestation": {"tpm": {"tcti": "swtpm:port=2321"}}})
    assert LoadedConfig(c, Path("."), env={}).tpm_tcti == "swtpm:port=2321"
    assert (
        LoadedConfig(c, Path("."), env={"CMCP_TPM_TCTI": "device:/dev/tpm0"}).tpm_tcti
        == "device:/dev/tpm0"
    )


def test_yaml_errors_give_a_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("upstreams:\n  - name: a\n   url: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.code == "config.syntax" and ":3" in info.value.message
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_credential_files_never_echo_values() -> None:
    with pytest.raises(ConfigError) as info:
        parse_header_lines("Authorization Bearer hunter2\n", "upstreams[0].headers_from_file")
    assert "hunter2" not in info.value.message and "line 1" in info.value.message
    with pytest.raises(ConfigError, match="sets Mcp-Session-Id, which the gateway controls"):
        parse_header_lines("Mcp-Session-Id: forged\n", "f")
    with pytest.raises(ConfigError, match="which the gateway controls"):
        parse_header_lines("Mcp-Param-Region: x\n", "f")


def test_default_allowed_hosts_cover_loopback_and_listen_host() -> None:
    c = parse_config({"upstreams": [UP], "listen_addr": "10.0.0.5:8443"})
    hosts = LoadedConfig(c, Path("."), env={}).allowed_hosts()
    assert hosts == ("127.0.0.1:*", "localhost:*", "[::1]:*", "10.0.0.5:*")


def test_identity_in_a_pod_and_standalone() -> None:
    c = parse_config({"upstreams": [UP]})
    pod = LoadedConfig(
        c,
        Path("."),
        env={
            "CMCP_POD_NAME": "agent-7d9f",
            "CMCP_POD_NAMESPACE": "research",
            "CMCP_SERVICE_ACCOUNT": "agent",
        },
    )
    assert (pod.principal, pod.instance_id) == ("research/agent", "agent-7d9f")
    alone = LoadedConfig(c, Path("."), env={})
    assert alone.principal == "standalone" and alone.instance_id
    named = parse_config(
        {"upstreams": [UP], "identity": {"principal": "team-a/bot"}, "instance_id": "gw-1"}
    )
    assert (LoadedConfig(named, Path("."), env={}).principal, named.instance_id) == (
        "team-a/bot",
        "gw-1",
    )
    assert "claims.subject: must be a SPIFFE ID" in error_of(
        {"upstreams": [UP], "claims": {"subject": "bob"}}
    )
