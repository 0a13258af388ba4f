"""Building Cedar policy bundles for tests, from the real contract schema and examples."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cmcp_sidecar.policy import PolicyEngine
from cmcp_verifier.bundle import BundleFiles, read_bundle_dir
from cmcp_verifier.cedar_bundle import LoadedBundle, load_bundle

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
EXAMPLES = sorted(p.name for p in POLICIES.iterdir() if p.is_dir())
SCHEMA_TEXT = (POLICIES / "schema.cedarschema").read_text()
ARGUMENTS_BLOCK = "type Arguments = {\n};"
MANIFEST = b'{"name": "test", "version": "1", "description": "test bundle"}'


def schema(arguments: str = "") -> bytes:
    """The contract schema, with ``arguments`` (e.g. ``"n?: Long,"``) declared."""
    assert ARGUMENTS_BLOCK in SCHEMA_TEXT
    return SCHEMA_TEXT.replace(
        ARGUMENTS_BLOCK, "type Arguments = {\n" + arguments + "\n};"
    ).encode()


def bundle_files(
    policies: str | Mapping[str, str],
    *,
    arguments: str = "",
    override: Mapping[str, bytes] | None = None,
) -> BundleFiles:
    """A bundle of ``policies`` (one text, or file name → text), schema and manifest.

    ``override`` replaces (or adds) members by file name.
    """
    texts = {"policies.cedar": policies} if isinstance(policies, str) else dict(policies)
    files = {name: text.encode() for name, text in texts.items()}
    files["schema.cedarschema"] = schema(arguments)
    files["manifest.json"] = MANIFEST
    files.update(override or {})
    return BundleFiles(files)


def load(policies: str | Mapping[str, str], *, arguments: str = "") -> LoadedBundle:
    return load_bundle(bundle_files(policies, arguments=arguments))


def engine(
    policies: str | Mapping[str, str], *, arguments: str = "", **options: object
) -> PolicyEngine:
    return PolicyEngine.from_bundle(load(policies, arguments=arguments), **options)


def example_files(name: str) -> BundleFiles:
    return read_bundle_dir(POLICIES / name)


def example_engine(name: str) -> PolicyEngine:
    return PolicyEngine.from_bundle(load_bundle(POLICIES / name))
