"""Fixtures of the operator's e2e tests: CRDs installed, the operator running as a process
with the least-privilege ServiceAccount of operator/deploy/rbac.yaml (shared by the session;
tests that stop or restart it start it again)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import opkit
import pytest
from opkit import REPO, OperatorProcess, OwnOperator, ProxiedOperator, operator_kubeconfig

from cmcp_e2e.handle import K8sCluster


@pytest.fixture(scope="session")
def crds(k8s_cluster: K8sCluster) -> K8sCluster:
    k8s_cluster.kubectl("apply", "-f", str(REPO / "crds"))
    for name in ("mcpgateways.cmcp.dev", "mcppolicybundles.cmcp.dev"):
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    return k8s_cluster


@pytest.fixture(scope="session")
def operator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="session")
def operator_kubeconfig_path(crds: K8sCluster, operator_dir: Path) -> Path:
    return operator_kubeconfig(crds, operator_dir)


@pytest.fixture(scope="session")
def operator(operator_kubeconfig_path: Path, operator_dir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(operator_kubeconfig_path, operator_dir).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def running(operator: OperatorProcess) -> OperatorProcess:
    """The shared operator, started again if an earlier test left it stopped."""
    if not operator.running:
        operator.start()
    return operator


@pytest.fixture
def own_operator(
    operator: OperatorProcess, operator_kubeconfig_path: Path, operator_dir: Path
) -> OwnOperator:
    """``with own_operator(*args, name=...) as op``: an operator process of the test's own
    with the same identity, the shared one paused meanwhile."""
    return functools.partial(opkit.own_operator, operator, operator_kubeconfig_path, operator_dir)


@pytest.fixture
def operator_via_proxy(
    crds: K8sCluster, operator: OperatorProcess, operator_kubeconfig_path: Path, operator_dir: Path
) -> ProxiedOperator:
    """``with operator_via_proxy(name) as (op, proxy)``: the same, reaching the API server
    only through a TcpProxy the test can cut."""
    return functools.partial(
        opkit.operator_via_proxy, crds, operator, operator_kubeconfig_path, operator_dir
    )
