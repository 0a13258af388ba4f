"""Kubernetes faults on the real control plane (issue 7, docs/reliability.md section 4): the
API server stopped and started again under the operator and the sidecar's claim writer,
ConfigMaps and RBAC objects deleted while the operator could not see it, a simulated node
removed under an injected pod. (An operator killed mid-reconcile: test_operator_hygiene.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from opkit import (
    REPO,
    OperatorProcess,
    OwnOperator,
    ProxiedOperator,
    apply,
    deployment,
    get,
    get_list,
    injected,
    injected_pod,
    point_binding_at,
    serve,
    wait_condition,
)
from test_operator_claims import _claim, _sa_dir, _sink

from cmcp_e2e.handle import K8sCluster
from cmcp_e2e.pytest_plugin import require_simulated
from cmcp_sidecar.claims.kubernetes import KubernetesConfigMapSink

SNP_NODES = ("cc-nfd-snp", "cc-gke-snp")
CLAIMS_RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}
SECRETS_RULE = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}


def _claims_of(cluster: K8sCluster, ns: str, pod: dict[str, Any]) -> dict[str, str]:
    """Claim ConfigMaps of one pod: claim name → the claim's text."""
    return {
        cm["metadata"]["annotations"]["cmcp.dev/claim-name"]: cm["data"]["claim.json"]
        for cm in get_list(cluster, "configmaps", ns, "cmcp.dev/component=claim")
        if cm["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    }


def _can(cluster: K8sCluster, ns: str, verb: str, resource: str) -> bool:
    """May the pods' service account (the sidecar's identity) do this?"""
    sa = f"system:serviceaccount:{ns}:default"
    res = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", sa, check=False)
    return res.stdout.strip() == "yes"


def _custom_objects(cluster: K8sCluster) -> int:
    """McpGateways and McpPolicyBundles in all namespaces."""
    out = cluster.kubectl("get", "mcpgateways,mcppolicybundles", "-A", "-o", "json").stdout
    return len(json.loads(out)["items"])


def _nodes_ready(cluster: K8sCluster) -> bool:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return bool(nodes) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in nodes
    )


def test_api_server_down_and_back(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    """kube-apiserver itself is stopped for ~15 s (connections refused everywhere) while the
    sidecar keeps issuing claims and is even restarted. Every claim ends up as exactly one
    ConfigMap with the locally stored bytes, the sink backs off instead of hammering, and the
    operator survives, reconnects its watches and converges."""
    control = k8s_cluster.control
    if control is None:
        pytest.skip("the cluster from KUBECONFIG is not ours to stop")
    ns = k8s_namespace
    digest, _ = serve(k8s_cluster, ns, attestation={"allowSoftware": True})
    pod = injected_pod(k8s_cluster, ns)
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")
    data_dir = tmp_path / "claims"
    base = int(time.time())
    claims = {f"s{i}-1": _claim(pod, digest, f"s{i}", iat=base + i) for i in range(15)}
    names = list(claims)
    outage = 15.0

    def sink() -> KubernetesConfigMapSink:
        s = _sink(k8s_cluster.server, pod, sa_dir, data_dir)
        s.max_backoff = 4.0
        return s

    async def scenario() -> dict[str, float]:
        s = sink()
        for name in names[:5]:
            await s.put(name, claims[name])
        assert await s.flush(20), s.stats
        await s.aclose()
        assert len(_claims_of(k8s_cluster, ns, pod)) == 5
        requests_before = running.metric("cmcp_operator_api_requests_total")
        keys = _custom_objects(k8s_cluster)  # what the shared operator may retry during the outage
        control.stop_apiserver()
        try:
            # The API is down: five claims, a sidecar restart, five more claims.
            first = sink()
            for name in names[5:10]:
                await first.put(name, claims[name])
            await asyncio.sleep(outage / 2)
            assert not await first.flush(0.1)
            await first.aclose(timeout=0.5)  # the sidecar stops; nothing is published
            second = sink()
            assert await second.start() == 5  # what the first one could not publish
            for name in names[10:]:
                await second.put(name, claims[name])
            await asyncio.sleep(outage / 2)
            assert second.stats.pending == 10 and second.stats.published == 0
            assert running.running, running.tail()
            attempts = running.metric("cmcp_operator_api_requests_total") - requests_before
        finally:
            # Blocks the loop for a few seconds; never from another thread: the relaunched
            # processes die with the thread that started them (PR_SET_PDEATHSIG).
            control.start_apiserver()
        back = time.monotonic()
        assert await second.flush(60), second.stats  # the same sidecar, still backing off
        await second.aclose()
        assert second.stats.published + second.stats.already_existed == 10
        return {
            "sink_attempts": first.stats.failures + second.stats.failures,
            "operator_requests": attempts,
            "operator_keys": keys,
            "published_after": time.monotonic() - back,
        }

    numbers = asyncio.run(scenario())
    print(f"API outage: {numbers}")
    # Backoff, not a hot loop: 0.5 s doubling to 4 s (jitter 0.5-1.5x) allows about five
    # attempts per sidecar life in 7.5 s; a hot loop would make thousands.
    assert 2 <= numbers["sink_attempts"] <= 14, numbers
    # The operator retries each failing request 6 times (0.2 s doubling) and each failing key
    # again after 0.5 s doubling: ≈ 15 requests per gateway or bundle in a 15 s outage (32–37
    # when this test runs alone; ≈ 140 after the suite's earlier operator tests left ≈ 7
    # gateways with the shared operator). A hot loop would make thousands.
    assert numbers["operator_requests"] <= 25 * numbers["operator_keys"] + 20, numbers
    assert numbers["published_after"] < 15, numbers  # within one backoff step or so
    published = _claims_of(k8s_cluster, ns, pod)
    assert set(published) == set(names)  # none lost; names are unique, so none duplicated
    assert all(published[n].encode() == claims[n] for n in names)
    assert len(get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")) == 15

    # The operator never exited, re-established its watches and acts on new objects.
    assert running.running, running.tail()
    apply(k8s_cluster, deployment("late", ns))
    k8s_cluster.wait_for(
        "a workload created after the outage injected",
        lambda: injected(get(k8s_cluster, "deployment", "late", ns)),
        timeout=90,
    )
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True", timeout=60)
    newest = gw["status"]["lastClaims"][0]
    assert newest["pod"] == pod["metadata"]["name"] and newest["verdict"] == "verified"
    assert running.health()[0] == 200
    k8s_cluster.wait_for("nodes Ready after the restart", lambda: _nodes_ready(k8s_cluster))


def test_objects_deleted_while_the_operator_could_not_see(
    k8s_cluster: K8sCluster, k8s_namespace: str, operator_via_proxy: ProxiedOperator
) -> None:
    """The operator is cut off from the API (its watches break) while someone deletes the
    rendered bundle ConfigMap, the sidecar config ConfigMap and the claim writer's
    RoleBinding, and widens its Role to reading Secrets. No watch is open meanwhile (and
    Roles are not watched at all), so no event may ever tell; the operator must still repair
    every one once it reconnects (at the latest at its next resync)."""
    ns = k8s_namespace
    with operator_via_proxy("op-faults") as (op, proxy):
        serve(k8s_cluster, ns)
        gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
        bundle_cm = get(k8s_cluster, "mcpb", "policy", ns)["status"]["configMapName"]  # type: ignore[index]
        config_cm = gw["status"]["configMapName"]
        roles = [r["metadata"]["name"] for r in get_list(k8s_cluster, "roles", ns)]
        bindings = [b["metadata"]["name"] for b in get_list(k8s_cluster, "rolebindings", ns)]
        assert len(roles) == 1 and len(bindings) == 1
        proxy.down()
        k8s_cluster.kubectl("delete", "configmap", bundle_cm, config_cm, "-n", ns)
        widened = [{"op": "add", "path": "/rules/-", "value": SECRETS_RULE}]
        k8s_cluster.kubectl(
            "patch", "role", roles[0], "-n", ns, "--type=json", "-p", json.dumps(widened)
        )
        assert _can(k8s_cluster, ns, "get", "secrets")
        k8s_cluster.kubectl("delete", "rolebinding", bindings[0], "-n", ns)
        time.sleep(3)
        assert op.running, op.tail()
        proxy.up()
        for kind, name in (
            ("configmap", bundle_cm),
            ("configmap", config_cm),
            ("rolebinding", bindings[0]),
        ):
            k8s_cluster.wait_for(
                f"{kind} {name} repaired",
                lambda kind=kind, name=name: get(k8s_cluster, kind, name, ns),
                timeout=60,
            )
        k8s_cluster.wait_for(
            "the widened Role narrowed again",
            lambda: not _can(k8s_cluster, ns, "get", "secrets"),
            timeout=60,
        )
        assert get(k8s_cluster, "role", roles[0], ns)["rules"] == [CLAIMS_RULE]  # type: ignore[index]
        assert _can(k8s_cluster, ns, "create", "configmaps")


def test_claims_binding_pointed_elsewhere_is_replaced(
    k8s_cluster: K8sCluster, k8s_namespace: str, own_operator: OwnOperator
) -> None:
    """The claims RoleBinding is replaced (same name, owner and subjects) by one bound to
    ClusterRole ``view``: the sidecar's identity could read the namespace. roleRef cannot be
    patched, so the operator deletes that binding and creates its own again, says so once,
    and leaves it alone afterwards; a changed subject list is patched back in place."""
    ns = k8s_namespace
    name = "cmcp-claims-gw"
    with own_operator("--resync-seconds", "2", name="op-roleref") as op:
        serve(k8s_cluster, ns)
        gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
        owner = gw["metadata"]["uid"]
        ours = k8s_cluster.wait_for(
            "the claims RoleBinding", lambda: get(k8s_cluster, "rolebinding", name, ns)
        )
        with op.frozen():  # resyncs every 2 s: it must not see the binding half-replaced
            tampered = point_binding_at(k8s_cluster, ns, name, "view")
            assert _can(k8s_cluster, ns, "list", "pods")

        def restored() -> dict[str, Any] | None:
            obj = get(k8s_cluster, "rolebinding", name, ns) or {}
            return obj if obj.get("roleRef") == ours["roleRef"] else None

        fixed = k8s_cluster.wait_for("the roleRef restored", restored, timeout=30)
        assert fixed["metadata"]["uid"] != tampered["metadata"]["uid"]
        assert [(o["uid"], o.get("controller")) for o in fixed["metadata"]["ownerReferences"]] == [
            (owner, True)
        ]
        assert fixed["subjects"] == ours["subjects"]
        assert not _can(k8s_cluster, ns, "list", "pods")
        assert _can(k8s_cluster, ns, "create", "configmaps")

        extra = {"kind": "ServiceAccount", "name": "intruder", "namespace": ns}
        added = [{"op": "add", "path": "/subjects/-", "value": extra}]
        patch = ("--type=json", "-p", json.dumps(added))
        k8s_cluster.kubectl("patch", "rolebinding", name, "-n", ns, *patch)
        k8s_cluster.wait_for(
            "the subjects restored",
            lambda: (
                (get(k8s_cluster, "rolebinding", name, ns) or {}).get("subjects")
                == ours["subjects"]
            ),
            timeout=30,
        )
        time.sleep(5)  # two more resyncs: nothing more is replaced
        now = get(k8s_cluster, "rolebinding", name, ns)
        assert now is not None and now["metadata"]["uid"] == fixed["metadata"]["uid"]
        deletes = op.metric(
            "cmcp_operator_api_requests_total", verb="DELETE", resource="rolebindings"
        )
        assert deletes == 1, deletes
        selector = "involvedObject.name=gw,reason=ClaimsRoleBindingReplaced"
        events = json.loads(
            k8s_cluster.kubectl(
                "get", "events", "-n", ns, "--field-selector", selector, "-o", "json"
            ).stdout
        )["items"]
        assert len(events) == 1 and "ClusterRole view" in events[0]["message"], events
        assert events[0]["type"] == "Warning"


def test_node_removed_under_an_injected_pod(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    """The simulated SEV-SNP node running an injected pod is deleted. Its pod is collected
    (and with it its claims), the replacement is injected and placed on the other SEV-SNP
    node only, and the gateway's status follows. The node is put back afterwards."""
    require_simulated(k8s_cluster)
    ns = k8s_namespace
    digest, _ = serve(k8s_cluster, ns, attestation={"allowSoftware": True})
    pod = injected_pod(k8s_cluster, ns)
    node = pod["spec"]["nodeName"]
    assert node in SNP_NODES
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")

    async def publish() -> None:
        s = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        await s.put("s1-1", _claim(pod, digest, "s1"))
        assert await s.flush(20), s.stats
        await s.aclose()

    asyncio.run(publish())
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True")
    assert gw["status"]["podsVerified"] == 1
    k8s_cluster.kubectl("delete", "node", node)
    try:

        def replaced() -> dict[str, Any] | None:
            pods = get_list(k8s_cluster, "pods", ns, "cmcp.dev/gateway=gw")
            if any(p["metadata"]["uid"] == pod["metadata"]["uid"] for p in pods):
                return None
            running_pods = [p for p in pods if p["status"].get("phase") == "Running"]
            return running_pods[0] if len(running_pods) == 1 else None

        # The pod garbage collector removes pods of vanished nodes after a 40 s quarantine.
        new = k8s_cluster.wait_for("the pod replaced", replaced, timeout=120, interval=1)
        assert new["spec"]["nodeName"] in SNP_NODES and new["spec"]["nodeName"] != node
        assert any(c["name"] == "cmcp-gateway" for c in new["spec"]["initContainers"])
        k8s_cluster.wait_for(
            "the old pod's claims collected with it",
            lambda: not _claims_of(k8s_cluster, ns, pod),
            timeout=60,
        )

        def followed() -> dict[str, Any] | None:
            obj = get(k8s_cluster, "mcpgw", "gw", ns)
            status = (obj or {}).get("status") or {}
            ok = status.get("podsInjected") == 1 and status.get("podsVerified") == 0
            return obj if ok else None

        k8s_cluster.wait_for("the status follows the new pod", followed, timeout=60)
    finally:
        nodes = REPO / "e2e" / "manifests" / "nodes.yaml"
        k8s_cluster.kubectl("apply", "-f", str(nodes))
        k8s_cluster.wait_for("the node back and Ready", lambda: _nodes_ready(k8s_cluster))


def test_a_claim_refused_for_good_holds_up_no_other(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    """A claim the API server refuses whatever happens (a ConfigMap over its 1 MiB limit:
    422) is retried, stays stored locally, and does not keep the claims queued after it
    from being published."""
    ns = k8s_namespace
    digest, _ = serve(k8s_cluster, ns, attestation={"allowSoftware": True})
    pod = injected_pod(k8s_cluster, ns)
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")
    huge = json.dumps({"padding": "x" * 1_100_000}).encode()

    async def scenario() -> KubernetesConfigMapSink:
        sink = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        sink.max_backoff = 1.0
        await sink.put("huge-1", huge)
        for i in range(3):
            await sink.put(f"s{i}-1", _claim(pod, digest, f"s{i}"))
        assert not await sink.flush(10)
        assert await sink.get("huge-1") == huge
        await sink.aclose(timeout=0.1)
        return sink

    sink = asyncio.run(scenario())
    assert sink.stats.published == 3 and sink.stats.pending == 1, sink.stats
    assert "HTTP 422" in sink.stats.last_error
    assert set(_claims_of(k8s_cluster, ns, pod)) == {"s0-1", "s1-1", "s2-1"}
