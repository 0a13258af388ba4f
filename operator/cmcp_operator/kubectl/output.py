"""Output of the plugin: kubectl-like tables by default, ``-o json`` / ``-o yaml``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

FORMATS = ("table", "json", "yaml")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    """Columns in upper case, left-aligned, two spaces apart (as kubectl prints them)."""
    cells = [[str(c).upper() for c in columns]]
    cells += [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def emit(doc: Any, fmt: str, out: TextIO = sys.stdout) -> None:
    """A document as JSON or YAML."""
    if fmt == "json":
        out.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    else:
        out.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
