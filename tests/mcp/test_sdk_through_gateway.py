"""The official MCP Python SDK client, through the gateway, against a Python SDK server.

Both protocol eras: ``legacy`` (initialize, Mcp-Session-Id, server→client requests) and
``2026-07-28`` (stateless, per-request _meta, input-required results). Everything a real
client uses must pass through unchanged: tools (text, structured, image, resource link,
errors), progress and log notifications, resources, prompts, completion, elicitation,
sampling, and bodies of several MiB both ways.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
import mcp_types as types
import pytest

from cmcp_sidecar.mcp.intercept import PassThrough
from mcp import Client

from .peers import running_gateway, sdk_server, transport

ERAS = ["legacy", "2026-07-28"]
BIG = 5 * 1024 * 1024  # > 4 MiB
LIMITS = {"max_request_size_bytes": 16 * 1024 * 1024, "max_response_size_bytes": 16 * 1024 * 1024}


@pytest.fixture(scope="module")
def server_url() -> Any:
    with sdk_server() as url:
        yield url


async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"confirm": True})


async def sample(
    context: Any, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="hi from the LLM"),
        model="test-llm",
    )


def client(url: str, mode: str, **kw: Any) -> Client:
    return Client(
        transport(url), mode=mode, elicitation_callback=elicit, sampling_callback=sample, **kw
    )


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_of_every_content_kind(server_url: str, mode: str) -> None:
    async with running_gateway(server_url) as gw, client(gw.url, mode) as c:
        assert c.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"echo", "add", "image", "link", "progress", "confirm", "ask"} <= names

        echoed = await c.call_tool("echo", {"text": "héllo ✓"})
        assert echoed.content[0].text == "héllo ✓"  # type: ignore[union-attr]

        added = await c.call_tool("add", {"a": 2, "b": 40})
        assert added.structured_content == {"a": 2, "b": 40, "total": 42}

        image = (await c.call_tool("image", {})).content[0]
        assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
        assert base64.b64decode(image.data).startswith(b"\x89PNG")

        link = (await c.call_tool("link", {})).content[0]
        assert isinstance(link, types.ResourceLink) and link.uri == "res://greeting"

        failed = await c.call_tool("fail", {})
        assert failed.is_error and "tool fail" in failed.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ERAS)
async def test_progress_notifications_pass(server_url: str, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with running_gateway(server_url) as gw, client(gw.url, mode) as c:
        result = await c.call_tool("progress", {"steps": 4}, progress_callback=on_progress)
    assert result.content[0].text == "done 4"  # type: ignore[union-attr]
    assert [p for p, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][2] == "step 4"


@pytest.mark.parametrize("mode", ERAS)
async def test_resources_prompts_and_completion(server_url: str, mode: str) -> None:
    async with running_gateway(server_url) as gw, client(gw.url, mode) as c:
        resources = await c.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["res://greeting"]
        templates = await c.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["res://item/{item_id}"]
        read = await c.read_resource("res://greeting")
        assert read.contents[0].text == "hello from the resource"  # type: ignore[union-attr]
        item = await c.read_resource("res://item/42")
        assert item.contents[0].text == '{"id": "42"}'  # type: ignore[union-attr]

        prompts = await c.list_prompts()
        assert [p.name for p in prompts.prompts] == ["greet"]
        prompt = await c.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]

        done = await c.complete(
            types.PromptReference(type="ref/prompt", name="greet"), {"name": "name", "value": "al"}
        )
        assert done.completion.values == ["alice", "albert"]


async def test_listen_stream_2026(server_url: str) -> None:
    """subscriptions/listen: acknowledged, then change notifications as they happen."""
    async with (
        running_gateway(server_url) as gw,
        client(gw.url, "2026-07-28") as c,
        c.listen(tools_list_changed=True, resource_subscriptions=["res://greeting"]) as sub,
    ):
        assert sub.honored is not None and sub.honored.tools_list_changed
        await c.call_tool("touch", {"uri": "res://greeting"})
        seen: set[str] = set()
        with anyio.fail_after(10):
            async for event in sub:
                seen.add(type(event).__name__)
                if seen >= {"ResourceUpdated", "ToolsListChanged"}:
                    break


@pytest.mark.parametrize("mode", ERAS)
async def test_elicitation_and_sampling(server_url: str, mode: str) -> None:
    """Server→client requests (2025) and input-required results (2026-07-28) round-trip."""
    async with running_gateway(server_url) as gw, client(gw.url, mode) as c:
        confirmed = await c.call_tool("confirm", {})
        assert confirmed.content[0].text == "confirmed"  # type: ignore[union-attr]
        asked = await c.call_tool("ask", {})
        assert asked.content[0].text == "hi from the LLM"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ERAS)
async def test_large_bodies_both_ways(server_url: str, mode: str) -> None:
    async with running_gateway(server_url, **LIMITS) as gw, client(gw.url, mode) as c:
        result = await c.call_tool("big", {"size": BIG})
        assert len(result.content[0].text) == BIG  # type: ignore[union-attr]
        measured = await c.call_tool("measure", {"data": "y" * BIG})
        assert measured.structured_content == {"result": BIG}


async def test_log_notifications_session_era(server_url: str) -> None:
    logged: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params.data)

    async with (
        running_gateway(server_url) as gw,
        client(gw.url, "legacy", logging_callback=on_log) as c,
    ):
        await c.call_tool("shout", {"text": "look at me"})
    assert logged == ["look at me"]


async def test_session_ends_on_delete(server_url: str) -> None:
    """Leaving the client sends DELETE; the gateway ends the session and its upstream session."""
    ended: list[Any] = []

    class Ends(PassThrough):
        async def session_ended(self, end: Any) -> None:
            ended.append(end)

    async with running_gateway(server_url, interceptor=Ends()) as gw:
        async with client(gw.url, "legacy") as c:
            await c.call_tool("echo", {"text": "x"})
            assert len(gw.gateway.sessions) == 1
        assert len(gw.gateway.sessions) == 0
    assert [e.reason for e in ended] == ["delete"]
