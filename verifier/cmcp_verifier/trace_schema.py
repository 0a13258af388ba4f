"""Validation of TRACE v0.2 records against the published JSON schema.

The schema file ships unmodified (see data/README.md). This module interprets the subset of
JSON Schema 2020-12 that the schema uses (type, properties, required, additionalProperties,
enum, const, pattern, minimum, maximum, minLength, items, allOf, anyOf, not, if/then/else,
local $ref), so the verifier needs no jsonschema dependency. ``format`` is an annotation, as
in the reference validator. The test suite checks agreement with ``jsonschema``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

Schema = dict[str, Any] | bool


@cache
def trace_v02_schema() -> dict[str, Any]:
    """The TRACE v0.2 schema as shipped."""
    text = resources.files("cmcp_verifier").joinpath("data/trace-v0.2.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    return isinstance(value, {"string": str, "array": list, "object": dict}[name])


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def errors(self, value: Any, schema: Schema, path: str) -> list[str]:
        if schema is True:
            return []
        if schema is False:
            return [f"{path}: not allowed"]
        out: list[str] = []
        for keyword, handler in _HANDLERS.items():
            if keyword in schema:
                out.extend(handler(self, value, schema, path))
                if out and keyword in ("$ref", "type"):
                    break
        return out

    def valid(self, value: Any, schema: Schema, path: str) -> bool:
        return not self.errors(value, schema, path)

    def resolve(self, ref: str) -> Schema:
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node  # type: ignore[no-any-return]


def _ref(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    return v.errors(value, v.resolve(schema["$ref"]), path)


def _type(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(_type_ok(value, n) for n in names):
        return []
    return [f"{path}: expected {' or '.join(names)}"]


def _enum(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    ok = any(_same(value, c) for c in schema["enum"])
    return [] if ok else [f"{path}: must be one of {schema['enum']}"]


def _const(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    return [] if _same(value, schema["const"]) else [f"{path}: must be {schema['const']!r}"]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _pattern(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if isinstance(value, str) and not _regex(schema["pattern"]).search(value):
        return [f"{path}: does not match {schema['pattern']}"]
    return []


def _minimum(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if _type_ok(value, "number") and value < schema["minimum"]:
        return [f"{path}: below minimum {schema['minimum']}"]
    return []


def _maximum(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if _type_ok(value, "number") and value > schema["maximum"]:
        return [f"{path}: above maximum {schema['maximum']}"]
    return []


def _min_length(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if isinstance(value, str) and len(value) < schema["minLength"]:
        return [f"{path}: shorter than {schema['minLength']}"]
    return []


def _required(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [f"{path}: missing required member {k!r}" for k in schema["required"] if k not in value]


def _properties(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    out: list[str] = []
    for key, sub in schema["properties"].items():
        if key in value:
            out.extend(v.errors(value[key], sub, f"{path}.{key}"))
    return out


def _additional(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    known = schema.get("properties", {})
    out: list[str] = []
    for key in value:
        if key in known:
            continue
        if schema["additionalProperties"] is False:
            out.append(f"{path}: unexpected member {key!r}")
        else:
            out.extend(v.errors(value[key], schema["additionalProperties"], f"{path}.{key}"))
    return out


def _items(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        out.extend(v.errors(item, schema["items"], f"{path}[{i}]"))
    return out


def _all_of(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for sub in schema["allOf"]:
        out.extend(v.errors(value, sub, path))
    return out


def _any_of(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    if any(v.valid(value, sub, path) for sub in schema["anyOf"]):
        return []
    return [f"{path}: matches none of the allowed forms"]


def _not(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    return (
        [f"{path}: has a form that is not allowed"] if v.valid(value, schema["not"], path) else []
    )


def _if(v: _Validator, value: Any, schema: dict[str, Any], path: str) -> list[str]:
    branch = "then" if v.valid(value, schema["if"], path) else "else"
    return v.errors(value, schema[branch], path) if branch in schema else []


_HANDLERS = {
    "$ref": _ref,
    "type": _type,
    "enum": _enum,
    "const": _const,
    "pattern": _pattern,
    "minimum": _minimum,
    "maximum": _maximum,
    "minLength": _min_length,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional,
    "items": _items,
    "allOf": _all_of,
    "anyOf": _any_of,
    "not": _not,
    "if": _if,
}


def trace_record_errors(record: Any) -> list[str]:
    """Every way ``record`` fails the TRACE v0.2 schema (empty list when it is valid)."""
    schema = trace_v02_schema()
    return _Validator(schema).errors(record, schema, "trace")
