"""Bad input: each case gives a condition or event with a precise reason, nothing half-applied."""

from __future__ import annotations

import time

import pytest
from opkit import (
    OperatorProcess,
    apply,
    bundle,
    bundle_hash,
    condition,
    deployment,
    gateway,
    get,
    get_list,
    injected,
    serve,
    wait_condition,
)

from cmcp_e2e.errors import ClusterError
from cmcp_e2e.handle import K8sCluster

ALLOW = "allow-all-but-one"
BAD_CEDAR = (
    "permit(principal, action, resource);\n"
    'forbid(principal, action == Action::"call_tool", resource == Tol::"get-env");\n'
)


def _events(cluster: K8sCluster, ns: str, name: str, reason: str) -> str:
    return cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.name={name},reason={reason}",
        "-o",
        "json",
    ).stdout


def _rendered(cluster: K8sCluster, ns: str) -> list[str]:
    cms = get_list(cluster, "configmaps", ns, "cmcp.dev/component=bundle")
    return [c["metadata"]["name"] for c in cms]


def test_invalid_cedar_reports_file_and_line(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    apply(k8s_cluster, bundle("bad", ns, ALLOW, overrides={"policies.cedar": BAD_CEDAR}))
    obj = wait_condition(k8s_cluster, "mcpb", "bad", ns, "Valid", "False", "InvalidBundle")
    valid = condition(obj, "Valid")
    assert valid["message"].startswith("policies.cedar:2:"), valid["message"]
    assert "Tol" in valid["message"]
    assert obj["status"]["problems"][0].startswith("policies.cedar:2:")
    assert condition(obj, "Ready")["status"] == "False"
    assert "configMapName" not in obj["status"]
    assert _rendered(k8s_cluster, ns) == []
    assert "policies.cedar:2:" in _events(k8s_cluster, ns, "bad", "InvalidBundle")


def test_hash_mismatch_refused_and_workloads_keep_their_bundle(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    good, other = bundle_hash(ALLOW), bundle_hash("read-only")
    # Pinned to another bundle's hash: refused, nothing rendered.
    apply(k8s_cluster, bundle("policy", ns, ALLOW, expected=other))
    obj = wait_condition(k8s_cluster, "mcpb", "policy", ns, "HashMatches", "False", "HashMismatch")
    msg = condition(obj, "HashMatches")["message"]
    assert good in msg and other in msg
    assert _rendered(k8s_cluster, ns) == []
    # A gateway requiring the real hash gets nothing to inject while the bundle is refused.
    apply(k8s_cluster, deployment("agent", ns), gateway("gw", ns, "policy", good))
    gw = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "BundleReady", "False", "BundleHashMismatch"
    )
    assert "spec.expectedHash pins" in condition(gw, "BundleReady")["message"]
    time.sleep(1)
    assert not injected(get(k8s_cluster, "deployment", "agent", ns))
    # Fixed pin: rendered and injected.
    apply(k8s_cluster, bundle("policy", ns, ALLOW, expected=good))
    k8s_cluster.wait_for("injected", lambda: injected(get(k8s_cluster, "deployment", "agent", ns)))
    template = get(k8s_cluster, "deployment", "agent", ns)["spec"]["template"]  # type: ignore[index]
    # New content that does not match the (unchanged) pin: refused, the workload keeps its bundle.
    apply(k8s_cluster, bundle("policy", ns, "read-only", expected=good))
    wait_condition(k8s_cluster, "mcpb", "policy", ns, "HashMatches", "False", "HashMismatch")
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "BundleReady", "False", "HashMismatch")
    time.sleep(1)
    assert get(k8s_cluster, "deployment", "agent", ns)["spec"]["template"] == template  # type: ignore[index]
    assert _rendered(k8s_cluster, ns) == [f"mcpb-policy-{good[7:19]}"]


def test_selector_matching_nothing(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(
        k8s_cluster, bundle("policy", ns, ALLOW), gateway("gw", ns, "policy", digest, app="nobody")
    )
    gw = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "WorkloadsSelected", "False", "NoMatchingWorkloads"
    )
    assert "matches the selector" in condition(gw, "WorkloadsSelected")["message"]
    assert condition(gw, "Ready")["reason"] == "NoMatchingWorkloads"
    k8s_cluster.wait_for(
        "event",
        lambda: "NoMatchingWorkloads" in _events(k8s_cluster, ns, "gw", "NoMatchingWorkloads"),
    )


def test_bundle_deleted_while_in_use(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    template = get(k8s_cluster, "deployment", "agent", ns)["spec"]["template"]  # type: ignore[index]
    k8s_cluster.kubectl("delete", "mcpb", "policy", "-n", ns, "--wait=false")
    obj = wait_condition(k8s_cluster, "mcpb", "policy", ns, "Ready", "False", "InUse")
    assert "McpGateway gw" in condition(obj, "Ready")["message"]
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "BundleReady", "False", "BundleDeleting")
    assert "InUse" in _events(k8s_cluster, ns, "policy", "InUse")
    time.sleep(1)
    assert get(k8s_cluster, "deployment", "agent", ns)["spec"]["template"] == template  # type: ignore[index]
    assert _rendered(k8s_cluster, ns)  # the ConfigMap the pods mount is still there
    # Once no gateway pins it, the deletion completes.
    k8s_cluster.kubectl("delete", "mcpgw", "gw", "-n", ns, "--wait=false")
    k8s_cluster.wait_for(
        "bundle gone", lambda: get(k8s_cluster, "mcpb", "policy", ns) is None, timeout=40
    )
    assert not injected(get(k8s_cluster, "deployment", "agent", ns))


def test_container_name_clash_refused(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    clash = deployment("agent", ns)
    clash["spec"]["template"]["spec"]["containers"].append(
        {"name": "cmcp-gateway", "image": "registry.invalid/mine:1"}
    )
    apply(k8s_cluster, bundle("policy", ns, ALLOW), clash)
    before = get(k8s_cluster, "deployment", "agent", ns)
    apply(k8s_cluster, gateway("gw", ns, "policy", digest))
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Injected", "False", "ContainerNameClash")
    assert "cmcp-gateway" in condition(gw, "Injected")["message"]
    k8s_cluster.wait_for(
        "event on the workload",
        lambda: "InjectionRefused" in _events(k8s_cluster, ns, "agent", "InjectionRefused"),
    )
    after = get(k8s_cluster, "deployment", "agent", ns)
    assert after["spec"]["template"] == before["spec"]["template"]  # type: ignore[index]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # type: ignore[index]


def test_garbage_claim_configmap(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    garbage = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "claim-garbage",
            "namespace": ns,
            "labels": {"cmcp.dev/component": "claim", "cmcp.dev/gateway": "gw"},
        },
        "data": {"claim.json": '{"cmcp_version": "1.0", "trace": [1, 2'},
    }
    no_key = {
        **garbage,
        "metadata": {**garbage["metadata"], "name": "claim-nokey"},
        "data": {"other": "x"},
    }
    apply(k8s_cluster, garbage, no_key)
    gw = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "False", "ClaimUnreadable"
    )
    assert "claim-" in condition(gw, "ClaimsVerified")["message"]
    k8s_cluster.wait_for(
        "event on the ConfigMap",
        lambda: "claim.parse" in _events(k8s_cluster, ns, "claim-garbage", "ClaimUnreadable"),
    )
    assert "no claim.json key" in _events(k8s_cluster, ns, "claim-nokey", "ClaimUnreadable")
    running.wait_healthy()
    # Removing the garbage clears the condition.
    k8s_cluster.kubectl("delete", "configmap", "claim-garbage", "claim-nokey", "-n", ns)
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "Unknown", "NoClaimsYet")


def test_source_configmap_missing_then_created(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    spec = bundle("policy", ns, ALLOW)["spec"]
    apply(
        k8s_cluster,
        {
            "apiVersion": "cmcp.dev/v1alpha1",
            "kind": "McpPolicyBundle",
            "metadata": {"name": "from-cm", "namespace": ns},
            "spec": {"configMapRef": {"name": "policy-src"}, "expectedHash": bundle_hash(ALLOW)},
        },
    )
    obj = wait_condition(k8s_cluster, "mcpb", "from-cm", ns, "Valid", "False", "SourceNotFound")
    assert "policy-src" in condition(obj, "Valid")["message"]
    data = {
        **spec["policies"],
        "schema.cedarschema": spec["schema"],
        "manifest.json": spec["manifest"],
        "README.md": "ignored",
    }
    apply(
        k8s_cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "policy-src",
                "namespace": ns,
                "labels": {"cmcp.dev/component": "bundle-source"},
            },
            "data": data,
        },
    )
    obj = wait_condition(k8s_cluster, "mcpb", "from-cm", ns, "Ready", "True")
    assert obj["status"]["hash"] == bundle_hash(ALLOW)


MALFORMED = [
    ("selector", {}, "an empty selector would select every workload"),
    ("bundle", {"name": "policy", "hash": "sha256:abc"}, "spec.bundle.hash"),
    (
        "candidateBundle",
        {"name": "policy", "hash": "sha256:" + "0" * 64},
        "candidateBundle must name another McpPolicyBundle",
    ),
    ("upstreams", [{"name": "a", "url": "ftp://x"}], "spec.upstreams[0].url"),
    ("placement", {"tolerations": []}, "placement must name teeTypes or a runtimeClassName"),
    (
        "placement",
        {"teeTypes": ["tdx"], "tolerations": [{"operator": "Exists", "value": "x"}]},
        "operator Exists takes no value",
    ),
    ("enforcementMode", "yolo", "spec.enforcementMode"),
    (
        "upstreams",
        [{"name": "a", "url": "http://a"}, {"name": "a", "url": "http://b"}],
        "Duplicate value",
    ),
]


@pytest.mark.parametrize(("field", "value", "message"), MALFORMED)
def test_api_server_rejects_malformed_gateways(
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    crds: K8sCluster,
    field: str,
    value: object,
    message: str,
) -> None:
    body = gateway("gw", k8s_namespace, "policy", bundle_hash(ALLOW))
    body["spec"][field] = value
    with pytest.raises(ClusterError) as err:
        apply(k8s_cluster, body)
    assert message in str(err.value), str(err.value)
