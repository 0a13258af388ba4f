"""Every sidecar config the operator renders is accepted by the sidecar's own loader.

(Tests may import the sidecar; the operator's code never does.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcp_operator import api
from cmcp_operator.models import McpGatewaySpec
from cmcp_operator.sidecar_config import config_map, config_text, render_config
from cmcp_sidecar.config import load_config

HASH = "sha256:" + "b" * 64
BASE: dict[str, Any] = {
    "selector": {"matchLabels": {"app": "agent"}},
    "bundle": {"name": "b", "hash": HASH},
    "upstreams": [{"name": "everything", "url": "http://mcp.tools.svc:3001/mcp"}],
    "placement": {"teeTypes": ["tdx"]},
}


def _load(tmp_path: Path, spec: McpGatewaySpec, *, catalog: bool = False) -> Any:
    path = tmp_path / api.CONFIG_FILE
    path.write_text(config_text(render_config(spec, has_catalog=catalog)))
    return load_config(path).config


def test_minimal(tmp_path: Path) -> None:
    cfg = _load(tmp_path, McpGatewaySpec.model_validate(BASE))
    assert cfg.policy_bundle_path == api.BUNDLE_DIR and cfg.catalog_path is None
    assert cfg.listen_addr == "127.0.0.1:8443"
    assert cfg.claims.sink == "kubernetes" and cfg.claims.dir == f"{api.DATA_DIR}/claims"
    assert cfg.attestation.enforcement_mode == "enforcing"
    assert cfg.audit.path == f"{api.DATA_DIR}/audit"


def test_default_enforcement_mode_applies_only_when_unset() -> None:
    unset = McpGatewaySpec.model_validate(BASE)
    assert unset.enforcement_mode is None
    rendered = render_config(unset, has_catalog=False, default_mode="advisory")
    assert rendered["attestation"]["enforcement_mode"] == "advisory"
    named = McpGatewaySpec.model_validate({**BASE, "enforcementMode": "enforcing"})
    rendered = render_config(named, has_catalog=False, default_mode="silent")
    assert rendered["attestation"]["enforcement_mode"] == "enforcing"


def test_candidate_bundle_is_shadowed(tmp_path: Path) -> None:
    spec = McpGatewaySpec.model_validate(BASE)
    path = tmp_path / api.CONFIG_FILE
    path.write_text(config_text(render_config(spec, has_catalog=False, has_candidate=True)))
    shadowed = load_config(path).config
    assert shadowed.shadow_bundle_path == api.CANDIDATE_DIR
    assert shadowed.shadow_catalog_path is None  # no catalog of its own: none once promoted
    assert shadowed.shadow_catalog_fallback == "empty"
    assert _load(tmp_path, spec).shadow_bundle_path is None
    rendered = render_config(spec, has_catalog=True, has_candidate=True, candidate_has_catalog=True)
    path.write_text(config_text(rendered))
    own = load_config(path).config
    assert own.shadow_catalog_path == f"{api.CANDIDATE_DIR}/{api.CATALOG_FILE}"
    assert own.catalog_path == f"{api.BUNDLE_DIR}/{api.CATALOG_FILE}"
    assert "shadow_catalog_fallback" not in rendered


def test_everything(tmp_path: Path) -> None:
    spec = McpGatewaySpec.model_validate(
        {
            **BASE,
            "upstreams": [
                {
                    "name": "crm",
                    "url": "https://crm.example/mcp",
                    "prefix": "crm",
                    "headersSecretRef": {"name": "crm-creds", "key": "h"},
                },
                {"name": "wiki_2", "url": "http://wiki/mcp", "prefix": "wiki"},
            ],
            "enforcementMode": "advisory",
            "attestation": {
                "provider": "software",
                "allowSoftware": True,
                "validitySeconds": 600,
                "stalenessPolicy": "warn_only",
                "expectedMeasurement": "sha384:" + "c" * 96,
            },
            "sidecar": {"port": 9443},
            "claims": {
                "mode": "interval",
                "intervalSeconds": 60,
                "idleTimeoutSeconds": 120,
                "trustDomain": "prod.example",
                "dataClasses": ["public", "pii"],
                "model": {"provider": "acme", "modelId": "m-1", "version": "3"},
            },
            "audit": {"fsync": "every", "sizeLimit": "2Gi"},
        }
    )
    cfg = _load(tmp_path, spec, catalog=True)
    assert cfg.catalog_path == f"{api.BUNDLE_DIR}/catalog.json"
    assert cfg.upstreams[0].headers_from_file == f"{api.UPSTREAMS_DIR}/crm/headers"
    assert cfg.upstreams[1].headers_from_file is None
    assert cfg.listen_addr == "127.0.0.1:9443"
    assert (cfg.attestation.provider, cfg.attestation.staleness_policy) == ("software", "warn_only")
    assert cfg.claims.model.model_id == "m-1" and cfg.claims.data_classes == ["public", "pii"]
    assert cfg.audit.fsync == "every"


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["enforcing", "advisory", "silent"]),
    provider=st.sampled_from(["auto", "tpm", "sev-snp", "tdx", "coco", "azure-cvm", "gpu-cc"]),
    claims_mode=st.sampled_from(["session", "call", "interval"]),
    fsync=st.sampled_from(["every", "batch"]),
    port=st.integers(1024, 65535),
    catalog=st.booleans(),
    names=st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,20}[a-z0-9])?", fullmatch=True),
        min_size=1,
        max_size=4,
        unique=True,
    ),
)
def test_every_combination_loads(
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    provider: str,
    claims_mode: str,
    fsync: str,
    port: int,
    catalog: bool,
    names: list[str],
) -> None:
    spec = McpGatewaySpec.model_validate(
        {
            **BASE,
            "upstreams": [
                {
                    "name": n,
                    "url": f"http://{n.replace('_', '-')}/mcp",
                    "headersSecretRef": {"name": "s"},
                }
                for n in names
            ],
            "enforcementMode": mode,
            "attestation": {"provider": provider},
            "claims": {"mode": claims_mode},
            "audit": {"fsync": fsync},
            "sidecar": {"port": port},
        }
    )
    _load(tmp_path_factory.mktemp("cfg"), spec, catalog=catalog)


def test_configmap_named_by_content() -> None:
    spec = McpGatewaySpec.model_validate(BASE)
    owner = {"kind": "McpGateway", "name": "gw"}
    a = config_map("gw", "ns", owner, render_config(spec, has_catalog=False))
    b = config_map("gw", "ns", owner, render_config(spec, has_catalog=False))
    c = config_map("gw", "ns", owner, render_config(spec, has_catalog=True))
    assert a == b and a["metadata"]["name"] != c["metadata"]["name"]
    assert a["immutable"] is True
