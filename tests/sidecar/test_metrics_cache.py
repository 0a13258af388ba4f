"""Metric children are looked up once per label values; counting is unchanged."""

from __future__ import annotations

from cmcp_sidecar.metrics import Metrics


def test_cached_children_count_like_prometheus() -> None:
    metrics = Metrics()
    first = metrics.tool_calls.labels("allow", "echo", "up")
    assert metrics.tool_calls.labels("allow", "echo", "up") is first
    first.inc()
    metrics.tool_calls.labels("allow", "echo", "up").inc()
    metrics.tool_calls.labels(decision="deny", tool="echo", upstream="up").inc()  # keywords too
    metrics.duration.labels("tools/call").observe(0.002)
    text = metrics.render().decode()
    assert 'cmcp_tool_calls_total{decision="allow",tool="echo",upstream="up"} 2.0' in text
    assert 'cmcp_tool_calls_total{decision="deny",tool="echo",upstream="up"} 1.0' in text
    assert 'cmcp_request_duration_seconds_count{method="tools/call"} 1.0' in text
    assert Metrics().tool_calls.labels("allow", "echo", "up") is not first  # per gateway
