"""Prometheus metrics of one gateway (its own registry, so several can live in one process)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram

_M = TypeVar("_M")
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _ChildCache:
    """``labels(*values)`` remembered per value tuple: the hot path asks for the same few
    children on every call, and prometheus_client validates and locks on each lookup. The
    children are the ones the metric keeps anyway, so this holds nothing extra."""

    def labels(self: _M, *labelvalues: Any, **labelkwargs: Any) -> _M:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc,no-any-return]
        children: dict[tuple[Any, ...], _M] = self.__dict__.setdefault("_cmcp_children", {})
        child = children.get(labelvalues)
        if child is None:
            child = super().labels(*labelvalues)  # type: ignore[misc]
            children[labelvalues] = child
        return child


class Counter(_ChildCache, _Counter):
    pass


class Histogram(_ChildCache, _Histogram):
    pass


class Metrics:
    """The gateway's counters and histograms (names follow Prometheus conventions)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tool_calls = Counter(
            "cmcp_tool_calls",
            "tools/call requests by decision, tool and upstream",
            ("decision", "tool", "upstream"),
            registry=r,
        )
        self.requests = Counter(
            "cmcp_requests", "MCP requests by method and outcome", ("method", "outcome"), registry=r
        )
        self.duration = Histogram(
            "cmcp_request_duration_seconds",
            "time from request to final reply, by method",
            ("method",),
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "cmcp_upstream_errors",
            "upstream faults by upstream and code",
            ("upstream", "code"),
            registry=r,
        )
        self.sessions = Gauge("cmcp_sessions_open", "open MCP sessions", registry=r)
        self.streams = Gauge("cmcp_streams_open", "open SSE streams to agents", registry=r)
        self.audit_entries = Counter(
            "cmcp_audit_entries", "audit entries appended (durable)", registry=r
        )
        self.claims_issued = Counter(
            "cmcp_claims_issued", "TRACE claims signed, by mode", ("mode",), registry=r
        )
        self.policy_reloads = Counter(
            "cmcp_policy_reloads", "policy bundle reloads by outcome", ("outcome",), registry=r
        )
        self.loop_stalls = Counter(
            "cmcp_event_loop_stalls",
            "times the event loop was held past the stall threshold (cmcp_sidecar.stallwatch)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
