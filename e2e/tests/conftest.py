"""e2e tests: a real control plane (see docs/kubernetes-test-cluster.md).

Tests that use ``k8s_cluster`` (directly or through ``k8s_namespace``) are marked
``k8s`` automatically, so ``-m "not k8s"`` leaves them out.
"""

from __future__ import annotations

import pytest

from cmcp_e2e.pytest_plugin import k8s_cluster, k8s_namespace  # noqa: F401 - fixtures


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "k8s_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.k8s)
