"""The Helm chart (charts/cmcp-operator): lint, render, schema, no drift from operator/deploy
and crds/, and install/upgrade/uninstall on the test control plane with the real `helm`.

The rendered operator's own arguments and RBAC are exercised for real: an operator process
runs with the chart's ServiceAccount token and the Deployment's arguments and injects a
sidecar (kwok only simulates the Deployment's pods)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from opkit import (
    REPO,
    OperatorProcess,
    apply,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    get,
    injected,
    operator_like_deployment,
    paused,
    wait_condition,
)

from cmcp_e2e import build
from cmcp_e2e.handle import K8sCluster
from cmcp_operator.cli import parser as operator_parser

CHART = REPO / "charts" / "cmcp-operator"


@pytest.fixture(scope="module")
def helm() -> Path:
    return build.ensure_clients()[1]


def _helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {res.stderr}")
    return res


def render(helm: Path, *sets: str, release: str = "cmcp") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", "cmcp-system"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(_helm(helm, *args).stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])


def test_lint(helm: Path) -> None:
    out = _helm(helm, "lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


def test_chart_crds_are_the_generated_ones() -> None:
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top, "copy crds/*.yaml to charts/cmcp-operator/crds/ (docs/helm.md)"


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "resourceNames"} for r in doc["rules"]]


def test_rbac_equals_operator_deploy(helm: Path) -> None:
    deploy = list(yaml.safe_load_all((REPO / "operator/deploy/rbac.yaml").read_text()))
    docs = render(helm, release="cmcp-operator")
    cluster_role = one(docs, "ClusterRole")
    assert cluster_role["rules"] == one(deploy, "ClusterRole")["rules"]
    leader = one(docs, "Role", "-leader")
    assert _rules(leader) == _rules(one(deploy, "Role", "-leader"))
    # the Lease the Role allows is the one the operator is told to use
    assert leader["rules"][1]["resourceNames"] == ["cmcp-operator"]
    assert "--lease-name=cmcp-operator" in container(docs)["args"]


def test_default_render_is_hardened_and_complete(helm: Path) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "ghcr.io/confidential-mcp/cmcp-operator:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CMCP_SIDECAR_IMAGE"] == "ghcr.io/confidential-mcp/cmcp-sidecar:0.1.0"
    svc = one(docs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_rendered_args_are_the_operators_options(helm: Path) -> None:
    """Every argument the chart passes parses with cmcp-operator's own parser."""
    docs = render(
        helm,
        "watchNamespaces={a,b}",
        "enforcement.defaultMode=advisory",
        "placement.teeLabels.tdx[0].pool=tdx",
        "leaderElection=false",
    )
    args = operator_parser().parse_args(container(docs)["args"])
    assert args.namespace == ["a", "b"] and not args.all_namespaces
    assert args.default_enforcement_mode == "advisory" and args.leader_election is False
    assert str(args.placement_labels) == "/etc/cmcp/placement/placement.yaml"
    table = yaml.safe_load(one(docs, "ConfigMap", "-placement")["data"]["placement.yaml"])
    assert table == {"tdx": [{"pool": "tdx"}]}
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    defaults = operator_parser().parse_args(container(render(helm))["args"])
    assert defaults.all_namespaces and defaults.leader_election is True


def test_images_pinned_by_digest(helm: Path) -> None:
    digest = "sha256:" + "a" * 64
    c = container(render(helm, f"image.digest={digest}", "sidecarImage.tag=9.9", "image.tag=1.2"))
    assert c["image"] == f"ghcr.io/confidential-mcp/cmcp-operator:1.2@{digest}"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CMCP_SIDECAR_IMAGE"] == "ghcr.io/confidential-mcp/cmcp-sidecar:9.9"


BAD_VALUES = [
    ("enforcement.defaultMode=yolo", "/enforcement/defaultMode", "must be one of"),
    ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem", "must be true"),
    ("securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation", "false"),
    ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot", "must be true"),
    ("image.digest=sha256:xyz", "/image/digest", "does not match pattern"),
    ("replicaCount=0", "/replicaCount", "minimum"),
    ("watchNamespaces={Bad_NS}", "/watchNamespaces/0", "does not match pattern"),
    ("placement.teeLabels.sgx[0].a=b", "/placement/teeLabels", "'sgx' not allowed"),
    ("metrics.port=80", "/metrics/port", "minimum"),
    ("imagee.tag=x", "additional properties 'imagee' not allowed", ""),
    ("logLevel=verbose", "/logLevel", "must be one of"),
]


@pytest.mark.parametrize(("setting", "where", "why"), BAD_VALUES)
def test_schema_rejects_bad_values(helm: Path, setting: str, where: str, why: str) -> None:
    res = _helm(helm, "template", "x", str(CHART), "--set", setting, check=False)
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr
    assert where in res.stderr and why in res.stderr, res.stderr


# -- against the test control plane --------------------------------------------------------------


def _deployment_available(cluster: K8sCluster, ns: str, name: str, replicas: int) -> bool:
    dep = get(cluster, "deployment", name, ns) or {}
    st = dep.get("status") or {}
    return (
        st.get("observedGeneration") == dep["metadata"]["generation"]
        and st.get("availableReplicas") == replicas
        and st.get("updatedReplicas") == replicas
    )


def test_install_upgrade_uninstall(
    crds: K8sCluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    cluster = crds
    ns = cluster.create_namespace("helm")
    release, name = "cmcp-helm", "cmcp-helm-cmcp-operator"
    try:
        out = cluster.helm("install", release, str(CHART), "-n", ns, "--wait", "--timeout=90s")
        assert "STATUS: deployed" in out.stdout
        cluster.wait_for("operator available", lambda: _deployment_available(cluster, ns, name, 2))
        svc = get(cluster, "service", f"{name}-metrics", ns)
        assert svc is not None and svc["spec"]["ports"][0]["port"] == 9090

        # The chart's RBAC and the Deployment's arguments, run for real (the shared operator
        # paused: two operators would fight over the same gateway).
        with paused(operator):
            _reconcile_with_chart_identity(cluster, ns, name, tmp_path)

        cluster.helm(
            "upgrade", release, str(CHART), "-n", ns, "--wait", "--timeout=90s",
            "--set", "enforcement.defaultMode=advisory", "--set", "replicaCount=1",
        )  # fmt: skip
        cluster.wait_for("upgraded", lambda: _deployment_available(cluster, ns, name, 1))
        dep = get(cluster, "deployment", name, ns)
        assert dep is not None
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--default-enforcement-mode=advisory" in args
        history = json.loads(cluster.helm("history", release, "-n", ns, "-o", "json").stdout)
        assert [h["revision"] for h in history] == [1, 2]

        # The documented CRD upgrade path works on a Helm-installed cluster.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))

        cluster.helm("uninstall", release, "-n", ns, "--wait", "--timeout=60s")
        assert get(cluster, "deployment", name, ns) is None
        res = cluster.kubectl("get", "clusterrole", name, check=False)
        assert res.returncode != 0 and "NotFound" in res.stderr
        # Helm never deletes CRDs: custom resources survive an uninstall.
        cluster.kubectl("get", "crd", "mcpgateways.cmcp.dev")
    finally:
        cluster.helm("uninstall", release, "-n", ns, check=False)
        cluster.delete_namespace(ns)


def _reconcile_with_chart_identity(cluster: K8sCluster, ns: str, name: str, tmp: Path) -> None:
    """The operator with the chart's ServiceAccount token and the Deployment's own arguments
    (ports and leader election adapted to a local process) injects a sidecar into a workload
    and reports the chart's default enforcement mode."""
    work = cluster.create_namespace("helm-work")
    op = None
    try:
        op = operator_like_deployment(cluster, ns, name, tmp, "--namespace", work)
        digest = bundle_hash("allow-all-but-one")
        apply(cluster, bundle("policy", work, expected=digest))
        wait_condition(cluster, "mcpb", "policy", work, "Ready", "True")
        apply(cluster, deployment("agent", work), gateway("gw", work, "policy", digest))
        try:
            cluster.wait_for(
                "injected",
                lambda: injected(get(cluster, "deployment", "agent", work)),
                timeout=60,
            )
        except Exception:
            print(json.dumps(get(cluster, "mcpgw", "gw", work), indent=1), op.tail())
            raise
        gw = cluster.wait_for(
            "status written",
            lambda: (
                (get(cluster, "mcpgw", "gw", work) or {}).get("status", {}).get("bundleHash")
                and get(cluster, "mcpgw", "gw", work)
            ),
        )
        assert gw["status"]["enforcementMode"] == "enforcing"
    finally:
        if op is not None:
            op.stop()
        cluster.delete_namespace(work)
