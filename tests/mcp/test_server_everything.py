"""The SDK client through the gateway against @modelcontextprotocol/server-everything (npm).

server-everything (TypeScript SDK 1.x) speaks the session-based revisions only, so a dual-era
client in ``auto`` mode must be told so by the gateway and fall back to initialize, exactly as
it would talking to server-everything directly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import mcp_types as types
import pytest

from cmcp_sidecar.cli import main
from cmcp_verifier.catalog import parse_catalog
from mcp import Client

from .peers import running_gateway, server_everything, transport
from .test_sdk_through_gateway import elicit, sample

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def everything() -> Any:
    with server_everything() as url:
        yield url


def client(url: str, mode: str = "legacy", **kw: Any) -> Client:
    return Client(
        transport(url), mode=mode, elicitation_callback=elicit, sampling_callback=sample, **kw
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools(everything: str, mode: str) -> None:
    async with running_gateway(everything) as gw, client(gw.url, mode) as c:
        assert c.protocol_version == "2025-11-25"  # auto fell back: the upstream is session-based
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"echo", "get-sum", "get-tiny-image", "trigger-sampling-request"} <= names
        echoed = await c.call_tool("echo", {"message": "über"})
        assert "über" in echoed.content[0].text  # type: ignore[union-attr]
        summed = await c.call_tool("get-sum", {"a": 2, "b": 3})
        assert "5" in summed.content[0].text  # type: ignore[union-attr]
        image = [
            b
            for b in (await c.call_tool("get-tiny-image", {})).content
            if isinstance(b, types.ImageContent)
        ]
        assert image and base64.b64decode(image[0].data).startswith(b"\x89PNG")
        structured = await c.call_tool("get-structured-content", {"location": "New York"})
        assert structured.structured_content is not None
        links = await c.call_tool("get-resource-links", {"count": 2})
        assert sum(isinstance(b, types.ResourceLink) for b in links.content) == 2


async def test_progress_sampling_elicitation(everything: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with running_gateway(everything) as gw, client(gw.url) as c:
        done = await c.call_tool(
            "trigger-long-running-operation",
            {"duration": 1, "steps": 4},
            progress_callback=on_progress,
        )
        assert "completed" in done.content[0].text.lower()  # type: ignore[union-attr]
        assert len(progress) == 4
        sampled = await c.call_tool(
            "trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}
        )
        assert "hi from the LLM" in json.dumps(sampled.model_dump(mode="json"))
        elicited = await c.call_tool("trigger-elicitation-request", {})
        assert not elicited.is_error


async def test_resources_prompts_completion_subscribe(everything: str) -> None:
    updates: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message)

    async with running_gateway(everything) as gw, client(gw.url, message_handler=on_message) as c:
        resources = (await c.list_resources()).resources
        assert resources
        first = str(resources[0].uri)
        read = await c.read_resource(first)
        assert read.contents and str(read.contents[0].uri) == first
        templates = (await c.list_resource_templates()).resource_templates
        assert any("dynamic" in t.uri_template for t in templates)
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert {"simple-prompt", "args-prompt", "completable-prompt"} <= prompts
        got = await c.get_prompt("args-prompt", {"city": "Paris", "state": "TX"})
        assert got.messages
        done = await c.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "department", "value": "Eng"},
        )
        assert done.completion.values == ["Engineering"]
        await c.subscribe_resource(first)  # type: ignore[deprecated]
        await c.call_tool("toggle-subscriber-updates", {})
        with anyio.fail_after(20):
            while not updates:
                await anyio.sleep(0.1)
        await c.call_tool("toggle-subscriber-updates", {})


def test_catalog_pin_unlocks_conditional_tools(
    everything: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Declaring every client capability makes server-everything offer all its tools."""
    assert main(["catalog", "pin", "--upstream", everything, "--name", "everything"]) == 0
    catalog = parse_catalog(capsys.readouterr().out)
    names = {name for _, name in catalog.entries}
    conditional = {
        "trigger-elicitation-request-async",
        "trigger-sampling-request-async",
        "trigger-url-elicitation",
        "get-roots-list",
        "trigger-elicitation-request",
    }
    assert conditional <= names, conditional - names
