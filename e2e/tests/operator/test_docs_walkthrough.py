"""docs/helm.md, executed: every `$ command` of its console blocks runs, in order, against
a fresh control plane of its own (the walkthrough installs cluster-wide objects named like
the ones the other operator tests use).

Two steps need what the simulator lacks (kwok runs no containers), done by the test at the
doc's `<!-- walkthrough: … -->` markers: `operator` starts the operator as a local process
with the chart's ServiceAccount token and the Deployment's arguments (in place of the
simulated pod); `claim` publishes a claim for the agent pod exactly as the sidecar's
Kubernetes sink would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opkit import (
    REPO,
    OperatorProcess,
    doc_steps,
    get,
    injected_pod,
    operator_like_deployment,
    publish_claim,
)

from cmcp_e2e import build
from cmcp_e2e.cluster import LocalCluster
from cmcp_e2e.handle import K8sCluster

pytestmark = pytest.mark.k8s
DOC = REPO / "docs" / "helm.md"


@pytest.fixture(scope="module")
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("walkthrough"), build.ensure_tools())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _publish(cluster: K8sCluster) -> None:
    pod = injected_pod(cluster, "agents")
    gw = get(cluster, "mcpgw", "gw", "agents")
    assert gw is not None
    publish_claim(cluster, pod, gw["spec"]["bundle"]["hash"], "walkthrough", decisions=["allow"])


def test_doc_lists_only_runnable_steps() -> None:
    kinds = [s for s in doc_steps(DOC.read_text()) if s[0] == "hook"]
    assert kinds == [("hook", "operator"), ("hook", "claim")]


def test_helm_walkthrough(fresh_cluster: K8sCluster, tmp_path: Path) -> None:
    cluster = fresh_cluster
    tools = [Path(cluster.kubectl_path).parent, Path(cluster.helm_path).parent]
    env = {
        **cluster.env(),
        "PATH": os.pathsep.join([*map(str, tools), str(Path(sys.executable).parent)])
        + os.pathsep
        + os.environ["PATH"],
        "HOME": str(tmp_path),
    }
    operator: OperatorProcess | None = None
    try:
        for kind, value in doc_steps(DOC.read_text()):
            if kind == "hook" and value == "operator":
                operator = operator_like_deployment(
                    cluster, "cmcp-system", "cmcp-operator", tmp_path
                )
            elif kind == "hook":
                _publish(cluster)
            else:
                res = subprocess.run(
                    ["bash", "-o", "pipefail", "-c", value],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=240,
                )
                tail = operator.tail() if operator else ""
                assert res.returncode == 0, f"$ {value}\n{res.stdout}\n{res.stderr}\n{tail}"
    finally:
        if operator is not None:
            operator.stop()
