"""Pytest fixtures for tests that need a real Kubernetes API.

Use from a conftest.py (``e2e/tests/conftest.py`` already does)::

    from cmcp_e2e.pytest_plugin import k8s_cluster, k8s_namespace  # noqa: F401

``k8s_cluster`` (session): a :class:`~cmcp_e2e.handle.K8sCluster` — the cluster of
``$KUBECONFIG`` when it is set and reachable, else a local control plane started
for the session and torn down at its end (also if tests fail, and by the kernel
if pytest itself is killed). ``k8s_namespace`` (function): a throwaway namespace.
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Iterator

import pytest

from cmcp_e2e import build
from cmcp_e2e.cluster import LocalCluster
from cmcp_e2e.errors import BuildError, ClusterError
from cmcp_e2e.external import from_environment
from cmcp_e2e.handle import K8sCluster


def progress(config: pytest.Config, msg: str) -> None:
    """Print a progress line to the terminal even while pytest captures output."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(msg, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(f"\n[k8s] {msg}", end="", flush=True)


@pytest.fixture(scope="session")
def k8s_cluster(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[K8sCluster]:
    """The cluster for this test session (see the module docstring)."""
    external = from_environment()
    if external is not None:
        progress(pytestconfig, f"using KUBECONFIG={external.kubeconfig} ({external.server})")
        yield external
        return
    try:
        tools = build.ensure_tools(progress=lambda m: progress(pytestconfig, m))
    except BuildError as exc:
        pytest.fail(exc.render(), pytrace=False)
    directory = tmp_path_factory.mktemp("k8s", numbered=True)
    cluster = LocalCluster(directory, tools, log=lambda m: progress(pytestconfig, m))
    atexit.register(cluster.stop)
    try:
        handle = cluster.start()
    except ClusterError as exc:
        pytest.fail(exc.render(), pytrace=False)
    try:
        yield handle
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
        progress(pytestconfig, f"control plane stopped; its logs stay in {cluster.logs}")


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace named after the test, deleted (in the background) afterwards."""
    prefix = re.sub(r"^test_?", "", request.node.name)
    with k8s_cluster.namespace(prefix) as name:
        yield name


def require_simulated(cluster: K8sCluster) -> None:
    """Skip the calling test unless the cluster has the simulated CC nodes."""
    if not cluster.simulated:
        pytest.skip("needs the simulated confidential-computing nodes of e2e/manifests")
