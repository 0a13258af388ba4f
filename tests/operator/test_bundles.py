"""Bundle sources and validation with the sidecar's own loader."""

from __future__ import annotations

import base64
from pathlib import Path

from cmcp_operator import bundles
from cmcp_operator.models import McpPolicyBundleSpec
from cmcp_verifier.bundle import read_bundle_dir

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _files(name: str = "allow-all-but-one") -> dict[str, str]:
    return {n: c.decode() for n, c in read_bundle_dir(POLICIES / name).files.items()}


def _spec(files: dict[str, str], **extra: str) -> McpPolicyBundleSpec:
    return McpPolicyBundleSpec.model_validate(
        {
            "policies": {n: t for n, t in files.items() if n.endswith(".cedar")},
            "schema": files["schema.cedarschema"],
            "manifest": files["manifest.json"],
            **extra,
        }
    )


def test_inline_bundle_hash_equals_the_directory_hash() -> None:
    outcome = bundles.validate(bundles.from_spec(_spec(_files())))
    assert outcome.valid, outcome.message
    assert outcome.hash == read_bundle_dir(POLICIES / "allow-all-but-one").hash
    assert outcome.policy_count == 2


def test_invalid_policy_located() -> None:
    files = _files()
    files["policies.cedar"] += (
        '\nforbid(principal, action == Action::"call_tool", resource == Tol::"x");\n'
    )
    outcome = bundles.validate(bundles.from_spec(_spec(files)))
    assert not outcome.valid and outcome.reason == "InvalidBundle"
    assert outcome.problems[0].startswith("policies.cedar:"), outcome.problems
    assert outcome.hash is not None  # complete bundle: the hash is still reported


def test_missing_member_and_bad_catalog() -> None:
    source = bundles.Source(files={"a.cedar": b"permit(principal, action, resource);"})
    outcome = bundles.validate(source)
    assert not outcome.valid and outcome.hash is None and "schema.cedarschema" in outcome.message
    outcome = bundles.validate(bundles.from_spec(_spec(_files(), catalog='{"format": "nope"}')))
    assert not outcome.valid and outcome.reason == "InvalidCatalog"


def test_configmap_source_ignores_non_members_and_reads_binary() -> None:
    files = _files()
    cm = {
        "data": {**{k: v for k, v in files.items() if k != "manifest.json"}, "README.md": "hi"},
        "binaryData": {"manifest.json": base64.b64encode(files["manifest.json"].encode()).decode()},
    }
    source = bundles.from_configmap(cm)
    assert source.ignored == ("README.md",)
    assert bundles.validate(source).hash == read_bundle_dir(POLICIES / "allow-all-but-one").hash


def test_render_names_by_hash_and_is_immutable() -> None:
    source = bundles.from_spec(
        _spec(_files(), catalog='{"format": "cmcp-catalog/v1", "tools": []}')
    )
    outcome = bundles.validate(source)
    assert outcome.valid and outcome.hash and outcome.catalog_hash
    owner = {"apiVersion": "cmcp.dev/v1alpha1", "kind": "McpPolicyBundle", "name": "p", "uid": "u"}
    cm = bundles.render("p" * 80, "ns", owner, source, outcome.hash, outcome.catalog_hash)
    name = cm["metadata"]["name"]
    assert cm["immutable"] is True and len(name) < 80  # long bundle names are shortened
    assert name.endswith(f"-{outcome.hash[7:19]}-{outcome.catalog_hash[7:15]}")
    assert sorted(cm["data"]) == [
        "catalog.json",
        "manifest.json",
        "policies.cedar",
        "schema.cedarschema",
    ]
    assert bundles.rendered_matches(cm, cm)
