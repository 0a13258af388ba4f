"""The issue's end-to-end test, on the real control plane.

kubectl applies the CRDs, a pinned bundle (with the catalog of a real MCP server) and an
McpGateway; an agent Deployment gets the sidecar and lands only on a simulated confidential
node. kwok runs no containers, so the sidecar then runs here as that pod would: the exact
config and bundle the operator rendered (read from the ConfigMaps the pod mounts, each
volume materialised under a temporary root — the only change to the config is that root
prefixed to its mount paths, and the listen port), the downward-API environment resolved
from the pod, ``CMCP_DEV_MODE=1`` as the McpGateway allows (no hardware here), and a
TokenRequest token bound to the pod in place of the projected one. The official MCP SDK
client drives calls through it; closing the session makes a claim, which appears as a
ConfigMap owned by the Pod, and the McpGateway status reports it verified.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import yaml
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from opkit import (
    REPO,
    OperatorProcess,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    get,
    get_list,
)
from tests.mcp.peers import free_port, sdk_server

from cmcp_e2e.handle import K8sCluster
from cmcp_e2e.pytest_plugin import require_simulated
from mcp import Client

BIN = Path(sys.executable).parent


def _catalog(upstream: str) -> str:
    pinned = subprocess.run(
        [str(BIN / "cmcp"), "catalog", "pin", "--upstream", upstream, "--name", "tools"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    catalog = json.loads(pinned.stdout)
    for tool in catalog["tools"]:
        if tool["name"] == "lookup_customer":
            tool["labels"] = ["pii"]
    return json.dumps(catalog, indent=2)


def _resolve_env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would set it (downward API resolved)."""
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
    }
    env = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _materialise(
    cluster: K8sCluster, pod: dict[str, Any], sidecar: dict[str, Any], root: Path
) -> dict[str, Path]:
    """Write each volume the sidecar mounts under ``root`` + its mountPath."""
    ns = pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    paths = {}
    for mount in sidecar["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        paths[mount["name"]] = target
        vol = volumes[mount["name"]]
        if "configMap" in vol:
            cm = get(cluster, "configmap", vol["configMap"]["name"], ns)
            assert cm is not None, vol
            for key, text in cm["data"].items():
                (target / key).write_text(text)
        elif "projected" in vol:  # the service-account token volume
            token = cluster.kubectl(
                "create",
                "token",
                pod["spec"].get("serviceAccountName", "default"),
                "-n",
                ns,
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                pod["metadata"]["name"],
                "--bound-object-uid",
                pod["metadata"]["uid"],
                "--duration=1h",
            ).stdout.strip()
            (target / "token").write_text(token)
            kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
            ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
            (target / "ca.crt").write_bytes(base64.b64decode(ca))
            (target / "namespace").write_text(ns)
    return paths


def _local_config(root: Path, config_path: Path, port: int) -> Path:
    config = yaml.safe_load(config_path.read_text())
    for key in ("policy_bundle_path", "catalog_path"):
        if config.get(key):
            config[key] = str(root / config[key].lstrip("/"))
    config["audit"]["path"] = str(root / config["audit"]["path"].lstrip("/"))
    config["claims"]["dir"] = str(root / config["claims"]["dir"].lstrip("/"))
    for up in config["upstreams"]:
        if up.get("headers_from_file"):
            up["headers_from_file"] = str(root / up["headers_from_file"].lstrip("/"))
    config["listen_addr"] = f"127.0.0.1:{port}"
    local = root / "local-config.yaml"
    local.write_text(yaml.safe_dump(config))
    return local


async def _drive(url: str) -> tuple[str, list[str]]:
    sessions: set[str] = set()
    outcomes = []

    async def remember(response: httpx2.Response) -> None:
        if "cmcp-claim-session" in response.headers:
            sessions.add(response.headers["cmcp-claim-session"])

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30), event_hooks={"response": [remember]})
    transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
    async with http, Client(transport, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get_env", "lookup_customer"} <= names
        result = await client.call_tool("echo", {"text": "through the sidecar"})
        outcomes.append("allowed" if not result.is_error else "error")
        try:
            await client.call_tool("get_env", {"name": "HOME"})
            outcomes.append("forwarded")
        except MCPError:
            outcomes.append("denied")
        result = await client.call_tool("lookup_customer", {"customer_id": "c-42"})
        text = " ".join(getattr(b, "text", "") for b in result.content)
        outcomes.append("redacted" if "123-45-6789" not in text else "leaked")
    assert len(sessions) == 1, sessions
    return sessions.pop(), outcomes


def test_end_to_end(
    k8s_cluster: K8sCluster, k8s_namespace: str, running: OperatorProcess, tmp_path: Path
) -> None:
    require_simulated(k8s_cluster)
    ns = k8s_namespace
    with sdk_server() as upstream:
        digest = bundle_hash("demo")
        policy = bundle("policy", ns, "demo", expected=digest)
        policy["spec"]["catalog"] = _catalog(upstream)
        gw = gateway(
            "gw",
            ns,
            "policy",
            digest,
            attestation={"allowSoftware": True},
            upstreams=[{"name": "tools", "url": upstream}],
        )
        manifests = tmp_path / "manifests.yaml"
        manifests.write_text(yaml.safe_dump_all([policy, gw, deployment("agent", ns)]))
        k8s_cluster.kubectl("apply", "-f", str(REPO / "crds"))
        k8s_cluster.kubectl("apply", "-f", str(manifests))

        def landed() -> dict[str, Any] | None:
            for pod in get_list(k8s_cluster, "pods", ns, "app=agent"):
                inits = pod["spec"].get("initContainers") or []
                if (
                    pod["status"].get("phase") == "Running"
                    and inits
                    and not pod["metadata"].get("deletionTimestamp")
                ):
                    return pod
            return None

        pod = k8s_cluster.wait_for("the injected pod running", landed, timeout=90)
        assert pod["spec"]["nodeName"] in ("cc-nfd-snp", "cc-gke-snp")
        node = get(k8s_cluster, "node", pod["spec"]["nodeName"], "default")
        assert node is not None and any(
            t["key"] == "confidential-computing" for t in node["spec"]["taints"]
        )

        sidecar = pod["spec"]["initContainers"][0]
        root = tmp_path / "pod"
        paths = _materialise(k8s_cluster, pod, sidecar, root)
        port = free_port()
        config = _local_config(root, paths["cmcp-config"] / "cmcp-config.yaml", port)
        host, _, api_port = k8s_cluster.server.removeprefix("https://").rpartition(":")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            **_resolve_env(sidecar, pod),
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": api_port,
            "CMCP_SERVICEACCOUNT_DIR": str(paths["cmcp-token"]),
        }
        assert env["CMCP_DEV_MODE"] == "1"  # the McpGateway allows software attestation
        log = (tmp_path / "sidecar.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "cmcp"), "start", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            probe = [sys.executable, "-m", "cmcp_sidecar.probe", f"http://127.0.0.1:{port}/readyz"]
            k8s_cluster.wait_for(
                "the startup probe passes",
                lambda: (
                    (
                        proc.poll() is None
                        and subprocess.run(probe, capture_output=True).returncode == 0
                    )
                    or proc.poll() is not None
                ),
                timeout=60,
            )
            assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()
            session, outcomes = anyio.run(_drive, f"http://127.0.0.1:{port}/mcp")
            assert outcomes == ["allowed", "denied", "redacted"]
            closed = httpx2.post(f"http://127.0.0.1:{port}/sessions/{session}/close", timeout=30)
            assert closed.status_code == 200, closed.text
            claim = closed.json()
            assert claim["gateway"]["session_id"] == session

            def published() -> list[dict[str, Any]]:
                return [
                    c
                    for c in get_list(k8s_cluster, "configmaps", ns, "cmcp.dev/component=claim")
                    if c["metadata"]["annotations"].get("cmcp.dev/session") == session
                ]

            cms = k8s_cluster.wait_for("the claim ConfigMap", published, timeout=30)
            owner = cms[0]["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["uid"]) == ("Pod", pod["metadata"]["uid"])
            assert json.loads(cms[0]["data"]["claim.json"]) == claim

            def verified() -> dict[str, Any] | None:
                status = (get(k8s_cluster, "mcpgw", "gw", ns) or {}).get("status") or {}
                return status if status.get("podsVerified") == 1 else None

            status = k8s_cluster.wait_for(
                "the gateway reports the pod verified", verified, timeout=30
            )
            assert status["lastClaims"][0]["session"] == session
            assert status["lastClaims"][0]["platform"] == "software-only"
            assert status["decisions"]["calls"] == 3
            assert (
                status["decisions"]["allow"],
                status["decisions"]["deny"],
                status["decisions"]["redact"],
            ) == (1, 1, 1)
            table = k8s_cluster.kubectl("get", "mcpgateways", "-n", ns).stdout.splitlines()
            assert table[1].split()[5:8] == ["0", "1", "True"]  # attested 0, verified 1, ready
            # An auditor checks the same claim offline against the pin.
            claim_file = tmp_path / "claim.json"
            claim_file.write_text(cms[0]["data"]["claim.json"])
            audit = subprocess.run(
                [
                    str(BIN / "cmcp-verify"),
                    "claim",
                    str(claim_file),
                    "--allow-software",
                    "--bundle-hash",
                    digest,
                ],
                capture_output=True,
                text=True,
            )
            assert audit.returncode == 0, audit.stdout + audit.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(20) == 0, (tmp_path / "sidecar.log").read_text()[-3000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
