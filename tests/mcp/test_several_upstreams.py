"""Several upstreams behind one gateway: merged lists, prefixed names, routing, id rewriting."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from cmcp_sidecar.mcp.intercept import OpKind
from cmcp_verifier.errors import ConfigError
from mcp import Client

from .doubles import Recorder
from .peers import running_gateway, sdk_server, transport
from .test_sdk_through_gateway import ERAS, elicit, sample


@pytest.fixture(scope="module")
def two_servers() -> Any:
    with sdk_server() as a, sdk_server() as b:
        yield a, b


def ups(a: str, b: str) -> list[dict[str, Any]]:
    return [{"name": "alpha", "url": a}, {"name": "beta", "url": b, "prefix": "b"}]


async def state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url.replace("/mcp", "/state")) as resp:
        return dict(await resp.json())


async def all_pages(c: Client, method: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await getattr(c, method)(cursor=cursor)
        items.extend(getattr(page, {"list_tools": "tools", "list_prompts": "prompts"}[method]))
        cursor = page.next_cursor
        if not cursor:
            return items


@pytest.mark.parametrize("mode", ERAS)
async def test_merged_names_and_routing(two_servers: tuple[str, str], mode: str) -> None:
    a, b = two_servers
    rec = Recorder()
    async with (
        running_gateway(ups(a, b), interceptor=rec) as gw,
        Client(
            transport(gw.url), mode=mode, elicitation_callback=elicit, sampling_callback=sample
        ) as c,
    ):
        if mode == "legacy":
            assert c.server_info is not None and c.server_info.name == "cmcp-gateway"
        tools = [t.name for t in await all_pages(c, "list_tools")]
        assert "echo" in tools and "b.echo" in tools and len(tools) == len(set(tools))
        assert sum(1 for t in tools if t.startswith("b.")) == len(tools) // 2

        marker = f"routed-{mode}"
        assert (await c.call_tool("b.echo", {"text": marker})).content[0].text == marker  # type: ignore[union-attr]
        assert any(s.get("text") == marker for s in (await state(b))["seen_arguments"])
        assert not any(s.get("text") == marker for s in (await state(a))["seen_arguments"])

        # Server→client requests from the second upstream reach the agent and find their way back.
        assert (await c.call_tool("b.confirm", {})).content[0].text == "confirmed"  # type: ignore[union-attr]
        assert (await c.call_tool("confirm", {})).content[0].text == "confirmed"  # type: ignore[union-attr]
        relayed = [op for op in rec.admitted if op.kind is OpKind.SERVER_REQUEST]
        if mode == "legacy":  # standalone elicitation requests, each admitted and answered
            assert [(op.upstream, op.method) for op in relayed] == [
                ("beta", "elicitation/create"),
                ("alpha", "elicitation/create"),
            ]
            assert len([r for op, r in rec.completed if op.kind is OpKind.SERVER_REQUEST]) == 2
        else:  # 2026-07-28: input-required results, no server→client requests at all
            assert relayed == []

        prompts = [p.name for p in await all_pages(c, "list_prompts")]
        assert sorted(prompts) == ["b.greet", "greet"]
        got = await c.get_prompt("b.greet", {"name": "Grace"})
        assert "Grace" in got.messages[0].content.text  # type: ignore[union-attr]
        done = await c.complete(
            types.PromptReference(type="ref/prompt", name="b.greet"), {"name": "name", "value": "b"}
        )
        assert done.completion.values == ["bob"]

        with pytest.raises(MCPError, match="several upstreams"):
            await c.read_resource("res://greeting")  # both offer it: the gateway never guesses


async def test_unprefixed_collision_refuses_to_start(two_servers: tuple[str, str]) -> None:
    a, b = two_servers
    with pytest.raises(ConfigError, match="offered by upstreams alpha, beta"):
        async with running_gateway([{"name": "alpha", "url": a}, {"name": "beta", "url": b}]):
            pass


async def test_discover_is_merged(two_servers: tuple[str, str]) -> None:
    a, b = two_servers
    async with running_gateway(ups(a, b)) as gw, Client(transport(gw.url), mode="auto") as c:
        assert c.protocol_version == "2026-07-28"
        assert c.server_capabilities.tools is not None and c.server_capabilities.prompts is not None


async def test_listen_merges_the_upstreams_streams(two_servers: tuple[str, str]) -> None:
    """subscriptions/listen over two upstreams: one acknowledgement, events from both."""
    a, b = two_servers
    async with (
        running_gateway(ups(a, b)) as gw,
        Client(transport(gw.url), mode="2026-07-28") as c,
        c.listen(tools_list_changed=True, resource_subscriptions=["res://item/1"]) as sub,
    ):
        assert sub.honored is not None and sub.honored.tools_list_changed
        await c.call_tool("b.touch", {"uri": "res://item/1"})
        await c.call_tool("touch", {"uri": "res://item/1"})
        kinds: list[str] = []
        with anyio.fail_after(10):
            async for event in sub:
                kinds.append(type(event).__name__)
                if kinds.count("ResourceUpdated") >= 1 and "ToolsListChanged" in kinds:
                    break
