"""Operator hygiene: least privilege, metrics, leader election, restarts and API outages."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import yaml
from opkit import (
    OPERATOR_NS,
    REPO,
    OperatorProcess,
    ProxiedOperator,
    apply,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    get,
    get_list,
    injected,
    paused,
    serve,
    wait_condition,
)

from cmcp_e2e.handle import K8sCluster

ALLOW = "allow-all-but-one"
SA = f"system:serviceaccount:{OPERATOR_NS}:cmcp-operator"


def _can(cluster: K8sCluster, verb: str, resource: str, ns: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", SA]
    args += ["-n", ns] if ns else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def test_operator_identity_has_exactly_the_shipped_permissions(
    k8s_cluster: K8sCluster, running: OperatorProcess, operator_kubeconfig_path: Path
) -> None:
    """The shared operator of every e2e test runs with this ServiceAccount's token."""
    user = yaml.safe_load(operator_kubeconfig_path.read_text())["users"][0]["user"]
    assert set(user) == {"token"}  # no client certificate, no admin
    rules = next(
        d
        for d in yaml.safe_load_all((REPO / "operator/deploy/rbac.yaml").read_text())
        if d["kind"] == "ClusterRole"
    )["rules"]
    granted = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    probes = {
        ("", "configmaps"),
        ("", "pods"),
        ("", "events"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("cmcp.dev", "mcpgateways"),
        ("cmcp.dev", "mcppolicybundles"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
    }
    for group, resource in probes:
        qualified = f"{resource}.{group}" if group else resource
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            expected = (group, resource, verb) in granted
            assert _can(k8s_cluster, verb, qualified, "default") == expected, (verb, qualified)
    assert not _can(k8s_cluster, "get", "secrets")
    assert not _can(k8s_cluster, "escalate", "roles.rbac.authorization.k8s.io", "default")
    assert not _can(k8s_cluster, "bind", "roles.rbac.authorization.k8s.io", "default")


def test_metrics(k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    assert running.metric("cmcp_operator_reconciles_total", kind="gateway", result="ok") >= 1
    assert running.metric("cmcp_operator_reconciles_total", kind="bundle", result="ok") >= 1
    assert running.metric("cmcp_operator_workload_patches_total", action="inject") >= 1
    assert (
        running.metric("cmcp_operator_api_requests_total", verb="PATCH", resource="deployments")
        >= 1
    )
    assert running.metric("cmcp_operator_injected_workloads", namespace=ns, gateway="gw") == 1
    assert running.metric("cmcp_operator_bundle_validations_total", result="valid") >= 1
    assert "cmcp_operator_reconcile_seconds_bucket" in running.metrics()


def test_leader_election(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_dir: Path,
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    args = ("--leader-election", "--lease-namespace", OPERATOR_NS, "--lease-seconds", "4")
    with paused(operator):
        a = OperatorProcess(
            operator_kubeconfig_path, operator_dir, *args, "--identity", "a", name="op-a"
        )
        b = OperatorProcess(
            operator_kubeconfig_path, operator_dir, *args, "--identity", "b", name="op-b"
        )
        try:
            a.start()
            k8s_cluster.wait_for(
                "a leads", lambda: a.health()[1].get("role") == "leader", timeout=30
            )
            b.start()
            time.sleep(2)
            assert b.health() == (200, {"role": "follower", "watching": False})
            assert a.metric("cmcp_operator_leader") == 1 and b.metric("cmcp_operator_leader") == 0
            lease = get(k8s_cluster, "lease", "cmcp-operator", OPERATOR_NS)
            assert lease is not None and lease["spec"]["holderIdentity"] == "a"
            apply(
                k8s_cluster,
                bundle("policy", ns, ALLOW),
                deployment("one", ns, app="one"),
                gateway("gw", ns, "policy", digest, app="one"),
            )
            k8s_cluster.wait_for(
                "a injects", lambda: injected(get(k8s_cluster, "deployment", "one", ns))
            )
            assert b.metric("cmcp_operator_api_requests_total", verb="PATCH") == 0  # b did nothing
            # The leader dies without releasing: b takes over once the lease runs out.
            a.stop(signal.SIGKILL)
            k8s_cluster.wait_for(
                "b leads", lambda: b.health()[1].get("role") == "leader", timeout=30
            )
            apply(k8s_cluster, deployment("two", ns, app="one"))
            k8s_cluster.wait_for(
                "b injects", lambda: injected(get(k8s_cluster, "deployment", "two", ns))
            )
            # A graceful stop releases the lease at once.
            a.start(wait=False)
            a.wait_healthy()
            assert a.health()[1]["role"] == "follower"
            started = time.monotonic()
            assert b.stop(signal.SIGTERM) == 0
            k8s_cluster.wait_for(
                "a leads again", lambda: a.health()[1].get("role") == "leader", timeout=30
            )
            assert time.monotonic() - started < 4 + 3
        finally:
            a.stop()
            b.stop()


def test_restart_mid_reconcile_no_duplicate_side_effects(
    k8s_cluster: K8sCluster, k8s_namespace: str, operator: OperatorProcess
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(
        k8s_cluster, bundle("policy", ns, ALLOW), *[deployment(f"agent-{i}", ns) for i in range(30)]
    )
    wait_condition(k8s_cluster, "mcpb", "policy", ns, "Ready", "True")
    apply(k8s_cluster, gateway("gw", ns, "policy", digest))
    k8s_cluster.wait_for(
        "the first workload injected",
        lambda: any(injected(d) for d in get_list(k8s_cluster, "deployments", ns)),
        interval=0.05,
    )
    operator.stop(signal.SIGKILL)
    at_kill = sum(injected(d) for d in get_list(k8s_cluster, "deployments", ns))
    print(f"{at_kill} of 30 injected when the operator was killed")
    operator.start()

    def all_injected() -> bool:
        return all(injected(d) for d in get_list(k8s_cluster, "deployments", ns))

    k8s_cluster.wait_for("every workload injected after the restart", all_injected, timeout=60)
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    time.sleep(2)
    for dep in get_list(k8s_cluster, "deployments", ns):
        # Created (1), injected once (2): never patched twice.
        assert dep["metadata"]["generation"] == 2, dep["metadata"]["name"]
    assert len(get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=config")) == 1
    assert len(get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=bundle")) == 1
    assert len(get_list(k8s_cluster, "roles", ns)) == 1


def test_api_server_outage(
    k8s_cluster: K8sCluster, k8s_namespace: str, operator_via_proxy: ProxiedOperator
) -> None:
    """The API server becomes unreachable for the operator (connections refused, open ones
    reset) while things change; afterwards everything converges, nothing is done twice."""
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    with operator_via_proxy("op-proxy") as (op, proxy):
        apply(
            k8s_cluster,
            bundle("policy", ns, ALLOW),
            deployment("agent", ns),
            gateway("gw", ns, "policy", digest),
        )
        k8s_cluster.wait_for(
            "injected", lambda: injected(get(k8s_cluster, "deployment", "agent", ns))
        )
        wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
        proxy.down()
        # Meanwhile: someone strips the sidecar, and a new agent arrives.
        patch = [{"op": "remove", "path": "/spec/template/spec/initContainers"}]
        k8s_cluster.kubectl(
            "patch", "deployment", "agent", "-n", ns, "--type=json", "-p", json.dumps(patch)
        )
        apply(k8s_cluster, deployment("late", ns))
        time.sleep(6)
        assert op.running, op.tail()
        assert not injected(get(k8s_cluster, "deployment", "late", ns))
        proxy.up()
        k8s_cluster.wait_for(
            "converged after the outage",
            lambda: (
                injected(get(k8s_cluster, "deployment", "agent", ns))
                and injected(get(k8s_cluster, "deployment", "late", ns))
            ),
            timeout=90,
        )
        time.sleep(2)
        assert get(k8s_cluster, "deployment", "late", ns)["metadata"]["generation"] == 2  # type: ignore[index]
        assert len(get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=config")) == 1
        events = json.loads(
            k8s_cluster.kubectl(
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                "involvedObject.name=late,reason=Injected",
                "-o",
                "json",
            ).stdout
        )["items"]
        assert len(events) == 1


def test_namespace_scoped_operator(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_dir: Path,
) -> None:
    """``--namespace NS`` serves that namespace only."""
    with paused(operator), k8s_cluster.namespace("elsewhere") as other:
        op = OperatorProcess(operator_kubeconfig_path, operator_dir, name="op-ns")
        try:
            op.start("--namespace", k8s_namespace)
            serve(k8s_cluster, k8s_namespace)
            digest = bundle_hash(ALLOW)
            apply(
                k8s_cluster,
                bundle("policy", other, ALLOW),
                deployment("agent", other),
                gateway("gw", other, "policy", digest),
            )
            time.sleep(3)
            assert not injected(get(k8s_cluster, "deployment", "agent", other))
            assert get(k8s_cluster, "mcpgw", "gw", other).get("status") is None  # type: ignore[union-attr]
        finally:
            op.stop()
