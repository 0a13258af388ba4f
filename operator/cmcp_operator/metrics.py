"""Prometheus metrics of the operator (served on ``--metrics-port``; docs/operator.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "cmcp_operator_reconciles_total",
    "Reconciliations by kind and result (ok, error, retry).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "cmcp_operator_reconcile_seconds",
    "Duration of reconciliations by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "cmcp_operator_api_requests_total",
    "Requests the operator's own client sent to the API server (kopf's watches excluded).",
    ["verb", "resource"],
)
WORKLOAD_PATCHES = Counter(
    "cmcp_operator_workload_patches_total",
    "Pod template patches by action (inject, update, repair, remove).",
    ["action"],
)
INJECTED_WORKLOADS = Gauge(
    "cmcp_operator_injected_workloads",
    "Workloads carrying the sidecar, per gateway.",
    ["namespace", "gateway"],
)
CLAIMS = Counter(
    "cmcp_operator_claims_total",
    "Claim ConfigMaps seen, by outcome (verified, rejected, unreadable, orphaned).",
    ["result"],
)
BUNDLES = Counter(
    "cmcp_operator_bundle_validations_total",
    "Bundle validations by result (valid, invalid, hash_mismatch, source_missing).",
    ["result"],
)
LEADER = Gauge("cmcp_operator_leader", "1 while this replica holds the leader lease.")
