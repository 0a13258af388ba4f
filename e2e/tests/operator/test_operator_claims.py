"""Claims in the cluster: the sidecar's ConfigMap sink (create-only, owner Pod, retries,
no duplicates) and the operator verifying them into McpGateway status."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import yaml
from opkit import (
    OperatorProcess,
    TcpProxy,
    bundle_hash,
    condition,
    get_list,
    injected_pod,
    serve,
    wait_condition,
)
from tests.verifier.claimfactory import make_claim

from cmcp_e2e.handle import K8sCluster
from cmcp_sidecar.claims.kubernetes import KubernetesConfigMapSink, from_environment

ALLOW = "allow-all-but-one"


def _sa_dir(cluster: K8sCluster, ns: str, sa: str, directory: Path) -> Path:
    """What the projected volume would hold: a TokenRequest token of the pod's SA and the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    (directory / "token").write_text(token)
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
    (directory / "ca.crt").write_bytes(base64.b64decode(ca))
    return directory


def _sink(
    server: str, pod: dict[str, Any], sa_dir: Path, data_dir: Path
) -> KubernetesConfigMapSink:
    host, _, port = server.removeprefix("https://").rpartition(":")
    return from_environment(
        data_dir,
        {
            "CMCP_POD_NAME": pod["metadata"]["name"],
            "CMCP_POD_NAMESPACE": pod["metadata"]["namespace"],
            "CMCP_POD_UID": pod["metadata"]["uid"],
            "CMCP_GATEWAY_NAME": "gw",
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "CMCP_SERVICEACCOUNT_DIR": str(sa_dir),
        },
    )


def _claim(pod: dict[str, Any], digest: str, session: str, **kw: Any) -> bytes:
    def mutate(trace: dict[str, Any], gw: dict[str, Any]) -> None:
        gw["instance_id"] = pod["metadata"]["name"]

    claim, _ = make_claim(session=session, bundle=digest, mutate=mutate, **kw)
    return json.dumps(claim).encode()


def _setup(cluster: K8sCluster, ns: str) -> tuple[str, dict[str, Any]]:
    """A served gateway, its injected pod, and the operator's claims RoleBinding in force (the
    operator binds the pod's service account on its own schedule, after the pod may run)."""
    digest, _ = serve(cluster, ns, attestation={"allowSoftware": True})
    pod = injected_pod(cluster, ns)
    sa = f"system:serviceaccount:{ns}:default"
    cluster.wait_for(
        "the claims RoleBinding",
        lambda: (
            cluster.kubectl(
                "auth", "can-i", "create", "configmaps", "-n", ns, "--as", sa, check=False
            ).stdout.strip()
            == "yes"
        ),
        timeout=60,
    )
    return digest, pod


def test_claims_published_verified_and_collected_with_the_pod(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    ns = k8s_namespace
    digest, pod = _setup(k8s_cluster, ns)
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")

    async def publish() -> KubernetesConfigMapSink:
        sink = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        await sink.put("s1-5", _claim(pod, digest, "s1"))
        await sink.put("s2-7", _claim(pod, digest, "s2", decisions=["deny"] * 4))
        assert await sink.flush(20), sink.stats
        await sink.aclose()
        return sink

    sink = asyncio.run(publish())
    assert sink.stats.published == 2 and sink.stats.failures == 0
    claims = get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")
    assert len(claims) == 2
    cm = claims[0]
    assert cm["immutable"] is True
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Pod",
        pod["metadata"]["name"],
        pod["metadata"]["uid"],
    )
    labels = cm["metadata"]["labels"]
    assert labels["cmcp.dev/gateway"] == "gw" and labels["cmcp.dev/pod"] == pod["metadata"]["name"]
    assert labels["cmcp.dev/session"] in ("s1", "s2")

    gw = wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True", timeout=30)
    status = gw["status"]
    assert status["podsInjected"] == 1 and status["podsVerified"] == 1
    assert status["podsAttested"] == 0  # software claims: verified (allowed), not attested
    assert status["lastClaims"][0]["pod"] == pod["metadata"]["name"]
    assert status["lastClaims"][0]["verdict"] == "verified"
    assert status["decisions"]["calls"] == 3 + 2 and status["decisions"]["deny"] >= 2

    # Publishing again (a restarted sidecar, an ambiguous retry) never duplicates.
    async def republish() -> KubernetesConfigMapSink:
        again = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        for marker in (tmp_path / "claims" / ".published").iterdir():
            marker.unlink()  # as if the process died between create and marking
        assert await again.start() == 2
        assert await again.flush(20)
        await again.aclose()
        return again

    again = asyncio.run(republish())
    assert again.stats.already_existed == 2 and again.stats.published == 0
    assert len(get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")) == 2

    # A newer claim of the pod naming another bundle flags the pod.
    async def other_bundle() -> None:
        s = _sink(k8s_cluster.server, pod, sa_dir, tmp_path / "claims")
        await s.put("s3-9", _claim(pod, bundle_hash("read-only"), "s3", iat=int(time.time()) + 5))
        assert await s.flush(20)
        await s.aclose()

    asyncio.run(other_bundle())
    gw = wait_condition(
        k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "False", "BundleHashMismatch"
    )
    assert bundle_hash("read-only") in condition(gw, "ClaimsVerified")["message"]
    assert gw["status"]["podsVerified"] == 0

    # Owned by the pod: deleting the pod garbage-collects its claims.
    k8s_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    k8s_cluster.wait_for(
        "claims collected with their pod",
        lambda: (
            not [
                c
                for c in get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")
                if c["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
            ]
        ),
        timeout=60,
    )


def test_sink_retries_while_the_api_server_is_unreachable(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    ns = k8s_namespace
    digest, pod = _setup(k8s_cluster, ns)
    sa_dir = _sa_dir(k8s_cluster, ns, "default", tmp_path / "sa")
    proxy = TcpProxy(k8s_cluster.server)

    async def scenario() -> KubernetesConfigMapSink:
        sink = _sink(proxy.server, pod, sa_dir, tmp_path / "claims")
        sink.max_backoff = 1.0
        await sink.put("s1-5", _claim(pod, digest, "s1"))  # durable locally, API down
        assert not await sink.flush(2)
        assert sink.stats.failures >= 1 and sink.stats.pending == 1
        proxy.up()
        assert await sink.flush(20), sink.stats
        await sink.aclose()
        return sink

    try:
        sink = asyncio.run(scenario())
    finally:
        proxy.down()
    assert sink.stats.published == 1
    claims = get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")
    assert len(claims) == 1
    wait_condition(k8s_cluster, "mcpgw", "gw", ns, "ClaimsVerified", "True")


def test_claims_writer_is_create_only(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    """The token the sidecar holds can create ConfigMaps, nothing else."""
    ns = k8s_namespace
    _setup(k8s_cluster, ns)
    sa = f"system:serviceaccount:{ns}:default"
    allowed = {
        (verb, res): k8s_cluster.kubectl(
            "auth", "can-i", verb, res, "-n", ns, "--as", sa, check=False
        ).stdout.strip()
        for verb in ("create", "get", "list", "watch", "update", "patch", "delete")
        for res in ("configmaps", "secrets", "pods", "mcpgateways.cmcp.dev")
    }
    assert {k for k, v in allowed.items() if v == "yes"} == {("create", "configmaps")}
