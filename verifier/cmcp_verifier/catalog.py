"""The approved-tool catalog and tool definition hashes.

A tool's definition hash pins what the agent and the policy were shown:

    sha256( RFC8785({k: tool[k] for k in DEFINITION_FIELDS if k in tool}) )

Any change to a tool's name, title, description, input or output schema or annotations
changes it (a "rug pull"). The catalog file::

    {"format": "cmcp-catalog/v1",
     "tools": [{"upstream": "crm", "name": "contacts", "definition_hash": "sha256:…",
                "labels": ["pii"]}, …]}

and its hash is sha256 of its RFC 8785 form. See docs/formats.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .canonical import canonical_bytes, parse_json
from .digests import is_digest, sha256_digest
from .errors import InputError

CATALOG_FORMAT = "cmcp-catalog/v1"
DEFINITION_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_ENTRY_KEYS = {"upstream", "name", "definition_hash", "labels", "note"}


def tool_definition_hash(tool: Mapping[str, Any]) -> str:
    """Definition hash of an MCP ``Tool`` object as a server lists it."""
    pinned = {k: tool[k] for k in DEFINITION_FIELDS if k in tool}
    return sha256_digest(canonical_bytes(pinned, allow_floats=True))


@dataclass(frozen=True)
class CatalogEntry:
    """One approved tool of one upstream."""

    upstream: str
    name: str
    definition_hash: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """The approved tools, keyed by (upstream, tool name)."""

    entries: Mapping[tuple[str, str], CatalogEntry]
    hash: str

    def lookup(self, upstream: str, name: str) -> CatalogEntry | None:
        return self.entries.get((upstream, name))

    def to_json(self) -> dict[str, Any]:
        return catalog_document(self.entries.values())


def catalog_document(entries: Any) -> dict[str, Any]:
    """The canonical catalog document for ``entries`` (sorted by upstream, name)."""
    tools = []
    for e in sorted(entries, key=lambda e: (e.upstream, e.name)):
        item: dict[str, Any] = {
            "upstream": e.upstream,
            "name": e.name,
            "definition_hash": e.definition_hash,
        }
        if e.labels:
            item["labels"] = list(e.labels)
        tools.append(item)
    return {"format": CATALOG_FORMAT, "tools": tools}


def parse_catalog(data: bytes | str, *, source: str = "catalog") -> Catalog:
    """Parse and validate a catalog document; raise :class:`InputError` naming the entry."""
    doc = parse_json(data, what=source)
    if not isinstance(doc, dict) or doc.get("format") != CATALOG_FORMAT:
        raise InputError(
            f'{source}: expected an object with "format": "{CATALOG_FORMAT}"',
            code="catalog.format",
            hint="generate one with `cmcp catalog pin --upstream URL`",
        )
    extra = set(doc) - {"format", "tools"}
    if extra:
        raise InputError(f"{source}: unknown member {sorted(extra)[0]!r}", code="catalog.format")
    tools = doc.get("tools")
    if not isinstance(tools, list):
        raise InputError(f'{source}: "tools" must be a list', code="catalog.format")
    entries: dict[tuple[str, str], CatalogEntry] = {}
    for index, raw in enumerate(tools):
        entry = _parse_entry(raw, f"{source}: tools[{index}]")
        key = (entry.upstream, entry.name)
        if key in entries:
            raise InputError(
                f"{source}: tools[{index}] duplicates {key[0]}/{key[1]}", code="catalog.duplicate"
            )
        entries[key] = entry
    return Catalog(entries=entries, hash=sha256_digest(canonical_bytes(doc)))


def _parse_entry(raw: Any, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be an object", code="catalog.entry")
    extra = set(raw) - _ENTRY_KEYS
    if extra:
        raise InputError(f"{where}: unknown member {sorted(extra)[0]!r}", code="catalog.entry")
    for key in ("upstream", "name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InputError(f"{where}: {key!r} must be a non-empty string", code="catalog.entry")
    if not is_digest(raw.get("definition_hash")):
        raise InputError(f"{where}: definition_hash must be sha256:<hex>", code="catalog.entry")
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(
        isinstance(label, str) and _LABEL_RE.match(label) for label in labels
    ):
        raise InputError(
            f"{where}: labels must be a list of lowercase names ([a-z0-9._-])", code="catalog.entry"
        )
    return CatalogEntry(raw["upstream"], raw["name"], raw["definition_hash"], tuple(labels))


def load_catalog(path: str | Path) -> Catalog:
    """Read and parse a catalog file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read catalog {str(path)!r}: {exc.strerror}", code="catalog.unreadable"
        ) from None
    return parse_catalog(data, source=str(path))
