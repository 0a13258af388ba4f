"""Generate ``crds/*.yaml`` from the pydantic models (:mod:`cmcp_operator.models`).

``python -m cmcp_operator.crdgen --write crds/`` rewrites the files; ``--check crds/`` exits 1
when a committed file differs from what the models generate (CI runs the same comparison as
a test). The conversion turns pydantic's JSON Schema into a Kubernetes *structural* schema:
references inlined, optional fields (``X | None``) as plain optional properties, object
defaults as ``{}`` (the API server then fills nested defaults), titles dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from . import models
from .api import BUNDLE_KIND, BUNDLE_PLURAL, GATEWAY_KIND, GATEWAY_PLURAL, GROUP, VERSION

HEADER = (
    "# Generated from operator/cmcp_operator/models.py by `python -m cmcp_operator.crdgen"
    " --write crds/`.\n# Do not edit by hand; docs/operator.md describes every field.\n"
)
_DROP = {"title", "$defs"}


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` / single-member ``allOf`` and unwrap ``X | None`` (keeping the outer
    node's own keys: description, default, validations)."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_resolve(inner, defs), **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != len(node["anyOf"]) and len(options) == 1:
            del node["anyOf"]
            inner = _resolve(options[0], defs)
            node = {**inner, **{k: v for k, v in node.items() if k != "default"}}
            if node.get("default") is None:
                node.pop("default", None)
    return node


def convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON Schema node → a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is None:
                continue
            out[key] = {} if isinstance(value, dict) and "properties" in node else value
            out[key] = _strip_none(out[key])
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_of(model: type[models.Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return convert(raw, raw.get("$defs", {}))


def crd(
    kind: str,
    plural: str,
    short: str,
    spec: type[models.Model],
    status: type[models.Model],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    root = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": schema_of(spec),
            "status": schema_of(status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "confidential-mcp"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["cmcp"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD object."""
    return {
        f"{BUNDLE_PLURAL}.yaml": crd(
            BUNDLE_KIND,
            BUNDLE_PLURAL,
            "mcpb",
            models.McpPolicyBundleSpec,
            models.McpPolicyBundleStatus,
            models.BUNDLE_COLUMNS,
            "A Cedar policy bundle, validated and rendered by the operator into an immutable"
            " ConfigMap named by its hash.",
        ),
        f"{GATEWAY_PLURAL}.yaml": crd(
            GATEWAY_KIND,
            GATEWAY_PLURAL,
            "mcpgw",
            models.McpGatewaySpec,
            models.McpGatewayStatus,
            models.GATEWAY_COLUMNS,
            "Injects the Confidential MCP gateway sidecar into selected Deployments and"
            " StatefulSets and aggregates their verified claims.",
        ),
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(obj: dict[str, Any]) -> str:
    return HEADER + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmcp_operator.crdgen")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", type=Path, help="write the CRD files")
    group.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if DIR is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, obj in all_crds().items():
        text = render(obj)
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / name).write_text(text, encoding="utf-8")
        else:
            path = args.check / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
    for path in stale:
        print(f"stale: {path} (run python -m cmcp_operator.crdgen --write crds/)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
