"""Small parts: the work queue, selectors, placement, conditions, the probe."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest

from cmcp_operator.conditions import Cond, merge
from cmcp_operator.models import LabelSelector
from cmcp_operator.placement import DEFAULT_TEE_LABELS, combine_terms, load_tee_labels, node_terms
from cmcp_operator.selectors import matches
from cmcp_operator.workqueue import Requeue, WorkQueue
from cmcp_sidecar import probe
from cmcp_verifier.errors import ConfigError


async def test_queue_dedups_serialises_and_retries() -> None:
    seen: list[str] = []
    running: set[str] = set()
    failures = {"flaky": 2}

    async def handler(key: str) -> None:
        assert key not in running, "a key never runs twice at once"
        running.add(key)
        await asyncio.sleep(0.01)
        seen.append(key)
        running.discard(key)
        if failures.get(key):
            failures[key] -= 1
            raise RuntimeError("transient")
        if key == "again":
            failures["again-done"] = failures.get("again-done", 0) + 1
            if failures["again-done"] == 1:
                raise Requeue(0.01)

    q = WorkQueue(handler, workers=4, base_delay=0.01)
    q.start()
    for _ in range(50):
        q.add("a")
    q.add("flaky")
    q.add("again")
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (q.idle and len(q) == 0 and "again" in seen[1:]) or seen.count("again") == 2:
            break
    await asyncio.sleep(0.1)
    await q.stop()
    assert seen.count("a") <= 2  # 50 adds, one or two runs
    assert seen.count("flaky") == 3  # two failures, then success
    assert seen.count("again") == 2


async def test_delayed_adds_are_debounced() -> None:
    seen: list[str] = []

    async def handler(key: str) -> None:
        seen.append(key)

    q = WorkQueue(handler, workers=1)
    q.start()
    for _ in range(20):
        q.add("status", 0.05)
    await asyncio.sleep(0.3)
    await q.stop()
    assert seen == ["status"]


def test_selectors() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "agent"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "team", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
            ],
        }
    )
    assert matches(sel, {"app": "agent", "tier": "a", "team": "x"})
    assert matches(sel, {"app": "agent", "tier": "b", "team": "x", "env": "prod"})
    assert not matches(sel, {"app": "agent", "tier": "c", "team": "x"})
    assert not matches(sel, {"app": "agent", "tier": "a", "team": "x", "canary": "1"})
    assert not matches(sel, {"app": "agent", "tier": "a"})
    assert not matches(sel, {"app": "agent", "tier": "a", "team": "x", "env": "dev"})


def test_placement_terms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    terms = node_terms(["tdx"], {"pool": "cc"})
    assert [t["matchExpressions"][0]["key"] for t in terms] == [
        next(iter(labels)) for labels in DEFAULT_TEE_LABELS["tdx"]
    ]
    assert node_terms([], {}) == []
    assert node_terms([], {"a": "b"}) == [
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}
    ]
    mine = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]
    combined = combine_terms(mine, terms)
    assert len(combined) == len(terms) and all("matchFields" in t for t in combined)
    table = tmp_path / "labels.yaml"
    table.write_text("tdx:\n  - {example.com/tdx: 'yes'}\n")
    assert load_tee_labels(table)["tdx"] == [{"example.com/tdx": "yes"}]
    table.write_text("quantum: []\n")
    with pytest.raises(ConfigError):
        load_tee_labels(table)


def test_condition_times_kept_while_unchanged() -> None:
    first = merge([], [Cond("Ready", True, "Ready")], 1)
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = merge(first, [Cond("Ready", True, "Ready", "other message")], 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    flipped = merge(first, [Cond("Ready", False, "Broken")], 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert Cond("X", None, "R").status == "Unknown"


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_probe(http_server: str) -> None:
    assert probe.main([f"{http_server}/readyz"]) == 0
    assert probe.main([f"{http_server}/healthz"]) == 1
    assert probe.main(["http://example.com/readyz"]) == 1  # loopback only
    assert probe.main(["http://127.0.0.1:1/readyz"]) == 1
    assert probe.main([]) == 2
