"""Structured mutations of JSON documents for fuzz targets.

Byte flips mostly break the syntax and test only the JSON reader; these edits keep the text
well-formed (or make exactly the hostile forms the strict reader must refuse), so that the
checks behind the parser see them: a member's value replaced by another type, a huge or
out-of-range integer, a float, ``NaN``/``Infinity`` (as text), deep nesting, a member added,
removed or duplicated (as text), a string made into non-canonical base64url.

:func:`edited_json` draws ``(text, changed)``: the document's JSON text and whether the edit
changed what the strict reader (:func:`~cmcp_verifier.canonical.parse_json`) reads; a document
it reads as before must keep its verdict.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from cmcp_verifier.canonical import canonical_bytes, parse_json
from cmcp_verifier.errors import InputError


class Raw:
    """JSON text inserted as is (a number the strict reader refuses, a bare NaN, …)."""

    def __init__(self, text: str) -> None:
        self.text = text


class Pairs:
    """An object written member by member: keys may repeat."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items


def dump(value: Any) -> str:
    """JSON text of ``value``, with :class:`Raw` and :class:`Pairs` written verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return dump(Pairs(list(value.items())))
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


HOSTILE_NUMBERS = [
    "9007199254740993",  # 2^53 + 1
    "-9007199254740993",
    "1" + "0" * 400,
    "1.5",
    "1e400",
    "-0.0",
    "NaN",
    "Infinity",
    "-Infinity",
]
REPLACEMENTS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.text(max_size=20),
    st.sampled_from(["", "sha256:" + "0" * 64, "software", "sev-snp", "A" * 200, "\ud800"]),
    st.sampled_from(HOSTILE_NUMBERS).map(Raw),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 3), max_size=2),
    st.integers(1, 400).map(lambda n: Raw("[" * n + "]" * n)),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member path (object keys and list indices) in ``value``."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def _noncanonical_b64(text: str, draw: st.DrawFn) -> str:
    choice = draw(st.sampled_from(["pad", "std", "tail", "space"]))
    if choice == "pad":
        return text + "=" * draw(st.integers(1, 2))
    if choice == "std":
        return text.replace("-", "+").replace("_", "/") + "+/"
    if choice == "space":
        return text[: len(text) // 2] + " " + text[len(text) // 2 :]
    # Non-zero trailing bits: the last character's unused bits set.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if text and len(text) % 4 in (2, 3) and text[-1] in alphabet:
        return text[:-1] + alphabet[(alphabet.index(text[-1]) | 1) % 64]
    return text + "A"


@st.composite
def edited_json(draw: st.DrawFn, doc: dict[str, Any], max_edits: int = 3) -> tuple[str, bool]:
    """A few structured edits of ``doc`` (a JSON object); returns (text, meaning changed)."""
    work: Any = json.loads(json.dumps(doc))
    changed = False
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(work)
        path = draw(st.sampled_from(paths)) if paths else ()
        parent = _parent(work, path) if path else None
        op = draw(st.sampled_from(["replace", "replace", "add", "remove", "dup", "b64"]))
        if not path or isinstance(parent, Raw | Pairs):
            op = "add"
        key = path[-1] if path else None
        if op == "replace":
            parent[key] = draw(REPLACEMENTS)
        elif op == "add":
            member = (draw(st.sampled_from(["extra", "signature", "v", "typ"])), draw(REPLACEMENTS))
            target = parent if isinstance(parent, dict) else work
            if isinstance(target, Pairs):
                target.items.append(member)
            else:
                target[member[0]] = member[1]
        elif op == "remove":
            del parent[key]
        elif op == "b64" and isinstance(parent[key], str):
            parent[key] = _noncanonical_b64(parent[key], draw)
        elif op == "dup" and isinstance(parent, dict):
            items = list(parent.items())
            items.append((key, draw(st.one_of(st.just(parent[key]), REPLACEMENTS))))
            parent_of_parent = _parent(work, path[:-1]) if len(path) > 1 else None
            if parent_of_parent is None:
                work = Pairs(items)
            else:
                parent_of_parent[path[-2]] = Pairs(items)
        else:
            continue
        changed = True
    text = dump(work)
    if changed:
        # An edit the strict reader reads as the original document changed nothing (compared
        # as canonical bytes: in Python 0 == False).
        try:
            changed = canonical_bytes(parse_json(text)) != canonical_bytes(doc)
        except InputError:
            changed = True
    return text, changed
