"""e2e tests: a real control plane (see docs/kubernetes-test-cluster.md).

Tests that use ``k8s_cluster`` (directly or through ``k8s_namespace``) are marked
``k8s`` automatically, so ``-m "not k8s"`` leaves them out.
"""

from __future__ import annotations

import pytest

from cmcp_e2e import build
from cmcp_e2e.pytest_plugin import k8s_cluster, k8s_namespace, progress  # noqa: F401


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "k8s_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.k8s)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test runs: a cold build outlasts a test timeout."""
    if build.cached_tools() is None and any(i.get_closest_marker("k8s") for i in session.items):
        build.ensure_tools(progress=lambda msg: progress(session.config, msg))
