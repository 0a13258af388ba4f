"""What a test gets: a handle on a reachable cluster (ours or the user's KUBECONFIG)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cmcp_e2e.errors import ClusterError

DEFAULT_TIMEOUT = 60.0
T = TypeVar("T")


class ControlPlane(Protocol):
    """What fault tests may do to a control plane this harness runs."""

    def stop_apiserver(self) -> None: ...

    def start_apiserver(self, timeout: float = 60.0) -> None: ...


@dataclass
class K8sCluster:
    """A reachable Kubernetes API and the client binaries that talk to it.

    ``simulated`` is True for the local control plane, whose kwok nodes carry the
    confidential-computing labels and taints of e2e/manifests (False for a cluster
    taken from ``KUBECONFIG``: tests needing those nodes should skip).
    """

    kubeconfig: Path
    server: str
    kubectl_path: Path
    helm_path: Path
    simulated: bool
    log_dir: Path | None = None
    # The local control plane itself, for fault tests (stop_apiserver/start_apiserver);
    # None for a cluster taken from KUBECONFIG.
    control: ControlPlane | None = None
    # The API server's audit log (JSON lines, metadata of service accounts' requests), when
    # the harness runs the control plane.
    audit_log: Path | None = None
    _namespaces: list[str] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """The environment for a child process that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def _run(
        self, binary: Path, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(binary), *args]
        try:
            res = subprocess.run(
                argv, input=input, env=self.env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"{binary.name} {' '.join(args)} timed out after {timeout:.0f}s",
                hint="is the cluster still up? see the component logs",
                code="k8s.cluster.timeout",
            ) from exc
        if check and res.returncode != 0:
            raise ClusterError(
                f"{binary.name} {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}",
                hint=f"KUBECONFIG={self.kubeconfig}",
                code="k8s.cluster.command",
            )
        return res

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises ClusterError on failure when ``check``."""
        return self._run(self.kubectl_path, args, input, check, timeout)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster (same contract as :meth:`kubectl`)."""
        return self._run(self.helm_path, args, input, check, timeout)

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this cluster (close it when done)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def create_namespace(self, prefix: str = "e2e", *, timeout: float = 30.0) -> str:
        """A fresh namespace whose ``default`` ServiceAccount exists (pods can be created)."""
        slug = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "e2e"
        name = f"{slug}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        self._namespaces.append(name)
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "sa", "default", "-n", name, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"namespace {name}: ServiceAccount 'default' not created in {timeout:.0f}s",
                    hint="is kube-controller-manager running? see its log",
                    code="k8s.cluster.namespace",
                )
            time.sleep(0.2)
        return name

    def delete_namespace(self, name: str, *, wait: bool = False) -> None:
        """Delete a namespace (in the background unless ``wait``)."""
        self.kubectl(
            "delete", "namespace", name, f"--wait={str(wait).lower()}", "--ignore-not-found"
        )
        if name in self._namespaces:
            self._namespaces.remove(name)

    @contextlib.contextmanager
    def namespace(self, prefix: str = "e2e") -> Iterator[str]:
        """``with cluster.namespace("x") as ns:`` a throwaway namespace, deleted afterwards."""
        name = self.create_namespace(prefix)
        try:
            yield name
        finally:
            self.delete_namespace(name)

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> T:
        """Poll ``predicate()`` until it returns a truthy value; ClusterError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {timeout:.0f}s waiting for {what}",
                    hint=f"component logs: {self.log_dir}" if self.log_dir else None,
                    code="k8s.cluster.timeout",
                )
            time.sleep(interval)
