"""Use the cluster ``KUBECONFIG`` points at (kind, k3d, a cloud, ``make cluster-up``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

from cmcp_e2e import build
from cmcp_e2e.errors import BuildError
from cmcp_e2e.handle import K8sCluster

FORCE_LOCAL_ENV = "CMCP_E2E_LOCAL"


def _clients() -> tuple[Path, Path]:
    """kubectl and helm: the pinned ones (fetched if needed), else the machine's."""
    try:
        return build.ensure_clients()
    except BuildError:
        return Path(shutil.which("kubectl") or "kubectl"), Path(shutil.which("helm") or "helm")


def from_environment() -> K8sCluster | None:
    """A handle on ``$KUBECONFIG``'s cluster if it is set and answers, else None.

    ``CMCP_E2E_LOCAL=1`` ignores KUBECONFIG (always start a local control plane).
    An unreachable cluster is reported as a warning, and the local one is used.
    """
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or os.environ.get(FORCE_LOCAL_ENV) == "1":
        return None
    kubectl, helm = _clients()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), *args], capture_output=True, text=True, check=False, timeout=30
        )

    try:
        probe = run("version", "-o", "json", "--request-timeout=5s")
        server = run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        probe = subprocess.CompletedProcess([], 1, "", str(exc))
    if probe.returncode != 0:
        warnings.warn(
            f"KUBECONFIG={kubeconfig} is not reachable ({probe.stderr.strip()[:200]}); "
            "starting a local control plane instead",
            stacklevel=2,
        )
        return None
    handle = K8sCluster(
        kubeconfig=Path(kubeconfig),
        server=server.stdout.strip(),
        kubectl_path=kubectl,
        helm_path=helm,
        simulated=False,
    )
    handle.simulated = has_simulated_nodes(handle)
    return handle


def has_simulated_nodes(cluster: K8sCluster) -> bool:
    """True if the e2e/manifests objects are there (a cluster from ``make cluster-up``)."""
    nodes = cluster.kubectl("get", "node", "cc-nfd-snp", "-o", "name", check=False)
    rcs = cluster.kubectl("get", "runtimeclass", "kata-qemu-snp", "-o", "name", check=False)
    return nodes.returncode == 0 and rcs.returncode == 0
