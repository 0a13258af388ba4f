"""A reference server for the MCP conformance suite's server scenarios (Python SDK).

The suite (``@modelcontextprotocol/conformance``) states what a server must offer for each
scenario (``test_simple_text``, ``test://static-text``, ``test_simple_prompt`` …); this
server implements those requirements with the official SDK so the suite can be run against it
directly and through the gateway, and the two result tables compared.

Run: ``python -m tests.servers.conformance_server --port N``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    AudioContent,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

from .sdk_server import PNG_1X1, MemoryEventStore

PNG_B64 = base64.b64encode(PNG_1X1).decode()
# A minimal WAV file: RIFF header, 8 kHz mono 8-bit PCM, two samples of silence.
WAV_B64 = base64.b64encode(
    b"RIFF\x26\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x40\x1f\x00\x00"
    b"\x01\x00\x08\x00data\x02\x00\x00\x00\x80\x80"
).decode()
SUBSCRIBED: set[str] = set()


def build() -> MCPServer:
    mcp = MCPServer("cmcp-conformance-reference", version="1.0.0")

    @mcp.tool(description="Returns simple text")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @mcp.tool(description="Returns an image")
    def test_image_content() -> list[ImageContent]:
        return [ImageContent(type="image", data=PNG_B64, mime_type="image/png")]

    @mcp.tool(description="Returns audio")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]

    @mcp.tool(description="Returns an embedded resource")
    def test_embedded_resource() -> list[EmbeddedResource]:
        resource = TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return [EmbeddedResource(type="resource", resource=resource)]

    @mcp.tool(description="Returns several content types")
    def test_multiple_content_types() -> list[Any]:
        resource = TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text='{"test":"data","value":123}',
        )
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ]

    @mcp.tool(description="Logs while it runs")
    async def test_tool_with_logging(ctx: Context) -> str:
        await ctx.info("Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.info("Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @mcp.tool(description="Always fails")
    def test_error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")

    @mcp.tool(description="Reports progress")
    async def test_tool_with_progress(ctx: Context) -> str:
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100)
            if step < 100:
                await asyncio.sleep(0.05)
        return "Tool with progress executed successfully"

    @mcp.tool(description="Samples the client's LLM")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
        reply = await ctx.session.create_message(
            [message], max_tokens=100, related_request_id=ctx.request_id
        )
        text = reply.content.text if isinstance(reply.content, TextContent) else str(reply.content)
        return f"LLM response: {text}"

    @mcp.tool(description="Asks the user")
    async def test_elicitation(message: str, ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await ctx.session.elicit(message, schema, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool(description="Asks with defaults for every primitive type")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {
                    "type": "string",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "default": True},
            },
        }
        result = await ctx.session.elicit(
            "Please review your information", schema, related_request_id=ctx.request_id
        )
        return (
            f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"
        )

    @mcp.tool(description="Asks with every enum variant")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
        }
        result = await ctx.session.elicit(
            "Choose your options", schema, related_request_id=ctx.request_id
        )
        return (
            f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"
        )

    @mcp.tool(description="Closes its SSE stream mid-call; the client resumes (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        await asyncio.sleep(0.1)
        await ctx.close_sse_stream()
        await asyncio.sleep(0.3)
        return "Reconnection test completed"

    @mcp.tool(name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
    def json_schema_tool(name: str = "", address: dict[str, str] | None = None) -> str:
        return f"ok {name}"

    # The suite checks that 2020-12 keywords survive listing, so list exactly its schema.
    registered = mcp._tool_manager.get_tool("json_schema_2020_12_tool")
    assert registered is not None
    registered.parameters = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }

    @mcp.resource(
        "test://static-text", mime_type="text/plain", description="A static text resource"
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary", mime_type="image/png", description="A static binary resource"
    )
    def static_binary() -> bytes:
        return PNG_1X1

    @mcp.resource(
        "test://watched-resource", mime_type="text/plain", description="A resource to subscribe to"
    )
    def watched() -> str:
        return "watched"

    @mcp.resource(
        "test://template/{id}/data", mime_type="application/json", description="Data by id"
    )
    def template(id: str) -> str:
        return json.dumps(
            {"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":")
        )

    @mcp.prompt(description="A simple prompt")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @mcp.prompt(description="A prompt with arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @mcp.prompt(description="A prompt embedding a resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        resource = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content="Please process the embedded resource above."),
        ]

    @mcp.prompt(description="A prompt with an image")
    def test_prompt_with_image() -> list[Message]:
        return [
            UserMessage(content=ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage(content="Please analyze the image above."),
        ]

    @mcp.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        values = [v for v in ("paris", "park", "party") if v.startswith(argument.value)]
        return Completion(values=values, total=len(values), has_more=False)

    low = mcp._lowlevel_server

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        SUBSCRIBED.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        SUBSCRIBED.discard(str(params.uri))
        return EmptyResult()

    low.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    mcp = build()
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    app = mcp.streamable_http_app(
        event_store=MemoryEventStore(), retry_interval=500, transport_security=security
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
