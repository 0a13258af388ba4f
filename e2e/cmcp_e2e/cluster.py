"""The local control plane: etcd → kube-apiserver → kube-controller-manager →
kube-scheduler → kwok, all on 127.0.0.1, in one working directory.

The directory holds the PKI, kubeconfigs, etcd data, one log per component and
``cluster.json`` (pids + start times), so :func:`stop_dir` can stop a cluster
that another process started (``make cluster-down``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cmcp_e2e.build import Toolset
from cmcp_e2e.errors import ClusterError
from cmcp_e2e.handle import K8sCluster
from cmcp_e2e.pki import CertFiles, ClusterPKI
from cmcp_e2e.procs import ProcRecord, is_running, pick_ports, port_free, spawn, stop

E2E_DIR = Path(__file__).resolve().parent.parent
MANIFESTS = E2E_DIR / "manifests"
KWOK_STAGES = E2E_DIR / "kwok" / "stages.yaml"
SIMULATED_NODE_SELECTOR = "type=kwok"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
STATE_FILE = "cluster.json"
_HOST = "127.0.0.1"
_PORT_TAKEN = ("address already in use", "bind: address")
_ATTEMPTS = 3
_KWOK_READY = "Watch nodes"

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    """Default progress sink: say nothing."""


@dataclass
class ClusterState:
    """What ``cluster.json`` records: enough to find and stop the cluster later."""

    directory: str
    kubeconfig: str
    server: str
    processes: list[ProcRecord] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        try:
            raw = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        raw["processes"] = [ProcRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)


def _http_ok(url: str, context: ssl.SSLContext | None, expect: str | None = None) -> bool:
    # No proxy: a configured HTTP(S)_PROXY must never see loopback health checks.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=2) as resp:
            body = resp.read().decode(errors="replace")
    except (OSError, ValueError):
        return False
    return expect is None or expect in body


def _insecure_context() -> ssl.SSLContext:
    # kube-controller-manager and kube-scheduler serve /healthz with self-signed
    # certificates they generate; it is only probed on loopback.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _front_proxy_args(pki: ClusterPKI, client: CertFiles) -> list[str]:
    """Aggregation-layer settings: lets APIService extension servers authenticate users."""
    return [
        f"--requestheader-client-ca-file={pki.ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={client.cert}",
        f"--proxy-client-key-file={client.key}",
    ]


_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


class LocalCluster:
    """Starts and stops one local control plane in ``directory``.

    ``tie_to_parent`` (pytest) makes the kernel kill the components if this process
    dies; ``make cluster-up`` turns it off so the cluster outlives the command.
    ``apiserver_port`` fixes the API port (default: a free one is picked).
    """

    def __init__(
        self,
        directory: Path,
        tools: Toolset,
        *,
        tie_to_parent: bool = True,
        apiserver_port: int | None = None,
        log: Log = _quiet,
    ) -> None:
        self.dir = directory
        self.tools = tools
        self.tie_to_parent = tie_to_parent
        self.apiserver_port = apiserver_port
        self.log = log
        self.logs = directory / "logs"
        self.kubeconfig = directory / "kubeconfig"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._used_ports: set[int] = set()
        self._state = ClusterState(str(directory), str(self.kubeconfig), "")
        self._relaunch: dict[str, Callable[[float], object]] = {}

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> K8sCluster:
        """Bring every component up (or raise ClusterError after stopping what started)."""
        if self.apiserver_port is not None and not port_free(self.apiserver_port):
            raise ClusterError(
                f"kube-apiserver: port {_HOST}:{self.apiserver_port} is already in use",
                hint="pick another port or stop what listens there (ss -ltnp)",
                code="k8s.cluster.port_in_use",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            self._start_all(timeout)
        except BaseException:
            self.stop()
            raise
        self.log(f"control plane ready in {time.monotonic() - started:.1f}s (logs: {self.logs})")
        return self.handle()

    def handle(self) -> K8sCluster:
        """The test-facing handle (valid once :meth:`start` returned)."""
        return K8sCluster(
            kubeconfig=self.kubeconfig,
            server=self._state.server,
            kubectl_path=self.tools.kubectl,
            helm_path=self.tools.helm,
            simulated=True,
            log_dir=self.logs,
            control=self,
            audit_log=self.logs / "audit.log",
        )

    def stop(self) -> None:
        """Kill every component's process group; safe to call twice."""
        stop(self._state.processes, reap=self._reap)
        self._reap()

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    # -- faults (reliability tests) ------------------------------------------------------

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM, then SIGKILL): the API is down, connections refused,
        until :meth:`start_apiserver`. Everything else keeps running."""
        self._stop_component("kube-apiserver")

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start kube-apiserver again: same port, certificates and etcd (data intact).

        kube-controller-manager and kube-scheduler are then restarted too, as kubelet or
        systemd restarts them in a real cluster: here the controller manager exits when the
        API vanishes while it is still starting controllers, and otherwise its
        service-account controller stayed idle for minutes after the API came back (so a
        new namespace never got its ``default`` ServiceAccount). Call it from the thread that
        will outlive the processes: under pytest they get ``PR_SET_PDEATHSIG``, which the
        kernel ties to the starting *thread*."""
        if "kube-apiserver" not in self._relaunch:
            raise ClusterError("kube-apiserver was never started", code="k8s.cluster.not_started")
        deadline = time.monotonic() + timeout
        self._relaunch["kube-apiserver"](timeout)
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._stop_component(name)
            self._relaunch[name](max(5.0, deadline - time.monotonic()))

    def _stop_component(self, name: str) -> None:
        records = [r for r in self._state.processes if r.name == name]
        stop(records, reap=self._reap)
        self._state.processes = [r for r in self._state.processes if r not in records]
        self._state.save()

    # -- the sequence -------------------------------------------------------------------

    def _start_all(self, timeout: float) -> None:
        pki = ClusterPKI(self.dir / "pki")
        sa = pki.service_account_keys()
        admin = pki.issue("admin", "cmcp-e2e-admin", org="system:masters")
        clients = {
            "kube-controller-manager": pki.issue("kcm", "system:kube-controller-manager"),
            "kube-scheduler": pki.issue("scheduler", "system:kube-scheduler"),
            "kwok": pki.issue("kwok", "kwok-controller", org="system:masters"),
        }
        front_proxy = pki.issue("front-proxy-client", "front-proxy-client")
        serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=(_HOST, SERVICE_IP),
        )
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(5.0, deadline - time.monotonic())

        (etcd_port, _peer) = self._launch(
            "etcd",
            self.tools.etcd,
            2,
            self._etcd_args,
            left(),
            ready=lambda p: _http_ok(f"http://{_HOST}:{p[0]}/health", None, '"health":"true"'),
        )
        api_ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        api_ctx.load_cert_chain(str(admin.cert), str(admin.key))

        def apiserver_args(ports: Sequence[int]) -> list[str]:
            server = f"https://{_HOST}:{ports[0]}"
            self._state.server = server
            pki.kubeconfig(self.kubeconfig, server, "cmcp-e2e-admin", admin)
            for name, cert in clients.items():
                pki.kubeconfig(self.dir / f"{name}.kubeconfig", server, name, cert)
            return [
                *self._apiserver_args(ports[0], etcd_port, pki, serving, sa),
                *_front_proxy_args(pki, front_proxy),
            ]

        api_port = self._launch(
            "kube-apiserver",
            self.tools.kube_apiserver,
            1,
            apiserver_args,
            left(),
            ready=lambda p: _http_ok(f"https://{_HOST}:{p[0]}/readyz", api_ctx, "ok"),
            fixed=self.apiserver_port,
        )[0]
        self._relaunch["kube-apiserver"] = lambda wait: self._launch(
            "kube-apiserver",
            self.tools.kube_apiserver,
            1,
            apiserver_args,
            wait,
            ready=lambda p: _http_ok(f"https://{_HOST}:{p[0]}/readyz", api_ctx, "ok"),
            fixed=api_port,
        )
        self._apply_manifests()
        for name, binary in (
            ("kube-controller-manager", self.tools.kube_controller_manager),
            ("kube-scheduler", self.tools.kube_scheduler),
        ):
            launch = functools.partial(
                self._launch,
                name,
                binary,
                1,
                lambda p, n=name: self._component_args(n, p[0], pki, sa),  # type: ignore[misc]
                ready=lambda p: _http_ok(f"https://{_HOST}:{p[0]}/healthz", _insecure_context()),
            )
            launch(left())
            self._relaunch[name] = launch
        self._launch("kwok", self.tools.kwok, 0, lambda _p: self._kwok_args(), left())
        self._wait_nodes_ready(left())

    def _launch(
        self,
        name: str,
        binary: Path,
        nports: int,
        argv: Callable[[Sequence[int]], list[str]],
        timeout: float,
        *,
        ready: Callable[[Sequence[int]], bool] | None = None,
        fixed: int | None = None,
    ) -> list[int]:
        """Start one component, retrying with new ports if one was taken meanwhile."""
        log = self.logs / f"{name}.log"
        for attempt in range(1, _ATTEMPTS + 1):
            ports = [fixed] if fixed else pick_ports(nports, avoid=self._used_ports)
            args = argv(ports)
            offset = log.stat().st_size if log.exists() else 0
            self.log(f"starting {name} (ports {ports or '-'})")
            try:
                proc, rec = spawn(name, [str(binary), *args], log, tie_to_parent=self.tie_to_parent)
            except OSError as exc:
                raise ClusterError(
                    f"{name}: cannot execute {binary}: {exc}",
                    hint="run `make k8s-build` (python -m cmcp_e2e build)",
                    code="k8s.cluster.exec",
                ) from exc
            self._procs[rec.pid] = proc
            self._state.processes.append(rec)
            self._state.save()
            if self._wait_ready(name, binary, proc, rec, offset, ports, ready, timeout):
                self._used_ports.update(ports)
                return ports
            if fixed or attempt == _ATTEMPTS:
                raise ClusterError(
                    f"{name} ({binary}): a port of {ports} is already in use; log: {log}",
                    hint="stop what listens there (ss -ltnp) or retry",
                    code="k8s.cluster.port_in_use",
                )
            self.log(f"{name}: port taken, retrying with other ports")
        raise AssertionError("unreachable")

    @staticmethod
    def _log_says(rec: ProcRecord, offset: int, text: str) -> bool:
        with open(rec.log, errors="replace") as fh:
            fh.seek(offset)
            return text in fh.read()

    def _wait_ready(
        self,
        name: str,
        binary: Path,
        proc: subprocess.Popen[bytes],
        rec: ProcRecord,
        offset: int,
        ports: Sequence[int],
        ready: Callable[[Sequence[int]], bool] | None,
        timeout: float,
    ) -> bool:
        """True when ready; False when it exited because a port was taken; else raise.

        Without a ``ready`` probe (kwok serves nothing), readiness is its log line.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                with open(rec.log, errors="replace") as fh:
                    fh.seek(offset)
                    output = fh.read()
                if any(marker in output for marker in _PORT_TAKEN):
                    return False
                tail = "\n".join(output.splitlines()[-15:])
                raise ClusterError(
                    f"{name} ({binary}) exited with code {code} before it was ready; "
                    f"log: {rec.log}\n{tail}",
                    hint=f"all component logs: {self.logs}",
                    code="k8s.cluster.exited",
                )
            if ready(ports) if ready else self._log_says(rec, offset, _KWOK_READY):
                return True
            time.sleep(0.2)
        raise ClusterError(
            f"{name} ({binary}) not ready after {timeout:.0f}s; log: {rec.log}",
            hint=f"all component logs: {self.logs}",
            code="k8s.cluster.not_ready",
        )

    # -- component command lines -------------------------------------------------------

    def _etcd_args(self, ports: Sequence[int]) -> list[str]:
        client, peer = (f"http://{_HOST}:{p}" for p in ports)
        return [
            "--name=cmcp-e2e",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=cmcp-e2e={peer}",
            "--unsafe-no-fsync",  # throwaway data: durability buys nothing, fsync costs seconds
            "--log-level=warn",
        ]

    def _apiserver_args(
        self, port: int, etcd_port: int, pki: ClusterPKI, serving: CertFiles, sa: CertFiles
    ) -> list[str]:
        return [
            f"--etcd-servers=http://{_HOST}:{etcd_port}",
            f"--bind-address={_HOST}",
            f"--advertise-address={_HOST}",
            f"--secure-port={port}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # No kube-proxy, no real endpoints: a loopback address would be rejected there.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
            # What service accounts ask of the API (metadata only), for least-privilege tests.
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.logs / 'audit.log'}",
            "--audit-log-maxsize=200",
            "--audit-log-format=json",
        ]

    def _audit_policy(self) -> Path:
        path = self.dir / "audit-policy.yaml"
        path.write_text(_AUDIT_POLICY)
        return path

    def _component_args(self, name: str, port: int, pki: ClusterPKI, sa: CertFiles) -> list[str]:
        kubeconfig = self.dir / f"{name}.kubeconfig"
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={_HOST}",
            f"--secure-port={port}",
            f"--cert-dir={self.dir / name}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        if name == "kube-scheduler":
            return common
        return [
            *common,
            f"--service-account-private-key-file={sa.key}",
            f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
        ]

    def _kwok_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            f"--config={KWOK_STAGES}",
            f"--manage-nodes-with-label-selector={SIMULATED_NODE_SELECTOR}",
            f"--cidr={POD_CIDR}",
            f"--node-ip={_HOST}",
        ]

    # -- cluster contents ------------------------------------------------------------------

    def _apply_manifests(self) -> None:
        self.log(f"applying {MANIFESTS}")
        self.handle().kubectl("apply", "-f", str(MANIFESTS))

    def _wait_nodes_ready(self, timeout: float) -> None:
        self.handle().kubectl(
            "wait",
            "--for=condition=Ready",
            "node",
            "-l",
            SIMULATED_NODE_SELECTOR,
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )


def running_state(directory: Path) -> ClusterState | None:
    """The state of the cluster started in ``directory`` if all its processes still run."""
    state = ClusterState.load(directory)
    if state is None or not state.processes or not all(is_running(p) for p in state.processes):
        return None
    return state


def stop_dir(directory: Path, *, remove: bool = True) -> list[ProcRecord]:
    """Stop the cluster recorded in ``directory/cluster.json``; returns its records."""
    state = ClusterState.load(directory)
    records = state.processes if state else []
    stop(records, reap=lambda: None)
    left = [r for r in records if is_running(r)]
    if left:
        raise ClusterError(
            f"processes still running after SIGKILL: {[(r.name, r.pid) for r in left]}",
            hint="check them with ps; they may be stuck in the kernel",
            code="k8s.cluster.stop",
        )
    if remove and directory.exists():
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
    return records
