"""The committed CRDs are exactly what the pydantic models generate, and both agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cmcp_operator import crdgen, models

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    assert crdgen.main(["--check", str(CRDS)]) == 0, (
        "run python -m cmcp_operator.crdgen --write crds/"
    )


def _fields(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, sub in (schema.get("properties") or {}).items():
        out.add(prefix + name)
        out |= _fields(sub, prefix + name + ".")
        if "items" in sub:
            out |= _fields(sub["items"], prefix + name + "[].")
    return out


def _model_fields(model: type[models.Model], prefix: str = "") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        out.add(prefix + alias)
        for arg in _model_args(info.annotation):
            out |= _model_fields(
                arg, prefix + alias + ("[]." if _is_list(info.annotation) else ".")
            )
    return out


def _is_list(tp: Any) -> bool:
    return "list[" in str(tp)


def _model_args(tp: Any) -> list[type[models.Model]]:
    found = []
    for arg in getattr(tp, "__args__", ()) or ():
        found += _model_args(arg)
    if isinstance(tp, type) and issubclass(tp, models.Model):
        found.append(tp)
    return found


@pytest.mark.parametrize(
    ("file", "spec", "status"),
    [
        ("mcpgateways.yaml", models.McpGatewaySpec, models.McpGatewayStatus),
        ("mcppolicybundles.yaml", models.McpPolicyBundleSpec, models.McpPolicyBundleStatus),
    ],
)
def test_every_model_field_is_in_the_crd_and_back(
    file: str, spec: type[models.Model], status: type[models.Model]
) -> None:
    crd = yaml.safe_load((CRDS / file).read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert _fields(root["spec"]) == _model_fields(spec)
    assert _fields(root["status"]) == _model_fields(status)


def test_schema_is_structural() -> None:
    """No $ref, no nullable unions, a type (or int-or-string) on every node."""

    def walk(node: dict[str, Any], where: str) -> None:
        assert "$ref" not in node and "allOf" not in node, where
        assert "type" in node or node.get("x-kubernetes-int-or-string"), where
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{where}.{key}")

    for obj in crdgen.all_crds().values():
        walk(obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"], obj["metadata"]["name"])


def test_defaults_in_the_crd_equal_the_model_defaults() -> None:
    crd = crdgen.all_crds()["mcpgateways.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    attestation = spec["properties"]["attestation"]["properties"]
    assert attestation["provider"]["default"] == models.Attestation().provider
    assert attestation["allowSoftware"]["default"] is False
    tolerations = spec["properties"]["placement"]["properties"]["tolerations"]["default"]
    assert tolerations == [t.to_api() for t in models.DEFAULT_TOLERATIONS]
