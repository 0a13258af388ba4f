"""McpPolicyBundle content: where it comes from, whether it is valid, what is rendered.

Validation is the sidecar's own: :func:`cmcp_verifier.cedar_bundle.load_bundle` (Cedar
syntax, the schema, the Cedar contract, strict validation, policy ids, obligations), so a
bundle the operator accepts is one the gateway loads. Problems are reported with their place
(``policies.cedar:3:14: …``). The hash is :func:`cmcp_verifier.bundle.bundle_hash`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cmcp_verifier.bundle import (
    MANIFEST_FILE,
    SCHEMA_FILE,
    BundleFiles,
    bundle_hash,
    is_bundle_member,
)
from cmcp_verifier.catalog import parse_catalog
from cmcp_verifier.errors import BundleError, CmcpError

from . import api
from .models import McpPolicyBundleSpec

MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Source:
    """The bundle's files (members only), its catalog and the keys that were ignored."""

    files: dict[str, bytes]
    catalog: bytes | None = None
    ignored: tuple[str, ...] = ()


@dataclass
class Outcome:
    """The result of validating a source."""

    valid: bool
    reason: str  # Valid | InvalidBundle | InvalidCatalog
    message: str
    hash: str | None = None
    catalog_hash: str | None = None
    problems: list[str] = field(default_factory=list)
    policy_count: int = 0


def from_spec(spec: McpPolicyBundleSpec) -> Source:
    files: dict[str, bytes] = {
        name: text.encode("utf-8") for name, text in (spec.policies or {}).items()
    }
    if spec.schema_text is not None:
        files[SCHEMA_FILE] = spec.schema_text.encode("utf-8")
    if spec.manifest is not None:
        files[MANIFEST_FILE] = spec.manifest.encode("utf-8")
    catalog = spec.catalog.encode("utf-8") if spec.catalog is not None else None
    return Source(files=files, catalog=catalog)


def from_configmap(cm: Mapping[str, Any]) -> Source:
    """The bundle held by a ConfigMap's keys (``data`` and ``binaryData``)."""
    entries: dict[str, bytes] = {}
    for name, text in (cm.get("data") or {}).items():
        entries[name] = str(text).encode("utf-8")
    for name, b64 in (cm.get("binaryData") or {}).items():
        try:
            entries[name] = base64.b64decode(str(b64), validate=True)
        except (binascii.Error, ValueError):
            entries[name] = b""
    catalog = entries.pop(api.CATALOG_FILE, None)
    members = {n: d for n, d in entries.items() if is_bundle_member(n)}
    ignored = tuple(sorted(n for n in entries if n not in members))
    return Source(files=members, catalog=catalog, ignored=ignored)


def validate(source: Source) -> Outcome:
    """Validate with the sidecar's loader; never raises for bad content."""
    from cmcp_verifier.cedar_bundle import BundleValidationError, load_bundle

    digest: str | None
    try:
        digest = bundle_hash(source.files)
    except BundleError:
        digest = None
    try:
        loaded = load_bundle(BundleFiles(files=source.files, ignored=source.ignored))
    except BundleValidationError as exc:
        problems = [str(p) for p in exc.problems]
        return Outcome(
            False, "InvalidBundle", _summary(problems), digest, None, problems[:MAX_PROBLEMS]
        )
    except CmcpError as exc:
        return Outcome(False, "InvalidBundle", exc.message, digest, None, [exc.message])
    catalog_hash = None
    if source.catalog is not None:
        try:
            catalog_hash = parse_catalog(source.catalog, source=api.CATALOG_FILE).hash
        except CmcpError as exc:
            return Outcome(False, "InvalidCatalog", exc.message, loaded.hash, None, [exc.message])
    return Outcome(
        True,
        "Valid",
        f"{len(loaded.policies)} policies in {len(loaded.files.policy_names)} files validated"
        " against the schema",
        loaded.hash,
        catalog_hash,
        [],
        len(loaded.policies),
    )


def _summary(problems: list[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else "")


def configmap_name(bundle: str, digest: str, catalog_hash: str | None) -> str:
    name = f"mcpb-{api.bounded(bundle, 40)}-{digest.removeprefix('sha256:')[:12]}"
    if catalog_hash is not None:
        name += f"-{catalog_hash.removeprefix('sha256:')[:8]}"
    return name


def render(
    bundle: str,
    namespace: str,
    owner: dict[str, Any],
    source: Source,
    digest: str,
    catalog_hash: str | None,
) -> dict[str, Any]:
    """The immutable ConfigMap the sidecars mount: the bundle files plus catalog.json."""
    data = {name: content.decode("utf-8") for name, content in sorted(source.files.items())}
    annotations = {api.ANN_BUNDLE_HASH: digest}
    if source.catalog is not None and catalog_hash is not None:
        data[api.CATALOG_FILE] = source.catalog.decode("utf-8")
        annotations[api.ANN_CATALOG_HASH] = catalog_hash
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(bundle, digest, catalog_hash),
            "namespace": namespace,
            "labels": {
                api.LABEL_COMPONENT: api.COMPONENT_BUNDLE,
                api.LABEL_BUNDLE: api.bounded(bundle, 63),
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "immutable": True,
        "data": data,
    }


def rendered_matches(cm: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """True when an existing ConfigMap holds exactly the expected content."""
    return (cm.get("data") or {}) == expected["data"] and not cm.get("binaryData")
