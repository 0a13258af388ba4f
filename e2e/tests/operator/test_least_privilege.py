"""Least privilege, measured on the real API server (issue 7, docs/reliability.md section 6):
what the operator and the sidecar's claim writer actually ask of the API (the API server's
audit log) against what operator/deploy/rbac.yaml and the per-gateway claims Role grant."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from opkit import (
    OPERATOR_NS,
    REPO,
    OperatorProcess,
    apply,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    get,
    injected,
    injected_pod,
    paused,
    point_binding_at,
    wait_condition,
)
from test_operator_claims import _claim, _sa_dir, _sink

from cmcp_e2e.errors import ClusterError
from cmcp_e2e.handle import K8sCluster

ALLOW = "allow-all-but-one"
OPERATOR = f"system:serviceaccount:{OPERATOR_NS}:cmcp-operator"
# Used only to re-read a workload after its patch met a 409 Conflict (someone else wrote it
# first, e.g. a controller's status update): needed, but not something a test can produce
# on demand, so its use is reported, not required.
ON_CONFLICT_ONLY = {("apps", "deployments", "get"), ("apps", "statefulsets", "get")}
Request = tuple[str, str, str]  # (API group, resource[/subresource], verb)


def _granted() -> set[Request]:
    out: set[Request] = set()
    for doc in yaml.safe_load_all((REPO / "operator/deploy/rbac.yaml").read_text()):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in doc["rules"]:
            out |= {
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
    return out


FORBIDDEN_BY_RBAC = -403


def _requests(audit_log: Path, user: str) -> Iterator[tuple[Request, int]]:
    """Every resource request ``user`` made: (group, resource, verb) and its HTTP status,
    with ``FORBIDDEN_BY_RBAC`` for a request the authorizer refused. (A 403 the authorizer
    allowed is admission's, e.g. creating in a namespace that is being deleted, which is
    what a test's teardown does to namespaces the operator still works in.)"""
    with audit_log.open() as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef")
            if event["user"]["username"] != user or ref is None or event["stage"] == "Panic":
                continue
            resource = ref["resource"] + (f"/{ref['subresource']}" if "subresource" in ref else "")
            code = event.get("responseStatus", {}).get("code", 0)
            if event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid":
                code = FORBIDDEN_BY_RBAC
            yield (ref.get("apiGroup", ""), resource, event["verb"]), code


def _exercise_everything(cluster: K8sCluster, ns: str, op: OperatorProcess) -> None:
    """Drive the operator through every path that needs one of its permissions: leader
    election, bundle rendering, injection of a Deployment and a StatefulSet (with a second
    service account, so the claims RoleBinding is patched), a widened claims Role narrowed
    again, a claims RoleBinding pointed at another role replaced, superseded config
    ConfigMaps collected, and removal of gateway and bundle."""
    digest = bundle_hash(ALLOW)
    cluster.kubectl("create", "serviceaccount", "other", "-n", ns)
    apply(
        cluster,
        bundle("policy", ns, ALLOW, expected=digest),
        deployment("agent", ns),
        gateway("gw", ns, "policy", digest),
    )
    cluster.wait_for(
        "injected", lambda: injected(get(cluster, "deployment", "agent", ns)), timeout=60
    )
    sts = deployment("db", ns, template_extra={"serviceAccountName": "other"})
    sts["kind"], sts["spec"]["serviceName"] = "StatefulSet", "db"
    apply(cluster, sts)
    cluster.wait_for(
        "StatefulSet injected", lambda: injected(get(cluster, "statefulset", "db", ns))
    )
    cluster.wait_for(
        "RoleBinding patched for the second account",
        lambda: (
            len((get(cluster, "rolebinding", "cmcp-claims-gw", ns) or {}).get("subjects", [])) == 2
        ),
    )
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    widened = [{"op": "add", "path": "/rules/-", "value": secrets}]
    cluster.kubectl(
        "patch", "role", "cmcp-claims-gw", "-n", ns, "--type=json", "-p", json.dumps(widened)
    )
    cluster.wait_for(
        "Role narrowed again",
        lambda: len((get(cluster, "role", "cmcp-claims-gw", ns) or {}).get("rules", [])) == 1,
        timeout=30,
    )
    point_binding_at(cluster, ns, "cmcp-claims-gw", "view")
    cluster.wait_for(
        "RoleBinding replaced (its roleRef cannot be patched)",
        lambda: (
            (get(cluster, "rolebinding", "cmcp-claims-gw", ns) or {}).get("roleRef", {}).get("kind")
            == "Role"
        ),
        timeout=30,
    )
    for port in range(3002, 3007):  # five configs: the oldest is collected (history 3)
        gw = gateway("gw", ns, "policy", digest)
        gw["spec"]["upstreams"][0]["url"] = f"http://127.0.0.1:{port}/mcp"
        apply(cluster, gw)
        cluster.wait_for(
            f"config for port {port}",
            lambda port=port: (
                f":{port}/"
                in json.dumps(
                    get(cluster, "configmap", _config_name(cluster, ns), ns) or {},
                )
            ),
        )
    cluster.kubectl("delete", "mcpgw", "gw", "-n", ns, "--timeout=60s")
    cluster.kubectl("delete", "mcpb", "policy", "-n", ns, "--timeout=60s")
    assert op.running, op.tail()


def _config_name(cluster: K8sCluster, ns: str) -> str:
    gw = get(cluster, "mcpgw", "gw", ns) or {}
    return str((gw.get("status") or {}).get("configMapName") or "none")


def test_operator_uses_every_grant_and_nothing_else(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_dir: Path,
) -> None:
    """Every request the operator's ServiceAccount made (in this session: this test's
    scenario and every other operator e2e test run before it) was allowed, and every
    permission operator/deploy/rbac.yaml grants was used at least once."""
    audit_log = k8s_cluster.audit_log
    if audit_log is None:
        pytest.skip("the cluster from KUBECONFIG is not ours: no audit log")
    args = ("--leader-election", "--lease-namespace", OPERATOR_NS, "--lease-seconds", "4")
    with paused(operator):
        op = OperatorProcess(
            operator_kubeconfig_path, operator_dir, *args, "--resync-seconds", "3", name="op-lp"
        )
        k8s_cluster.kubectl("delete", "lease", "cmcp-operator", "-n", OPERATOR_NS, check=False)
        try:
            op.start()
            k8s_cluster.wait_for(
                "leading and watching",
                lambda: op.health()[1] == {"role": "leader", "watching": True},
            )
            _exercise_everything(k8s_cluster, k8s_namespace, op)
        finally:
            op.stop(signal.SIGTERM)  # releases the lease (a patch)
    granted = _granted()

    def settled() -> dict[Request, set[int]] | None:
        seen: dict[Request, set[int]] = {}
        for request, code in _requests(audit_log, OPERATOR):
            seen.setdefault(request, set()).add(code)
        return seen if granted - ON_CONFLICT_ONLY <= set(seen) else None

    try:
        seen = k8s_cluster.wait_for("the audit log written", settled, timeout=15)
    except ClusterError:
        used = {request for request, _ in _requests(audit_log, OPERATOR)}
        pytest.fail(f"granted but never used: {sorted(granted - ON_CONFLICT_ONLY - used)}")
    print("after a conflict:", sorted(ON_CONFLICT_ONLY & set(seen)))
    refused = {r: codes for r, codes in seen.items() if FORBIDDEN_BY_RBAC in codes}
    assert not refused, f"the operator asked for what it may not do: {refused}"
    assert set(seen) <= granted, sorted(set(seen) - granted)


def test_claim_writer_asks_only_to_create_configmaps(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    """The sidecar's identity (the injected pods' ServiceAccount) is bound to create
    ConfigMaps only, and the claim writer never asks for more."""
    audit_log = k8s_cluster.audit_log
    if audit_log is None:
        pytest.skip("the cluster from KUBECONFIG is not ours: no audit log")
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(
        k8s_cluster,
        bundle("policy", ns, ALLOW, expected=digest),
        deployment("agent", ns),
        gateway("gw", ns, "policy", digest, attestation={"allowSoftware": True}),
    )
    pod = injected_pod(k8s_cluster, ns)
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")

    async def publish() -> None:
        sink = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        for i in range(3):
            await sink.put(f"s{i}-1", _claim(pod, digest, f"s{i}"))
        assert await sink.flush(20), sink.stats
        await sink.aclose()

    asyncio.run(publish())
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True")
    user = f"system:serviceaccount:{ns}:default"

    def asked() -> dict[Request, set[int]] | None:
        seen: dict[Request, set[int]] = {}
        for request, code in _requests(audit_log, user):
            seen.setdefault(request, set()).add(code)
        return seen if seen else None

    seen = k8s_cluster.wait_for("the claim writer's requests audited", asked, timeout=15)
    assert seen == {("", "configmaps", "create"): {201}}, seen

    # What the identity may do, asked of the API server's authorizer (SubjectAccessReview):
    # in its own namespace create ConfigMaps, nothing else; elsewhere nothing.
    def allowed(namespace: str) -> set[tuple[str, str]]:
        return {
            (verb, res)
            for verb in ("create", "get", "list", "watch", "update", "patch", "delete")
            for res in ("configmaps", "secrets", "pods", "serviceaccounts", "mcpgateways.cmcp.dev")
            if k8s_cluster.kubectl(
                "auth", "can-i", verb, res, "-n", namespace, "--as", user, check=False
            ).stdout.strip()
            == "yes"
        }

    assert allowed(ns) == {("create", "configmaps")}
    assert allowed("kube-system") == set()


@pytest.mark.parametrize("key", ["shareProcessNamespace", "hostPID"])
def test_agent_sharing_the_sidecars_processes_is_refused(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, key: str
) -> None:
    """A pod whose containers share a process namespace (or the node's) would give the agent
    the sidecar's memory and files, token and signing key included: not injected, and an
    injected workload that turns it on loses its sidecar (no gateway: no MCP access)."""
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(
        k8s_cluster,
        bundle("policy", ns, ALLOW, expected=digest),
        deployment("agent", ns),
        deployment("shared", ns, template_extra={key: True}),
        gateway("gw", ns, "policy", digest),
    )
    k8s_cluster.wait_for("injected", lambda: injected(get(k8s_cluster, "deployment", "agent", ns)))
    gw = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "Injected", "False", "SharedProcessNamespace"
    )
    assert f"spec.{key}" in json.dumps(gw["status"])
    assert not injected(get(k8s_cluster, "deployment", "shared", ns))
    patch = {"spec": {"template": {"spec": {key: True}}}}
    k8s_cluster.kubectl(
        "patch", "deployment", "agent", "-n", ns, "--type=merge", "-p", json.dumps(patch)
    )
    k8s_cluster.wait_for(
        "the sidecar removed",
        lambda: not injected(get(k8s_cluster, "deployment", "agent", ns)),
    )
