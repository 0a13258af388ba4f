"""The redaction annotation language and the Cedar-safe context values."""

from __future__ import annotations

import pytest

from cmcp_verifier.cedar_contract import ContextError, cedar_value, normalize_annotations
from cmcp_verifier.obligations import (
    FieldPath,
    ObligationError,
    RedactionPlan,
    Selectors,
    obligations_of,
    parse_selectors,
)


def test_selectors_parse_paths_and_a_trailing_pattern() -> None:
    parsed = parse_selectors(" ssn, card.number ,items.*.id, **.secret, regex:\\d{3,4}|a,b")
    assert parsed.paths == (
        FieldPath(("ssn",)),
        FieldPath(("card", "number")),
        FieldPath(("items", "*", "id")),
        FieldPath(("**", "secret")),
    )
    assert parsed.patterns == ("\\d{3,4}|a,b",)  # the pattern runs to the end, commas included
    assert parse_selectors("regex:x").paths == ()
    assert parse_selectors("a, a").paths == (FieldPath(("a",)),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty selector"),
        ("a,,b", "empty selector"),
        ("a b", "bad field selector 'a b'"),
        ("a..b", "bad field selector 'a..b'"),
        ("a.**", "cannot end with **"),
        ("ssn regex:x", "'regex:' must start a selector"),
        ("regex:", "regex: needs a pattern"),
        ("regex:(", "invalid regular expression"),
        ("regex:a*", "matches the empty string"),
        ("regex:" + "a" * 1025, "longer than 1024"),
        (",".join(f"f{i}" for i in range(65)), "more than 64 selectors"),
    ],
)
def test_ill_formed_selectors_are_rejected(value: str, message: str) -> None:
    with pytest.raises(ObligationError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_selectors(value)


def test_obligations_of_a_policy() -> None:
    plan = obligations_of(
        "permit",
        {"id": "x", "redact_arguments": "ssn", "redact_result": "regex:\\d+", "note": "n"},
    )
    assert plan == RedactionPlan(
        arguments=Selectors(paths=(FieldPath(("ssn",)),)), result=Selectors(patterns=("\\d+",))
    )
    assert plan.to_json() == {"arguments": ["ssn"], "result": ["regex:\\d+"]}
    assert not obligations_of("forbid", {"id": "x", "reason": "y"})


@pytest.mark.parametrize(
    ("effect", "annotations", "annotation"),
    [
        ("permit", {"redact_args": "ssn"}, "redact_args"),
        ("permit", {"redaction": "ssn"}, "redaction"),
        ("forbid", {"redact_result": "ssn"}, "redact_result"),
        ("permit", {"redact_result": ""}, "redact_result"),
    ],
)
def test_bad_obligation_annotations_name_the_annotation(
    effect: str, annotations: dict[str, str], annotation: str
) -> None:
    with pytest.raises(ObligationError) as info:
        obligations_of(effect, annotations)
    assert info.value.annotation == annotation
    assert f"@{annotation}" in str(info.value)


def test_plans_union_without_duplicates() -> None:
    a = obligations_of("permit", {"redact_arguments": "ssn, regex:x"})
    b = obligations_of("permit", {"redact_arguments": "card, ssn", "redact_result": "z"})
    union = a.union(b)
    assert union.arguments.describe() == ["ssn", "card", "regex:x"]
    assert union.result.describe() == ["z"]


def test_cedar_values_keep_meaning_or_fail() -> None:
    assert cedar_value({"a": 1.5, "b": None, "c": [1, None, 2.0], "d": 2**70, "e": True}) == {
        "a": "1.5",
        "c": [1, "2.0"],
        "d": str(2**70),
        "e": True,
    }
    for bad in ({"x": {"__entity": {"type": "Agent", "id": "admin"}}}, {"__extn": 1}):
        with pytest.raises(ContextError, match="reserved key"):
            cedar_value(bad)
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(ContextError, match="deeper"):
        cedar_value(deep)
    with pytest.raises(ContextError, match="not JSON"):
        cedar_value({"x": object()})


def test_tool_annotations_take_mcp_defaults() -> None:
    assert normalize_annotations(None) == {
        "readOnlyHint": False,
        "destructiveHint": True,
        "idempotentHint": False,
        "openWorldHint": True,
        "title": "",
    }
    read_only = normalize_annotations({"readOnlyHint": True, "title": "T"})
    assert read_only["destructiveHint"] is False and read_only["title"] == "T"
    assert normalize_annotations({"destructiveHint": "no"})["destructiveHint"] is True
    explicit = normalize_annotations({"readOnlyHint": True, "destructiveHint": True})
    assert explicit["destructiveHint"] is True
