"""`kubectl cmcp` run by the real kubectl binary (plugin found on PATH) against the test
control plane: verify claims offline, status, bundle hash/validate/render, kubectl flags."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from opkit import (
    BIN,
    POLICIES,
    OperatorProcess,
    bundle_hash,
    injected_pod,
    kubectl_cmcp,
    publish_claim,
    serve,
    wait_condition,
)

from cmcp_e2e.handle import K8sCluster


def test_plugin_is_discovered_by_kubectl(k8s_cluster: K8sCluster) -> None:
    env = k8s_cluster.env()
    env["PATH"] = f"{BIN}:{env['PATH']}"
    out = subprocess.run(
        [str(k8s_cluster.kubectl_path), "plugin", "list"], env=env, capture_output=True, text=True
    )
    assert str(BIN / "kubectl-cmcp") in out.stdout
    res = kubectl_cmcp(k8s_cluster, "--help")
    assert res.returncode == 0 and "verify" in res.stdout and "bundle" in res.stdout


def test_verify_and_status(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    digest, _ = serve(cluster, ns, attestation={"allowSoftware": True})
    pod = injected_pod(cluster, ns)
    name = pod["metadata"]["name"]

    res = kubectl_cmcp(cluster, "verify", "gw", "-n", ns)
    assert res.returncode == 1 and "No claims found" in res.stdout  # nothing to verify: fail

    publish_claim(cluster, pod, digest, "s1", decisions=["allow", "deny", "deny"])
    res = kubectl_cmcp(cluster, "verify", "gw", "-n", ns)
    assert res.returncode == 0, res.stdout + res.stderr
    header, row = res.stdout.splitlines()[:2]
    assert header.split()[:3] == ["GATEWAY", "POD", "VERDICT"]
    assert row.split()[:3] == ["gw", name, "verified"]

    res = kubectl_cmcp(cluster, "verify", f"pod/{name}", "-n", ns, "-o", "json")
    assert res.returncode == 0
    doc = json.loads(res.stdout)
    assert doc["verified"] is True and doc["claims"][0]["bundleHash"] == digest
    assert doc["claims"][0]["attested"] is False  # a software claim: verified, not attested

    res = kubectl_cmcp(cluster, "verify", "-A", "-o", "yaml")
    assert any(c["namespace"] == ns for c in yaml.safe_load(res.stdout)["claims"])

    # The operator's view, as kubectl cmcp status prints it.
    wait_condition(cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True")
    res = kubectl_cmcp(cluster, "status", "-n", ns)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "MODE", "BUNDLE"]
    assert lines[1].split()[:3] == ["gw", "enforcing", f"policy@{digest[7:19]}"]
    assert any(line.split()[:3] == ["gw", name, "verified"] for line in lines[3:])
    doc = yaml.safe_load(kubectl_cmcp(cluster, "status", "-n", ns, "-o", "yaml").stdout)
    (gw,) = doc["gateways"]
    assert gw["podsVerified"] == 1 and gw["pods"][0]["name"] == name
    assert gw["decisions"]["deny"] == 2

    # A newer claim naming another bundle: rejected, exit status 1, the reason says why.
    other = bundle_hash("read-only")
    publish_claim(cluster, pod, other, "s2", iat=int(time.time()) + 5)
    res = kubectl_cmcp(cluster, "verify", "gw", "-n", ns)
    assert res.returncode == 1
    assert "BundleHashMismatch" in res.stdout and other in res.stdout

    res = kubectl_cmcp(cluster, "verify", "nosuchgw", "-n", ns)
    assert res.returncode == 1 and "No claims found" in res.stdout


def test_kubeconfig_context_and_namespace_flags(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    """--kubeconfig and --context as kubectl takes them; -n defaults to the context's."""
    cfg = yaml.safe_load(k8s_cluster.kubeconfig.read_text())
    ctx = dict(cfg["contexts"][0])
    ctx["name"] = "elsewhere"
    ctx["context"] = {**ctx["context"], "namespace": k8s_namespace}
    cfg["contexts"].append(ctx)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in k8s_cluster.env().items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config to fall back on
    res = kubectl_cmcp(
        k8s_cluster, "--kubeconfig", str(path), "--context", "elsewhere", "status", env=env
    )
    assert res.returncode == 0, res.stderr
    assert f"namespace {k8s_namespace}" in res.stdout  # "No McpGateways found in namespace …"
    res = kubectl_cmcp(k8s_cluster, "status", "--context", "nosuch", "--kubeconfig", str(path))
    assert res.returncode == 2 and "kubectl.kubeconfig" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreachable_cluster_is_a_clean_error(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    cfg = yaml.safe_load(k8s_cluster.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    res = kubectl_cmcp(k8s_cluster, "verify", "--kubeconfig", str(path), "-A")
    assert res.returncode == 2
    assert "kubectl.unreachable" in res.stderr and "Traceback" not in res.stderr


def test_bundle_commands(k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path) -> None:
    src = POLICIES / "allow-all-but-one"
    digest = bundle_hash("allow-all-but-one")
    res = kubectl_cmcp(k8s_cluster, "bundle", "hash", str(src))
    assert res.returncode == 0 and res.stdout.strip() == digest

    res = kubectl_cmcp(k8s_cluster, "bundle", "validate", str(src), "-o", "json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["valid"] is True and doc["hash"] == digest

    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "policies.cedar").write_text("permit(principal, action, resource)\n")
    res = kubectl_cmcp(k8s_cluster, "bundle", "validate", str(broken))
    assert res.returncode == 1 and "policies.cedar:" in res.stderr and "invalid" in res.stderr
    assert "Traceback" not in res.stderr
    res = kubectl_cmcp(k8s_cluster, "bundle", "hash", str(tmp_path / "missing"))
    assert res.returncode == 2 and "bundle.not_found" in res.stderr

    manifest = kubectl_cmcp(
        k8s_cluster, "bundle", "render", str(src), "--name", "policy", "-n", k8s_namespace
    ).stdout
    obj = yaml.safe_load(manifest)
    assert obj["kind"] == "McpPolicyBundle" and obj["spec"]["expectedHash"] == digest
    # What it renders is what the API server accepts (the CRD's schema and CEL rules).
    out = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert "created (server dry run)" in out.stdout


@pytest.mark.parametrize("bad", ["deployment/x", "pod/"])
def test_bad_target_is_a_usage_error(k8s_cluster: K8sCluster, bad: str) -> None:
    res = kubectl_cmcp(k8s_cluster, "verify", bad)
    assert res.returncode == 2 and "error:" in res.stderr
