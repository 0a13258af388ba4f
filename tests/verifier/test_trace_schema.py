"""The verifier's TRACE schema interpreter agrees with the reference jsonschema validator."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcp_verifier.trace_schema import trace_record_errors, trace_v02_schema

from .claimfactory import make_claim

VALIDATOR = jsonschema.Draft202012Validator(trace_v02_schema())


def _record() -> dict[str, Any]:
    claim, _ = make_claim()
    return claim["trace"]


def test_valid_record() -> None:
    record = _record()
    assert trace_record_errors(record) == []
    assert VALIDATOR.is_valid(record)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
paths = st.lists(
    st.sampled_from(
        [
            "runtime",
            "policy",
            "cnf",
            "jwk",
            "model",
            "appraisal",
            "build_provenance",
            "tool_transcript",
            "platform",
            "iat",
            "subject",
            "kty",
            "x",
            "d",
            "status",
            "method",
            "re_execution",
            "origin",
            "kind",
            "references",
            "eat_profile",
            "enforcement_mode",
        ]
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(paths, json_values)
def test_agrees_with_jsonschema_on_mutations(path: list[str], value: Any) -> None:
    record = copy.deepcopy(_record())
    node: Any = record
    for key in path[:-1]:
        if not isinstance(node, dict):
            break
        node = node.setdefault(key, {})
    if isinstance(node, dict):
        node[path[-1]] = value
    assert (trace_record_errors(record) == []) == VALIDATOR.is_valid(record)
