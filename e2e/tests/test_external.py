"""KUBECONFIG handling: an existing cluster is used, an unreachable one is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmcp_e2e.external import FORCE_LOCAL_ENV, from_environment
from cmcp_e2e.handle import K8sCluster

pytestmark = pytest.mark.k8s


def test_reachable_kubeconfig_is_used(
    k8s_cluster: K8sCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    monkeypatch.delenv(FORCE_LOCAL_ENV, raising=False)
    found = from_environment()
    assert found is not None
    assert found.server == k8s_cluster.server
    assert found.simulated == k8s_cluster.simulated
    assert "node/" in found.kubectl("get", "nodes", "-o", "name").stdout

    monkeypatch.setenv(FORCE_LOCAL_ENV, "1")
    assert from_environment() is None


def test_unreachable_kubeconfig_falls_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv(FORCE_LOCAL_ENV, raising=False)
    with pytest.warns(UserWarning, match="is not reachable"):
        assert from_environment() is None
