"""The sidecar's configuration file, rendered from an McpGateway, and its ConfigMap.

The keys are those of the gateway's config model (``cmcp_sidecar.config``, docs/
configuration.md); a test validates every rendered config with the sidecar's own loader (the
operator itself never imports the sidecar). Identity (pod, namespace, service account) is not
in the file: the sidecar reads it from the downward-API environment the injection sets.
"""

from __future__ import annotations

from typing import Any

import yaml

from cmcp_verifier.canonical import canonical_bytes
from cmcp_verifier.digests import sha256_digest

from . import api
from .models import McpGatewaySpec


def upstream_headers_path(upstream: str) -> str:
    return f"{api.UPSTREAMS_DIR}/{upstream}/headers"


def render_config(
    spec: McpGatewaySpec,
    *,
    has_catalog: bool,
    default_mode: str = "enforcing",
    has_candidate: bool = False,
    candidate_has_catalog: bool = False,
) -> dict[str, Any]:
    """The sidecar config mapping for this gateway (``default_mode`` when it names none;
    ``has_candidate``: the candidate bundle is mounted for shadow evaluation, with its own
    catalog when ``candidate_has_catalog``)."""
    att = spec.attestation
    attestation: dict[str, Any] = {
        "provider": att.provider,
        "enforcement_mode": spec.enforcement_mode or default_mode,
        "validity_seconds": att.validity_seconds,
        "staleness_policy": att.staleness_policy,
    }
    if att.expected_measurement is not None:
        attestation["expected_measurement"] = att.expected_measurement
    upstreams = []
    for up in spec.upstreams:
        entry: dict[str, Any] = {"name": up.name, "url": up.url}
        if up.prefix is not None:
            entry["prefix"] = up.prefix
        if up.headers_secret_ref is not None:
            entry["headers_from_file"] = upstream_headers_path(up.name)
        upstreams.append(entry)
    claims: dict[str, Any] = {
        "mode": spec.claims.mode,
        "dir": f"{api.DATA_DIR}/claims",
        "interval_seconds": spec.claims.interval_seconds,
        "idle_timeout_seconds": spec.claims.idle_timeout_seconds,
        "sink": "kubernetes",
        "model": {
            "provider": spec.claims.model.provider,
            "model_id": spec.claims.model.model_id,
            **({"version": spec.claims.model.version} if spec.claims.model.version else {}),
        },
        "trust_domain": spec.claims.trust_domain,
    }
    if spec.claims.data_classes is not None:
        claims["data_classes"] = list(spec.claims.data_classes)
    shadow: dict[str, Any] = {}
    if has_candidate:
        shadow["shadow_bundle_path"] = api.CANDIDATE_DIR
        if candidate_has_catalog:
            shadow["shadow_catalog_path"] = f"{api.CANDIDATE_DIR}/{api.CATALOG_FILE}"
        else:  # promoted, it would bring no catalog: nothing approved (catalog_path null)
            shadow["shadow_catalog_fallback"] = "empty"
    return {
        **shadow,
        "attestation": attestation,
        "policy_bundle_path": api.BUNDLE_DIR,
        "catalog_path": f"{api.BUNDLE_DIR}/{api.CATALOG_FILE}" if has_catalog else None,
        "listen_addr": f"127.0.0.1:{spec.sidecar.port}",
        "upstreams": upstreams,
        "audit": {"path": f"{api.DATA_DIR}/audit", "fsync": spec.audit.fsync},
        "claims": claims,
        "logging": {"format": "json", "level": "info"},
    }


def config_text(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


def config_hash(config: dict[str, Any]) -> str:
    return sha256_digest(canonical_bytes(config))


def config_map(
    gateway: str, namespace: str, owner: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    """The immutable ConfigMap holding the config, named by its content hash."""
    digest = config_hash(config)
    name = f"mcpgw-{api.bounded(gateway, 40)}-{digest.removeprefix('sha256:')[:12]}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                api.LABEL_COMPONENT: api.COMPONENT_CONFIG,
                api.LABEL_GATEWAY: gateway,
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
            "annotations": {api.ANN_CONFIG_HASH: digest},
            "ownerReferences": [owner],
        },
        "immutable": True,
        "data": {api.CONFIG_FILE: config_text(config)},
    }
