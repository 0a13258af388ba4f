"""A small version of the scale benchmark (tests/bench/bench_operator.py runs 1 000)."""

from __future__ import annotations

import time

from opkit import (
    OperatorProcess,
    apply,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    get_list,
    injected,
)

from cmcp_e2e.handle import K8sCluster

ALLOW = "allow-all-but-one"
PER_NAMESPACE = 10


def test_twenty_deployments_in_two_namespaces(
    k8s_cluster: K8sCluster, running: OperatorProcess
) -> None:
    digest = bundle_hash(ALLOW)
    with k8s_cluster.namespace("scale-a") as ns_a, k8s_cluster.namespace("scale-b") as ns_b:
        namespaces = (ns_a, ns_b)
        docs = []
        for ns in namespaces:
            docs.append(bundle("policy", ns, ALLOW, expected=digest))
            docs += [deployment(f"agent-{i}", ns) for i in range(PER_NAMESPACE)]
        apply(k8s_cluster, *docs)
        for ns in namespaces:
            k8s_cluster.wait_for(
                "bundle ready",
                lambda ns=ns: (
                    get_list(k8s_cluster, "mcpb", ns)[0].get("status", {}).get("configMapName")
                ),
            )
        before = running.metric("cmcp_operator_api_requests_total")
        started = time.monotonic()
        apply(k8s_cluster, *[gateway("gw", ns, "policy", digest) for ns in namespaces])

        def all_injected() -> bool:
            return all(
                injected(d) for ns in namespaces for d in get_list(k8s_cluster, "deployments", ns)
            )

        k8s_cluster.wait_for("20 workloads injected", all_injected, timeout=30, interval=0.2)
        elapsed = time.monotonic() - started
        time.sleep(2)  # status writes settle
        requests = running.metric("cmcp_operator_api_requests_total") - before
        print(f"20 workloads injected in {elapsed:.1f}s; {requests:.0f} API requests in all")
        for ns in namespaces:
            # One write per workload (created: generation 1, injected: 2), one event each.
            assert [
                d["metadata"]["generation"] for d in get_list(k8s_cluster, "deployments", ns)
            ] == [2] * PER_NAMESPACE
            events = get_list(k8s_cluster, "events", ns)
            assert sum(e["reason"] == "Injected" for e in events) == PER_NAMESPACE
