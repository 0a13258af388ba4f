"""The harness can take the API server down and bring it back (for fault tests): while it is
down every request fails; afterwards the data is intact and the simulated nodes are Ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

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


def token_kubeconfig(cluster: K8sCluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates only with a fresh token of ``account``."""
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    doc["users"] = [{"name": account, "user": {"token": token}}]
    doc["contexts"][0]["context"]["user"] = account
    path.write_text(yaml.safe_dump(doc))
    return path


def test_service_account_requests_are_audited(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    """The API server's audit log records what service accounts ask (least-privilege tests
    compare it with the roles they were given)."""
    if k8s_cluster.audit_log is None:
        pytest.skip("the cluster from KUBECONFIG is not ours")
    ns = k8s_namespace
    config = token_kubeconfig(k8s_cluster, ns, "default", tmp_path / "sa.kubeconfig")
    k8s_cluster.kubectl("--kubeconfig", str(config), "get", "configmaps", "-n", ns, check=False)
    user = f"system:serviceaccount:{ns}:default"

    def logged() -> bool:
        assert k8s_cluster.audit_log is not None
        return any(
            event["user"]["username"] == user
            and (event["verb"], event["objectRef"]["resource"]) == ("list", "configmaps")
            and event["responseStatus"]["code"] == 403
            for event in map(json.loads, k8s_cluster.audit_log.read_text().splitlines())
        )

    k8s_cluster.wait_for("the service account's request in the audit log", logged, timeout=20)
