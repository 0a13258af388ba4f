"""``kubectl cmcp bundle hash|validate|render DIR``: policy bundles, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcp_verifier.bundle import MANIFEST_FILE, SCHEMA_FILE, read_bundle_dir
from cmcp_verifier.cedar_bundle import LoadedBundle, load_bundle
from cmcp_verifier.errors import BundleError

CATALOG_FILE = "catalog.json"


def validate(directory: str) -> LoadedBundle:
    """The loaded bundle; :class:`BundleValidationError` lists every problem."""
    return load_bundle(Path(directory))


def render(directory: str, name: str, namespace: str | None) -> dict[str, Any]:
    """An inline McpPolicyBundle of a (valid) bundle directory, pinned to its hash."""
    loaded = validate(directory)
    files = loaded.files.files
    spec: dict[str, Any] = {
        "expectedHash": loaded.hash,
        "policies": {n: _text(n, files[n]) for n in loaded.files.policy_names},
        "schema": _text(SCHEMA_FILE, files[SCHEMA_FILE]),
        "manifest": _text(MANIFEST_FILE, files[MANIFEST_FILE]),
    }
    catalog = Path(directory) / CATALOG_FILE
    if catalog.is_file():
        spec["catalog"] = _text(CATALOG_FILE, catalog.read_bytes())
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/part-of": "confidential-mcp"},
        "annotations": {
            "cmcp.dev/bundle-name": loaded.manifest.name,
            "cmcp.dev/bundle-version": loaded.manifest.version,
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "cmcp.dev/v1alpha1",
        "kind": "McpPolicyBundle",
        "metadata": metadata,
        "spec": spec,
    }


def hash_of(directory: str) -> str:
    return read_bundle_dir(directory).hash


def _text(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{name} is not UTF-8 text", code="bundle.encoding") from None
