"""The GitOps example (docs/examples/gitops, docs/gitops.md): CI rendering, Kustomize
overlays, Argo CD / Flux settings, and promotion / refusal / rollback on the test cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from opkit import REPO, OperatorProcess, get, wait_condition

from cmcp_e2e import build
from cmcp_e2e.handle import K8sCluster
from cmcp_operator import api
from cmcp_operator.models import Injection
from cmcp_verifier.bundle import bundle_hash

EXAMPLE = REPO / "docs" / "examples" / "gitops"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return build.ensure_clients()[0]


def kustomize(kubectl: Path, overlay: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def content_hash(mcpb: dict[str, Any]) -> str:
    spec = mcpb["spec"]
    files = {n: t.encode() for n, t in spec["policies"].items()}
    files["schema.cedarschema"] = spec["schema"].encode()
    files["manifest.json"] = spec["manifest"].encode()
    return bundle_hash(files)


def test_rendered_bundles_are_pinned_to_their_content() -> None:
    rendered = sorted((EXAMPLE / "rendered").iterdir())
    assert len(rendered) == 2
    for directory in rendered:
        mcpb = yaml.safe_load((directory / "mcppolicybundle.yaml").read_text())
        digest = mcpb["spec"]["expectedHash"]
        assert content_hash(mcpb) == digest
        assert directory.name == f"{mcpb['metadata']['name']}-{digest[7:19]}"


def test_ci_render_reproduces_the_committed_files(tmp_path: Path) -> None:
    """CI's render step on the bundle source gives exactly what is committed (no drift)."""
    copy = tmp_path / "gitops"
    shutil.copytree(EXAMPLE, copy)
    shutil.rmtree(copy / "rendered")
    (copy / "rendered").mkdir()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(copy / "ci" / "render.sh")], env=env, check=True, timeout=120)
    (new,) = list((copy / "rendered").iterdir())
    committed = EXAMPLE / "rendered" / new.name
    for name in ("mcppolicybundle.yaml", "kustomization.yaml"):
        assert (new / name).read_text() == (committed / name).read_text()


def test_overlays_render_one_pin_each(kubectl: Path) -> None:
    versions = {}
    for env in ("staging", "production"):
        docs = kustomize(kubectl, EXAMPLE / "overlays" / env)
        mcpb, gw = of_kind(docs, "McpPolicyBundle"), of_kind(docs, "McpGateway")
        assert gw["spec"]["bundle"] == {
            "name": mcpb["metadata"]["name"],
            "hash": mcpb["spec"]["expectedHash"],
        }
        assert {d["metadata"]["namespace"] for d in docs} == {f"agents-{env}"}
        versions[env] = yaml.safe_load(mcpb["spec"]["manifest"])["version"]
    assert versions == {"staging": "1.1.0", "production": "1.0.0"}


def test_argocd_and_flux_examples_match_the_operator() -> None:
    docs = list(yaml.safe_load_all((EXAMPLE / "argocd" / "application.yaml").read_text()))
    app = docs[0]
    assert (REPO / app["spec"]["source"]["path"]).is_dir()
    ignores = app["spec"]["ignoreDifferences"]
    assert {
        "group": "apps",
        "kind": "Deployment",
        "managedFieldsManagers": [api.FIELD_MANAGER],
    } in (ignores)
    jq = "\n".join(e for i in ignores for e in i.get("jqPathExpressions", []))
    for name in (api.SIDECAR_NAME, Injection().endpoint_env, api.ANN_INJECTION, "cmcp-"):
        assert name in jq
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    flux = list(yaml.safe_load_all((EXAMPLE / "flux" / "kustomization.yaml").read_text()))
    ks = flux[1]
    assert (REPO / ks["spec"]["path"]).is_dir() and ks["spec"]["force"] is False


# -- promotion on the cluster ----------------------------------------------------------------


def _apply_overlay(cluster: K8sCluster, tree: Path, env: str) -> None:
    cluster.kubectl("apply", "--server-side", "-k", str(tree / "overlays" / env))


def _pin(tree: Path, env: str, rendered: str) -> None:
    """The promotion commit: the overlay names another rendered bundle."""
    path = tree / "overlays" / env / "kustomization.yaml"
    lines = path.read_text().splitlines()
    lines = [f"  - ../../rendered/{rendered}" if "../../rendered/" in ln else ln for ln in lines]
    path.write_text("\n".join(lines) + "\n")


def _bundle_volume(cluster: K8sCluster, ns: str) -> str:
    dep = get(cluster, "deployment", "support-agent", ns) or {}
    for vol in dep.get("spec", {}).get("template", {}).get("spec", {}).get("volumes") or []:
        if vol["name"] == api.VOLUME_BUNDLE:
            return str(vol["configMap"]["name"])
    return ""


def _serving(cluster: K8sCluster, ns: str, digest: str) -> None:
    cluster.wait_for(
        f"workload on {digest[:19]}",
        lambda: digest[7:19] in _bundle_volume(cluster, ns),
        timeout=60,
    )
    cluster.wait_for(
        "gateway status on the new hash",
        lambda: (
            (get(cluster, "mcpgw", "support", ns) or {}).get("status", {}).get("bundleHash")
            == digest
        ),
    )
    wait_condition(cluster, "mcpgw", "support", ns, "Ready", "True", timeout=60)


def test_promotion_refusal_and_rollback(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    tree = tmp_path / "gitops"
    shutil.copytree(EXAMPLE, tree)
    prod = tree / "overlays" / "production" / "kustomization.yaml"
    prod.write_text(prod.read_text().replace("agents-production", ns))
    old, new = "support-policy-970c7d2b6824", "support-policy-c4e42e335b85"
    h_old = "sha256:970c7d2b682414eaab1ccd0a6fc99724b165a5fb4f34f965e7c2584925bc92cb"
    h_new = "sha256:c4e42e335b85eeea4bc305fb2cb23b2964b8c1eabbd65adf068255afba794b78"
    _apply_overlay(cluster, tree, "production")
    wait_condition(cluster, "mcpb", "support-policy", ns, "Ready", "True")
    _serving(cluster, ns, h_old)

    # Promotion: production now names what staging ran.
    _pin(tree, "production", new)
    _apply_overlay(cluster, tree, "production")
    _serving(cluster, ns, h_new)

    # Content that does not match its pin (edited by hand, or a bad merge) is refused; the
    # workloads keep the bundle they have.
    tampered = tree / "rendered" / new / "mcppolicybundle.yaml"
    tampered.write_text(tampered.read_text().replace('"delete-ticket"', '"close-ticket"'))
    _apply_overlay(cluster, tree, "production")
    wait_condition(cluster, "mcpb", "support-policy", ns, "HashMatches", "False", "HashMismatch")
    wait_condition(cluster, "mcpgw", "support", ns, "Ready", "False")
    assert h_new[7:19] in _bundle_volume(cluster, ns)

    # Rollback: re-pin the old hash.
    _pin(tree, "production", old)
    _apply_overlay(cluster, tree, "production")
    wait_condition(cluster, "mcpb", "support-policy", ns, "Ready", "True")
    _serving(cluster, ns, h_old)
