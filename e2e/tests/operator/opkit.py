"""Helpers for the operator's e2e tests: the operator as a process, manifests, waiting."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import yaml
from tests.verifier.claimfactory import make_claim

from cmcp_e2e import procs
from cmcp_e2e.handle import K8sCluster
from cmcp_sidecar.claims.kubernetes import ApiTarget, KubernetesConfigMapSink, PodIdentity
from cmcp_verifier.bundle import read_bundle_dir

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
BIN = Path(sys.executable).parent  # where the console scripts (kubectl-cmcp) are
SIDECAR_IMAGE = "registry.invalid/cmcp-sidecar:e2e"
OPERATOR_NS = "cmcp-system"


def get(cluster: K8sCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def get_list(
    cluster: K8sCluster, kind: str, namespace: str, selector: str | None = None
) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    items: list[dict[str, Any]] = json.loads(cluster.kubectl(*args).stdout)["items"]
    return items


def apply(cluster: K8sCluster, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def apply_spec(cluster: K8sCluster, obj: dict[str, Any]) -> None:
    """Apply ``obj``'s spec as a user would: by name, without the resourceVersion it was read
    at (the operator may have written status or a finalizer since, which would be a 409)."""
    meta = {k: obj["metadata"][k] for k in ("name", "namespace")}
    apply(
        cluster,
        {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": meta,
            "spec": obj["spec"],
        },
    )


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_condition(
    cluster: K8sCluster,
    kind: str,
    name: str,
    namespace: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """Wait until the object's condition has this status (and reason); return the object."""

    def check() -> dict[str, Any] | None:
        obj = get(cluster, kind, name, namespace)
        cond = condition(obj, type_)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return obj
        return None

    try:
        return cluster.wait_for(
            f"{kind}/{name} {type_}={status} {reason or ''}", check, timeout=timeout
        )
    except Exception:
        obj = get(cluster, kind, name, namespace)
        print(json.dumps((obj or {}).get("status"), indent=1), file=sys.stderr)
        raise


def bundle_hash(directory: str) -> str:
    return read_bundle_dir(POLICIES / directory).hash


def bundle(
    name: str,
    namespace: str,
    directory: str = "allow-all-but-one",
    *,
    expected: str | None = None,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An inline McpPolicyBundle of one of the example bundles (files overridable)."""
    files = {n: c.decode() for n, c in read_bundle_dir(POLICIES / directory).files.items()}
    files.update(overrides or {})
    spec: dict[str, Any] = {
        "policies": {n: t for n, t in files.items() if n.endswith(".cedar")},
        "schema": files["schema.cedarschema"],
        "manifest": files["manifest.json"],
    }
    if expected:
        spec["expectedHash"] = expected
    return {
        "apiVersion": "cmcp.dev/v1alpha1",
        "kind": "McpPolicyBundle",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def gateway(
    name: str,
    namespace: str,
    bundle_name: str,
    bundle_hash: str,
    *,
    app: str = "agent",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": app}},
        "bundle": {"name": bundle_name, "hash": bundle_hash},
        "upstreams": [{"name": "everything", "url": "http://127.0.0.1:3001/mcp"}],
        "placement": {"teeTypes": ["sev-snp"]},
    }
    body.update(spec)
    return {
        "apiVersion": "cmcp.dev/v1alpha1",
        "kind": "McpGateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def deployment(
    name: str,
    namespace: str,
    *,
    app: str = "agent",
    labels: dict[str, str] | None = None,
    template_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
    }
    pod_spec.update(template_extra or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app, **(labels or {})},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app, "instance": name}},
            "template": {
                "metadata": {"labels": {"app": app, "instance": name}},
                "spec": pod_spec,
            },
        },
    }


def serve(
    cluster: K8sCluster, ns: str, directory: str = "allow-all-but-one", **gw_spec: Any
) -> tuple[str, dict[str, Any]]:
    """A pinned bundle (Ready), an agent Deployment and an McpGateway selecting it; returns
    once the sidecar is injected: the bundle hash and the Deployment as it was before."""
    digest = bundle_hash(directory)
    apply(cluster, bundle("policy", ns, directory, expected=digest))
    wait_condition(cluster, "mcpb", "policy", ns, "Ready", "True")
    apply(cluster, deployment("agent", ns))
    original = get(cluster, "deployment", "agent", ns)
    assert original is not None
    apply(cluster, gateway("gw", ns, "policy", digest, **gw_spec))
    cluster.wait_for("sidecar injected", lambda: injected(get(cluster, "deployment", "agent", ns)))
    return digest, original


def injected_pod(
    cluster: K8sCluster, ns: str, gateway: str = "gw", *, where: Any = None
) -> dict[str, Any]:
    """The one running (not terminating) pod of the gateway (matching ``where``), awaited."""

    def one() -> dict[str, Any] | None:
        pods = [
            p
            for p in get_list(cluster, "pods", ns, f"cmcp.dev/gateway={gateway}")
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (where is None or where(p))
        ]
        return pods[0] if len(pods) == 1 else None

    return cluster.wait_for("one injected pod", one, timeout=60)


def injected(obj: dict[str, Any] | None) -> bool:
    spec = ((obj or {}).get("spec") or {}).get("template", {}).get("spec", {})
    return any(c.get("name") == "cmcp-gateway" for c in spec.get("initContainers") or [])


def kubectl_cmcp(
    cluster: K8sCluster, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl cmcp ARGS` with the plugin on PATH, as a user would run it."""
    env = dict(env if env is not None else cluster.env())
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return subprocess.run(
        [str(cluster.kubectl_path), "cmcp", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


DOC_MARKER = re.compile(r"<!-- walkthrough: (\w+) -->")


def doc_steps(text: str) -> list[tuple[str, str]]:
    """("run", command) for each `$ ` line of a console block, ("hook", name) for markers."""
    out: list[tuple[str, str]] = []
    in_console = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_console = line.strip() == "```console"
            continue
        if in_console and line.startswith("$ "):
            out.append(("run", line[2:]))
        elif m := DOC_MARKER.fullmatch(line.strip()):
            out.append(("hook", m.group(1)))
    return out


def publish_claim(
    cluster: K8sCluster,
    pod: dict[str, Any],
    digest: str,
    session: str,
    *,
    gateway_extra: dict[str, Any] | None = None,
    **kw: Any,
) -> None:
    """A signed (software) claim of ``pod`` as a ConfigMap, exactly as the sidecar's
    Kubernetes sink writes it; ``gateway_extra`` is merged into the claim's gateway section
    before signing."""

    def mutate(trace: dict[str, Any], gw: dict[str, Any]) -> None:
        gw["instance_id"] = pod["metadata"]["name"]
        for key, value in (gateway_extra or {}).items():
            gw[key] = {**gw[key], **value} if isinstance(gw.get(key), dict) else value

    claim, _ = make_claim(session=session, bundle=digest, mutate=mutate, **kw)
    meta = pod["metadata"]
    sink = KubernetesConfigMapSink(
        "/nonexistent",
        ApiTarget("https://unused", Path("/nonexistent"), None),
        PodIdentity(meta["name"], meta["namespace"], meta["uid"], "gw"),
    )
    cm = sink.configmap(f"{session}-1", json.dumps(claim).encode())
    cluster.kubectl("create", "-f", "-", input=json.dumps(cm))


CLAIMS_ROLE_REF = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role"}


def point_binding_at(cluster: K8sCluster, ns: str, name: str, cluster_role: str) -> dict[str, Any]:
    """Replace RoleBinding ``name`` by one with the same labels, owner and subjects bound to
    ClusterRole ``cluster_role`` (``roleRef`` cannot be patched, only deleted and created
    again); returns it. Should the operator recreate its own in between, once more."""
    current = get(cluster, "rolebinding", name, ns)
    assert current is not None, f"rolebinding {ns}/{name}"
    keep = ("name", "namespace", "labels", "ownerReferences")
    tampered = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {k: v for k, v in current["metadata"].items() if k in keep},
        "roleRef": {**CLAIMS_ROLE_REF, "kind": "ClusterRole", "name": cluster_role},
        "subjects": current["subjects"],
    }
    for _ in range(5):
        cluster.kubectl("delete", "rolebinding", name, "-n", ns, "--ignore-not-found")
        done = cluster.kubectl("create", "-f", "-", input=json.dumps(tampered), check=False)
        if done.returncode == 0:
            return get(cluster, "rolebinding", name, ns) or {}
        assert "AlreadyExists" in done.stderr, done.stderr
    raise AssertionError(f"rolebinding {ns}/{name} kept being recreated")


# -- the operator as a process, with least-privilege credentials ---------------------------------


def operator_kubeconfig(cluster: K8sCluster, directory: Path) -> Path:
    """Apply operator/deploy/rbac.yaml and write a kubeconfig holding a TokenRequest token of
    the operator's ServiceAccount: the operator runs with exactly those permissions."""
    cluster.kubectl("apply", "-f", str(REPO / "operator" / "deploy" / "rbac.yaml"))
    token = cluster.kubectl(
        "create", "token", "cmcp-operator", "-n", OPERATOR_NS, "--duration=6h"
    ).stdout.strip()
    return token_kubeconfig(cluster, directory / "operator.kubeconfig", token, "cmcp-operator")


def token_kubeconfig(cluster: K8sCluster, path: Path, token: str, user: str) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = admin["clusters"][0]["cluster"].get("certificate-authority-data")
    if ca is None:
        ca_path = admin["clusters"][0]["cluster"]["certificate-authority"]
        ca = base64.b64encode(Path(ca_path).read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": user}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


class OperatorProcess:
    """``python -m cmcp_operator`` against the test cluster."""

    def __init__(
        self, kubeconfig: Path, log_dir: Path, *extra: str, name: str = "operator"
    ) -> None:
        self.kubeconfig, self.log_dir, self.extra, self.name = kubeconfig, log_dir, extra, name
        self.proc: Any = None
        self.metrics_port = self.health_port = 0
        self.log = log_dir / f"{name}.log"

    def start(self, *extra: str, wait: bool = True) -> OperatorProcess:
        self.metrics_port, self.health_port = procs.pick_ports(2)
        argv = [
            sys.executable,
            "-m",
            "cmcp_operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--all-namespaces",
            "--sidecar-image",
            SIDECAR_IMAGE,
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--bind",
            "127.0.0.1",
            "--log-format",
            "json",
            "--resync-seconds",
            "20",
            *self.extra,
            *extra,
        ]
        if not any(a.startswith("--leader-election") or a == "--no-leader-election" for a in argv):
            argv.append("--no-leader-election")
        if any(a in ("--namespace", "-n") for a in extra):
            argv.remove("--all-namespaces")
        self.proc, _ = procs.spawn(self.name, argv, self.log, tie_to_parent=True)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}: {self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1),
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy in {timeout}s: {self.tail()}")

    def health(self, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return int(self.proc.wait(timeout=timeout))
        except Exception:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return int(self.proc.wait(timeout=5))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the operator for the block: nothing done meanwhile is seen (or undone)
        until it runs again. Keep it short under leader election (the lease runs out)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)


def operator_like_deployment(
    cluster: K8sCluster, namespace: str, name: str, log_dir: Path, *extra: str
) -> OperatorProcess:
    """An operator process with the ServiceAccount token and the container arguments of a
    Deployment (e.g. the Helm chart's), in place of its pod (kwok runs no containers); ports
    and leader election are the process's own."""
    dep = get(cluster, "deployment", name, namespace)
    assert dep is not None, f"deployment {namespace}/{name}"
    pod = dep["spec"]["template"]["spec"]
    local = ("--metrics-port", "--health-port", "--leader-election", "--lease")
    args = [
        a
        for a in pod["containers"][0]["args"]
        if not a.startswith(local) and a not in ("--all-namespaces", "--log-format=json")
    ]
    sa = pod["serviceAccountName"]
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout
    kubeconfig = token_kubeconfig(cluster, log_dir / f"{name}.kubeconfig", token.strip(), sa)
    return OperatorProcess(kubeconfig, log_dir, *args, name=f"{name}-local").start(*extra)


@contextlib.contextmanager
def paused(op: OperatorProcess) -> Iterator[None]:
    """Stop the shared operator for the block, start it again afterwards."""
    op.stop()
    try:
        yield
    finally:
        op.start()


class TcpProxy:
    """A loopback TCP forwarder to the API server that can be cut and restored: while
    down, connections are refused and open ones are reset — a real outage as clients see
    it, without stopping the shared control plane."""

    def __init__(self, server: str) -> None:
        host_port = server.removeprefix("https://").rstrip("/")
        host, _, port = host_port.rpartition(":")
        self.target = (host, int(port))
        self.port = procs.pick_ports(1)[0]
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def up(self) -> TcpProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


#: The ``own_operator`` fixture: ``own_operator(*args, name=...)`` (:func:`own_operator`).
OwnOperator = Callable[..., AbstractContextManager[OperatorProcess]]
#: The ``operator_via_proxy`` fixture: ``operator_via_proxy(name)`` (:func:`operator_via_proxy`).
ProxiedOperator = Callable[[str], AbstractContextManager[tuple[OperatorProcess, TcpProxy]]]


@contextlib.contextmanager
def own_operator(
    shared: OperatorProcess, kubeconfig: Path, log_dir: Path, *args: str, name: str
) -> Iterator[OperatorProcess]:
    """A started operator process of the test's own, stopped afterwards; the shared one is
    paused meanwhile."""
    with paused(shared):
        op = OperatorProcess(kubeconfig, log_dir, *args, name=name)
        try:
            yield op.start()
        finally:
            op.stop()


@contextlib.contextmanager
def operator_via_proxy(
    cluster: K8sCluster, shared: OperatorProcess, kubeconfig: Path, log_dir: Path, name: str
) -> Iterator[tuple[OperatorProcess, TcpProxy]]:
    """:func:`own_operator` reaching the API server only through a :class:`TcpProxy` (up at
    first), so that the test can cut the operator off and reconnect it."""
    proxy = TcpProxy(cluster.server).up()
    doc: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = proxy.server
    via = log_dir / f"{name}.kubeconfig"
    via.write_text(yaml.safe_dump(doc))
    via.chmod(0o600)
    try:
        with own_operator(shared, via, log_dir, name=name) as op:
            yield op, proxy
    finally:
        proxy.down()
