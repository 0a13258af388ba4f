"""Redaction of arguments and results; results come from a real MCP SDK server (in process)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from mcp.server.mcpserver import Audio, Image, MCPServer
from pydantic import BaseModel

from cmcp_sidecar.policy import MARKER, redact_arguments, redact_result
from cmcp_verifier.obligations import RedactionPlan, obligations_of
from mcp import types

SSN = "123-45-6789"


def plan(arguments: str = "", result: str = "") -> RedactionPlan:
    annotations = {}
    if arguments:
        annotations["redact_arguments"] = arguments
    if result:
        annotations["redact_result"] = result
    return obligations_of("permit", annotations)


ARGS: dict[str, Any] = {
    "ssn": SSN,
    "name": "Ann",
    "card": {"number": "4111", "expiry": "01/30"},
    "contacts": [{"ssn": "1", "name": "a"}, {"ssn": "2", "name": "b"}],
    "deep": {"a": {"b": {"ssn": "3", "c": [{"ssn": "4"}]}}},
    "note": f"my ssn is {SSN}, again {SSN}",
    "count": 3,
}


@pytest.mark.parametrize(
    ("selectors", "expect", "count"),
    [
        ("ssn", {"ssn": MARKER}, 1),
        ("card.number", {"card": {"number": MARKER, "expiry": "01/30"}}, 1),
        ("card", {"card": MARKER}, 1),  # a whole object becomes the marker
        ("count", {"count": MARKER}, 1),  # whatever the type
        (
            "contacts.ssn",
            {"contacts": [{"ssn": MARKER, "name": "a"}, {"ssn": MARKER, "name": "b"}]},
            2,
        ),
        (
            "contacts.1.ssn",
            {"contacts": [{"ssn": "1", "name": "a"}, {"ssn": MARKER, "name": "b"}]},
            1,
        ),
        (
            "contacts.*.name",
            {"contacts": [{"ssn": "1", "name": MARKER}, {"ssn": "2", "name": MARKER}]},
            2,
        ),
        ("deep.*.b.ssn", {"deep": {"a": {"b": {"ssn": MARKER, "c": [{"ssn": "4"}]}}}}, 1),
        ("missing, card.missing, contacts.9.ssn", {}, 0),
    ],
)
def test_argument_paths(selectors: str, expect: dict[str, Any], count: int) -> None:
    original = copy.deepcopy(ARGS)
    out = redact_arguments(ARGS, plan(arguments=selectors))
    assert out.value == {**ARGS, **expect}
    assert out.replaced == count
    assert original == ARGS  # the input is never mutated


def test_recursive_descent_reaches_every_depth() -> None:
    out = redact_arguments(ARGS, plan(arguments="**.ssn")).value
    assert out["ssn"] == MARKER
    assert [c["ssn"] for c in out["contacts"]] == [MARKER, MARKER]
    assert out["deep"]["a"]["b"]["ssn"] == MARKER
    assert out["deep"]["a"]["b"]["c"][0]["ssn"] == MARKER
    assert out["name"] == "Ann" and out["card"] is ARGS["card"]  # untouched subtrees are shared


def test_argument_patterns_reach_every_string() -> None:
    out = redact_arguments(ARGS, plan(arguments="regex:\\d{3}-\\d{2}-\\d{4}"))
    assert out.value["ssn"] == MARKER
    assert out.value["note"] == f"my ssn is {MARKER}, again {MARKER}"
    assert out.replaced == 3


def test_empty_plan_returns_the_input() -> None:
    assert redact_arguments(ARGS, RedactionPlan()).value is ARGS
    assert redact_result({"content": []}, plan(arguments="ssn")).replaced == 0


def test_too_deep_data_is_redacted_whole() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    out = redact_arguments({"d": deep}, plan(arguments="**.zzz"))
    node = out.value["d"]
    while isinstance(node, dict):
        node = node["a"]
    assert node == MARKER


# --- results produced by a real MCP SDK server -----------------------------------------------


class Kid(BaseModel):
    ssn: str


class Person(BaseModel):
    name: str
    ssn: str
    kids: list[Kid]


server = MCPServer("crm")


@server.tool()
def person(email: str) -> Person:
    """A person with structured output (mirrored as JSON text by the SDK)."""
    return Person(name="Ann", ssn=SSN, kids=[Kid(ssn="111-22-3333")])


@server.tool(structured_output=False)
def mixed() -> list[Any]:
    """Every content type."""
    return [
        Image(data=f"{SSN} png".encode(), format="png"),
        Audio(data=SSN.encode(), format="wav"),
        f"ssn {SSN}",
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="file:///a", text=f"id {SSN}", mime_type="text/plain"
            ),
        ),
        types.EmbeddedResource(
            type="resource",
            resource=types.BlobResourceContents(
                uri="file:///b", blob=base64.b64encode(SSN.encode()).decode()
            ),
        ),
        types.ResourceLink(type="resource_link", uri=f"file:///{SSN}", name=SSN),
    ]


async def call(name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await server.call_tool(name, args or {})
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")


async def test_structured_content_and_its_json_text_mirror() -> None:
    result = await call("person", {"email": "a@b"})
    frozen = json.dumps(result)
    out = redact_result(result, plan(result="**.ssn"))
    assert out.value["structuredContent"] == {
        "name": "Ann",
        "ssn": MARKER,
        "kids": [{"ssn": MARKER}],
    }
    assert json.loads(out.value["content"][0]["text"]) == out.value["structuredContent"]
    assert out.replaced == 4
    assert json.dumps(result) == frozen  # the input is never mutated


async def test_result_field_paths_leave_other_text_alone() -> None:
    result = await call("mixed")
    out = redact_result(result, plan(result="ssn"))
    assert out.value == result and out.replaced == 0


async def test_patterns_reach_text_and_embedded_text_only() -> None:
    result = await call("mixed")
    out = redact_result(result, plan(result="regex:\\d{3}-\\d{2}-\\d{4}")).value
    image, audio, text, embedded, blob, link = out["content"]
    assert text == {"type": "text", "text": f"ssn {MARKER}"}
    assert embedded["resource"]["text"] == f"id {MARKER}"
    assert (image, audio, blob, link) == tuple(result["content"][i] for i in (0, 1, 4, 5))
    assert link["uri"] == f"file:///{SSN}"  # links are left alone


def test_error_results_are_redacted_too() -> None:
    result = types.CallToolResult(
        content=[types.TextContent(type="text", text=f"no such person {SSN}")], is_error=True
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert result["isError"] is True
    out = redact_result(result, plan(result="regex:\\d{3}-\\d{2}-\\d{4}"))
    assert SSN not in json.dumps(out.value) and out.replaced == 1


def test_resource_contents_and_prompt_messages() -> None:
    read = types.ReadResourceResult(
        contents=[
            types.TextResourceContents(uri="file:///n", text=f"ssn {SSN}"),
            types.BlobResourceContents(uri="file:///b", blob="MTIzLTQ1LTY3ODk="),
        ]
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    out = redact_result(read, plan(result="regex:\\d{3}-\\d{2}-\\d{4}")).value
    assert out["contents"][0]["text"] == f"ssn {MARKER}"
    assert out["contents"][1] == read["contents"][1]
    prompt = types.GetPromptResult(
        messages=[
            types.PromptMessage(
                role="user", content=types.TextContent(type="text", text=f"x {SSN}")
            )
        ]
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    out = redact_result(prompt, plan(result="regex:\\d{3}-\\d{2}-\\d{4}")).value
    assert out["messages"][0]["content"]["text"] == f"x {MARKER}"


def test_malformed_results_are_left_as_they_are() -> None:
    odd = {"content": "nope", "structuredContent": 5, "contents": {"x": 1}, "messages": [1, {}]}
    assert redact_result(odd, plan(result="ssn, regex:\\d")).value == odd
