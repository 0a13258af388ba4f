"""Bundles rendered, sidecars injected, placement, idempotency, drift, opt-out, removal."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from opkit import (
    OperatorProcess,
    apply,
    apply_spec,
    bundle,
    bundle_hash,
    condition,
    deployment,
    gateway,
    get,
    get_list,
    injected,
    injected_pod,
    kubectl_cmcp,
    publish_claim,
    serve,
    wait_condition,
)

from cmcp_e2e.handle import K8sCluster
from cmcp_e2e.pytest_plugin import require_simulated
from cmcp_verifier.catalog import CatalogEntry, catalog_document

ALLOW = "allow-all-but-one"


def _pods(cluster: K8sCluster, ns: str, app: str = "agent") -> list[dict[str, Any]]:
    return get_list(cluster, "pods", ns, f"app={app}")


def _running_pod(cluster: K8sCluster, ns: str) -> dict[str, Any]:
    def one() -> dict[str, Any] | None:
        pods = [
            p
            for p in _pods(cluster, ns)
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["name"] == "cmcp-gateway" for c in p["spec"].get("initContainers") or [])
        ]
        return pods[0] if len(pods) == 1 else None

    return cluster.wait_for("one injected pod running", one, timeout=60)


def test_bundle_rendered_as_immutable_configmap(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(k8s_cluster, bundle("policy", ns, ALLOW, expected=digest))
    obj = wait_condition(k8s_cluster, "mcpb", "policy", ns, "Ready", "True")
    status = obj["status"]
    assert status["hash"] == digest
    assert status["shortHash"] == digest[7:19]
    name = status["configMapName"]
    assert name == f"mcpb-policy-{digest[7:19]}"
    cm = get(k8s_cluster, "configmap", name, ns)
    assert cm is not None and cm["immutable"] is True
    assert sorted(cm["data"]) == ["manifest.json", "policies.cedar", "schema.cedarschema"]
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "McpPolicyBundle"
    assert cm["metadata"]["annotations"]["cmcp.dev/bundle-hash"] == digest
    table = k8s_cluster.kubectl("get", "mcpb", "-n", ns).stdout
    assert "HASH" in table and digest[7:19] in table and "True" in table


def test_injection_anatomy_and_placement(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    require_simulated(k8s_cluster)
    ns = k8s_namespace
    digest, _ = serve(k8s_cluster, ns)
    dep = get(k8s_cluster, "deployment", "agent", ns)
    assert dep is not None
    spec = dep["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "cmcp-gateway" and sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["exec"]["command"][-1] == "http://127.0.0.1:8443/readyz"
    assert spec["automountServiceAccountToken"] is False
    agent = spec["containers"][0]
    assert {"name": "MCP_GATEWAY_URL", "value": "http://127.0.0.1:8443/mcp"} in agent["env"]
    assert "volumeMounts" not in agent  # no token, no bundle, no credentials for the agent
    token_mounts = [m for m in sidecar["volumeMounts"] if m["name"] == "cmcp-token"]
    assert token_mounts[0]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    volumes = {v["name"]: v for v in spec["volumes"]}
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    assert volumes["cmcp-bundle"]["configMap"]["name"] == f"mcpb-policy-{digest[7:19]}"
    assert volumes["cmcp-config"]["configMap"]["name"] == gw["status"]["configMapName"]
    assert {
        "key": "confidential-computing",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in spec["tolerations"]
    record = json.loads(dep["metadata"]["annotations"]["cmcp.dev/injection"])
    assert record["gateway"] == "gw"
    pod = _running_pod(k8s_cluster, ns)
    assert pod["spec"]["nodeName"] in ("cc-nfd-snp", "cc-gke-snp")  # NFD or GKE SEV-SNP
    # The pod itself: no service-account token anywhere but in the sidecar.
    for c in pod["spec"]["containers"]:
        assert all("serviceaccount" not in m["mountPath"] for m in c.get("volumeMounts") or [])
    config = get(k8s_cluster, "configmap", gw["status"]["configMapName"], ns)
    assert config is not None and config["immutable"] is True
    assert "sink: kubernetes" in config["data"]["cmcp-config.yaml"]
    table = k8s_cluster.kubectl("get", "mcpgateways", "-n", ns).stdout.splitlines()
    assert table[0].split()[:8] == [
        "NAME",
        "MODE",
        "BUNDLE",
        "WORKLOADS",
        "PODS",
        "ATTESTED",
        "VERIFIED",
        "READY",
    ]
    assert table[1].split()[:4] == ["gw", "enforcing", digest[7:19], "1"]
    # The claims writer: a Role allowing only `create` on ConfigMaps, bound to the pod's SA.
    sa = f"system:serviceaccount:{ns}:default"
    can = k8s_cluster.kubectl
    assert (
        can(
            "auth", "can-i", "create", "configmaps", "-n", ns, "--as", sa, check=False
        ).stdout.strip()
        == "yes"
    )
    for verb in ("get", "list", "delete", "update"):
        out = can("auth", "can-i", verb, "configmaps", "-n", ns, "--as", sa, check=False).stdout
        assert out.strip() == "no", verb


def test_placement_variants(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    require_simulated(k8s_cluster)
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(k8s_cluster, bundle("policy", ns, ALLOW, expected=digest))
    cases = {
        "tdx-rc": ({"runtimeClassName": "kata-qemu-tdx"}, {"cc-nfd-tdx"}),
        "cvm": ({"teeTypes": ["azure-cvm"]}, {"cc-aks-cvm"}),
        "gke-snp": (
            {
                "teeTypes": ["sev-snp"],
                "nodeLabels": {"cloud.google.com/gke-confidential-nodes-instance-type": "SEV_SNP"},
            },
            {"cc-gke-snp"},
        ),
        "tdx-any": ({"teeTypes": ["tdx"]}, {"cc-nfd-tdx", "cc-gke-tdx"}),
    }
    objs: list[dict[str, Any]] = []
    for app, (placement, _) in cases.items():
        objs.append(deployment(app, ns, app=app))
        objs.append(gateway(f"gw-{app}", ns, "policy", digest, app=app, placement=placement))
    apply(k8s_cluster, *objs)
    for app, (_, nodes) in cases.items():

        def placed(app: str = app) -> str | None:
            pods = [
                p
                for p in _pods(k8s_cluster, ns, app)
                if p["status"].get("phase") == "Running" and p["spec"].get("initContainers")
            ]
            return pods[0]["spec"]["nodeName"] if pods else None

        node = k8s_cluster.wait_for(f"{app} scheduled", placed, timeout=60)
        assert node in nodes, (app, node)


def test_idempotent_no_rollout_on_restart_and_resync(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    time.sleep(1)
    before = get(k8s_cluster, "deployment", "agent", ns)
    rs_before = {r["metadata"]["name"] for r in get_list(k8s_cluster, "rs", ns)}
    running.stop()
    running.start()
    # The restarted operator re-lists everything and reconciles every key once; then a resync.
    time.sleep(3)
    after = get(k8s_cluster, "deployment", "agent", ns)
    assert before is not None and after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert {r["metadata"]["name"] for r in get_list(k8s_cluster, "rs", ns)} == rs_before


def test_drift_repaired_user_edits_kept(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    dep = get(k8s_cluster, "deployment", "agent", ns)
    assert dep is not None
    good_sidecar = dep["spec"]["template"]["spec"]["initContainers"][0]
    patch = [
        {"op": "replace", "path": "/spec/template/spec/initContainers/0/image", "value": "evil:1"},
        # Someone tries to switch the gateway to software attestation behind our back.
        {
            "op": "add",
            "path": "/spec/template/spec/initContainers/0/env/-",
            "value": {"name": "CMCP_DEV_MODE", "value": "1"},
        },
    ]
    k8s_cluster.kubectl(
        "patch", "deployment", "agent", "-n", ns, "--type=json", "-p", json.dumps(patch)
    )

    def repaired() -> bool:
        cur = get(k8s_cluster, "deployment", "agent", ns)
        return bool(cur) and cur["spec"]["template"]["spec"]["initContainers"][0] == good_sidecar  # type: ignore[index]

    k8s_cluster.wait_for("sidecar restored", repaired)
    events = k8s_cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=agent,reason=InjectionRepaired",
    ).stdout
    assert "InjectionRepaired" in events
    # A change to the agent's own container is the user's and is kept, sidecar included.
    patch = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": "registry.invalid/agent:2",
        }
    ]
    k8s_cluster.kubectl(
        "patch", "deployment", "agent", "-n", ns, "--type=json", "-p", json.dumps(patch)
    )
    time.sleep(2)
    cur = get(k8s_cluster, "deployment", "agent", ns)
    assert cur is not None
    assert cur["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/agent:2"
    assert cur["spec"]["template"]["spec"]["initContainers"][0] == good_sidecar


def _template_without_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj["spec"]["template"])


def test_opt_out_and_gateway_deletion_restore_the_original(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    _, original = serve(k8s_cluster, ns)
    # Created opted out, so its stored original can be read before the operator acts.
    apply(k8s_cluster, deployment("other", ns, labels={"cmcp.dev/inject": "false"}))
    other_original = get(k8s_cluster, "deployment", "other", ns)
    k8s_cluster.kubectl("label", "deployment", "other", "-n", ns, "cmcp.dev/inject-")
    k8s_cluster.wait_for(
        "second injected", lambda: injected(get(k8s_cluster, "deployment", "other", ns))
    )
    k8s_cluster.kubectl("label", "deployment", "agent", "-n", ns, "cmcp.dev/inject=false")

    def stripped(name: str) -> dict[str, Any] | None:
        cur = get(k8s_cluster, "deployment", name, ns)
        return cur if cur and not injected(cur) else None

    cur = k8s_cluster.wait_for("opted-out workload stripped", lambda: stripped("agent"))
    assert cur["spec"]["template"] == original["spec"]["template"]
    assert "cmcp.dev/injection" not in (cur["metadata"].get("annotations") or {})
    k8s_cluster.kubectl("delete", "mcpgateway", "gw", "-n", ns, "--wait=false")
    cur = k8s_cluster.wait_for("gateway's workload stripped", lambda: stripped("other"))
    assert other_original is not None
    assert cur["spec"]["template"] == other_original["spec"]["template"]
    k8s_cluster.wait_for("gateway gone", lambda: get(k8s_cluster, "mcpgw", "gw", ns) is None)
    # What the gateway owned (its config ConfigMap, the claims Role and RoleBinding) goes with it.
    k8s_cluster.wait_for(
        "config ConfigMap collected",
        lambda: not get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=config"),
    )


def test_bundle_repin_rolls_workloads(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    rs_before = len(get_list(k8s_cluster, "rs", ns))
    new_digest = bundle_hash("read-only")
    apply(k8s_cluster, bundle("policy-v2", ns, "read-only", expected=new_digest))
    wait_condition(k8s_cluster, "mcpb", "policy-v2", ns, "Ready", "True")
    gw = get(k8s_cluster, "mcpgw", "gw", ns)
    assert gw is not None
    gw["spec"]["bundle"] = {"name": "policy-v2", "hash": new_digest}
    apply_spec(k8s_cluster, gw)

    def rolled() -> bool:
        dep = get(k8s_cluster, "deployment", "agent", ns) or {}
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        return vols["cmcp-bundle"]["configMap"]["name"] == f"mcpb-policy-v2-{new_digest[7:19]}"

    k8s_cluster.wait_for("workload rolled to the new bundle", rolled)
    k8s_cluster.wait_for(
        "a new ReplicaSet", lambda: len(get_list(k8s_cluster, "rs", ns)) > rs_before
    )
    k8s_cluster.wait_for(
        "status shows the new bundle",
        lambda: (
            ((get(k8s_cluster, "mcpgw", "gw", ns) or {}).get("status") or {}).get("bundleHash")
            == new_digest
        ),
    )
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")


def test_statefulset_injected(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    digest = bundle_hash(ALLOW)
    apply(k8s_cluster, bundle("policy", ns, ALLOW, expected=digest))
    sts = deployment("db-agent", ns)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db-agent"
    apply(k8s_cluster, sts, gateway("gw", ns, "policy", digest))
    k8s_cluster.wait_for(
        "statefulset injected", lambda: injected(get(k8s_cluster, "statefulset", "db-agent", ns))
    )
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    assert gw["status"]["injectedWorkloads"] == ["StatefulSet/db-agent"]


def test_rendered_configmaps_deleted_behind_our_back_come_back(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    ns = k8s_namespace
    serve(k8s_cluster, ns)
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    bundle_cm = get(k8s_cluster, "mcpb", "policy", ns)["status"]["configMapName"]  # type: ignore[index]
    config_cm = gw["status"]["configMapName"]
    k8s_cluster.kubectl("delete", "configmap", bundle_cm, config_cm, "-n", ns)
    for name in (bundle_cm, config_cm):
        k8s_cluster.wait_for(
            f"{name} re-rendered", lambda name=name: get(k8s_cluster, "configmap", name, ns)
        )


def test_candidate_bundle_evaluated_in_shadow(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess
) -> None:
    """A candidate is mounted into the sidecar for shadow evaluation once it is Ready (never
    before), with its own catalog, and the disagreements the sidecars' claims report (a
    catalog refusal among them) reach the gateway's status."""
    ns = k8s_namespace
    active, _ = serve(k8s_cluster, ns, attestation={"allowSoftware": True})
    before = get(k8s_cluster, "deployment", "agent", ns)
    candidate = bundle_hash("read-only")
    gw = get(k8s_cluster, "mcpgw", "gw", ns)
    assert gw is not None
    gw["spec"]["candidateBundle"] = {"name": "next", "hash": candidate}
    apply_spec(k8s_cluster, gw)
    obj = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "CandidateBundle", "False", "CandidateBundleNotFound"
    )
    assert "next" in condition(obj, "CandidateBundle")["message"]
    assert condition(obj, "Ready")["status"] == "True"  # the active bundle still serves
    after = get(k8s_cluster, "deployment", "agent", ns)
    assert after["spec"]["template"] == before["spec"]["template"]  # type: ignore[index]

    nxt = bundle("next", ns, "read-only", expected=candidate)
    own = [CatalogEntry("demo", "echo", "sha256:" + "a" * 64)]
    nxt["spec"]["catalog"] = json.dumps(catalog_document(own))
    apply(k8s_cluster, nxt)
    obj = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "CandidateBundle", "True", "ShadowEvaluating"
    )
    assert candidate in condition(obj, "CandidateBundle")["message"]
    next_cm = get(k8s_cluster, "mcpb", "next", ns)["status"]["configMapName"]  # type: ignore[index]

    def mounted() -> dict[str, Any] | None:
        dep = get(k8s_cluster, "deployment", "agent", ns)
        spec = (dep or {})["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        return (
            spec
            if vols.get("cmcp-candidate", {}).get("configMap", {}).get("name") == next_cm
            else None
        )

    spec = k8s_cluster.wait_for("candidate mounted", mounted)
    sidecar = spec["initContainers"][0]
    assert {"name": "cmcp-candidate", "mountPath": "/etc/cmcp/candidate", "readOnly": True} in (
        sidecar["volumeMounts"]
    )
    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "Ready", "True")
    config = get(k8s_cluster, "configmap", gw["status"]["configMapName"], ns)
    rendered = config["data"]["cmcp-config.yaml"]  # type: ignore[index]
    assert "shadow_bundle_path: /etc/cmcp/candidate\n" in rendered
    assert "shadow_catalog_path: /etc/cmcp/candidate/catalog.json" in rendered

    # A claim reporting the candidate's disagreements, as the sidecar signs it.
    ref = "sha256:" + "e" * 64
    shadow = {
        "bundle_hash": candidate,
        "evaluated": 5,
        "disagreeing": 2,
        "disagreements": [
            {
                "tool": "echo",
                "active": "allow",
                "candidate": "deny:catalog",
                "count": 2,
                "audit_refs": [ref],
            }
        ],
    }
    the_pod = injected_pod(
        k8s_cluster,
        ns,
        where=lambda p: any(v["name"] == "cmcp-candidate" for v in p["spec"].get("volumes") or []),
    )
    publish_claim(
        k8s_cluster,
        the_pod,
        active,
        "shadowed",
        gateway_extra={"bundle": {"candidate_hash": candidate}, "shadow": shadow},
    )

    def reported() -> dict[str, Any] | None:
        st = (get(k8s_cluster, "mcpgw", "gw", ns) or {}).get("status") or {}
        return st if (st.get("shadow") or {}).get("evaluated") == 5 else None

    status = k8s_cluster.wait_for("shadow results in status", reported)
    assert status["shadow"] == {
        "candidateHash": candidate,
        "evaluated": 5,
        "disagreeing": 2,
        "disagreements": [
            {
                "tool": "echo",
                "active": "allow",
                "candidate": "deny:catalog",
                "count": 2,
                "auditRefs": [f"{the_pod['metadata']['name']}:{ref}"],
            }
        ],
    }
    obj = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "CandidateBundle", "True")
    assert "5 decisions compared" in condition(obj, "CandidateBundle")["message"]
    out = kubectl_cmcp(k8s_cluster, "status", "-n", ns).stdout
    table = out.split("Shadow evaluation (candidate bundle would decide differently):\n")[1]
    assert table.splitlines()[1].split()[:5] == ["gw", "echo", "allow", "deny:catalog", "2"]
