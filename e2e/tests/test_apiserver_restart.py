"""The harness can take the API server down and bring it back (for fault tests): while it is
down every request fails; afterwards the data is intact and the simulated nodes are Ready."""

from __future__ import annotations

import json

import pytest

from cmcp_e2e.handle import K8sCluster


def test_apiserver_stops_and_comes_back_with_its_data(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    control = k8s_cluster.control
    if control is None:
        pytest.skip("the cluster from KUBECONFIG is not ours to restart")
    ns = k8s_namespace
    k8s_cluster.kubectl("create", "configmap", "kept", "-n", ns, "--from-literal=a=1")
    control.stop_apiserver()
    try:
        down = k8s_cluster.kubectl("get", "configmap", "kept", "-n", ns, check=False, timeout=30)
        assert down.returncode != 0
    finally:
        control.start_apiserver()
    kept = k8s_cluster.kubectl("get", "configmap", "kept", "-n", ns, "-o", "jsonpath={.data.a}")
    assert kept.stdout == "1"

    def nodes_ready() -> bool:
        nodes = json.loads(k8s_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        return bool(nodes) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
            for n in nodes
        )

    k8s_cluster.wait_for("nodes Ready after the restart", nodes_ready, timeout=60)
