"""Smoke test of the control plane: what the operator, Helm and plugin tests rely on."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cmcp_e2e.handle import K8sCluster
from cmcp_e2e.pytest_plugin import require_simulated

GROUP = "e2e.cmcp.test"
CRD = f"widgets.{GROUP}"
CRD_MANIFEST = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 5},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _json(cluster: K8sCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _pods(cluster: K8sCluster, ns: str, selector: str) -> list[dict[str, Any]]:
    return list(_json(cluster, "get", "pods", "-n", ns, "-l", selector)["items"])


def _widget(ns: str, name: str, spec: dict[str, Any]) -> str:
    obj = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    obj["metadata"]["namespace"] = ns
    return yaml.safe_dump(obj)


@pytest.fixture(scope="module")
def widget_crd(k8s_cluster: K8sCluster) -> Iterator[str]:
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD_MANIFEST))
    k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=30s")
    yield CRD
    k8s_cluster.kubectl("delete", "crd", CRD, "--wait=false")


def test_crd_schema_rejects_invalid_objects(
    k8s_cluster: K8sCluster, k8s_namespace: str, widget_crd: str
) -> None:
    ok = k8s_cluster.kubectl("apply", "-f", "-", input=_widget(k8s_namespace, "ok", {"size": 3}))
    assert "widget.e2e.cmcp.test/ok created" in ok.stdout

    too_big = _widget(k8s_namespace, "big", {"size": 9, "color": "green"})
    res = k8s_cluster.kubectl("apply", "-f", "-", input=too_big, check=False)
    assert res.returncode != 0
    assert "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 5" in (
        res.stderr
    )
    assert 'spec.color: Unsupported value: "green"' in res.stderr

    missing = k8s_cluster.kubectl(
        "apply", "-f", "-", input=_widget(k8s_namespace, "empty", {}), check=False
    )
    assert "spec.size: Required value" in missing.stderr
    names = k8s_cluster.kubectl("get", "widgets", "-n", k8s_namespace, "-o", "name").stdout.split()
    assert names == ["widget.e2e.cmcp.test/ok"]


def test_server_side_apply_and_status_subresource(
    k8s_cluster: K8sCluster, k8s_namespace: str, widget_crd: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=alice",
        "-f",
        "-",
        input=_widget(ns, "w", {"size": 2, "color": "red"}),
    )
    conflict = k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bob",
        "-f",
        "-",
        input=_widget(ns, "w", {"size": 4}),
        check=False,
    )
    assert conflict.returncode != 0
    assert 'conflict with "alice"' in conflict.stderr and ".spec.size" in conflict.stderr
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bob",
        "--force-conflicts",
        "-f",
        "-",
        input=_widget(ns, "w", {"size": 4}),
    )
    obj = _json(k8s_cluster, "get", "widget", "w", "-n", ns, "--show-managed-fields")
    assert obj["spec"] == {"size": 4, "color": "red"}
    managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
    assert {"alice", "bob"} <= managers

    # Status is only writable through the status subresource, and that ignores spec.
    def merge_patch(body: dict[str, Any], *extra: str) -> None:
        k8s_cluster.kubectl(
            "patch", "widget", "w", "-n", ns, "--type=merge", "-p", json.dumps(body), *extra
        )

    merge_patch({"status": {"phase": "Ready"}, "spec": {"size": 1}}, "--subresource=status")
    merge_patch({"status": {"phase": "Hacked"}})
    obj = _json(k8s_cluster, "get", "widget", "w", "-n", ns)
    assert obj["status"] == {"phase": "Ready"}
    assert obj["spec"]["size"] == 4


def _deployment(name: str, replicas: int, pod_spec: dict[str, Any]) -> str:
    labels = {"app": name}
    container = {"name": "app", "image": "registry.invalid/app:1"}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], **pod_spec},
                },
            },
        }
    )


SNP_SELECTOR = {"feature.node.kubernetes.io/cpu-security.sev.snp.enabled": "true"}
CC_TOLERATION = {"key": "confidential-computing", "operator": "Exists", "effect": "NoSchedule"}


def test_snp_deployment_runs_only_when_it_tolerates_the_taint(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    require_simulated(k8s_cluster)
    ns = k8s_namespace
    k8s_cluster.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=_deployment("intolerant", 2, {"nodeSelector": SNP_SELECTOR}),
    )
    tolerant = {"nodeSelector": SNP_SELECTOR, "tolerations": [CC_TOLERATION]}
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=_deployment("tolerant", 2, tolerant))

    def running() -> list[dict[str, Any]] | None:
        pods = _pods(k8s_cluster, ns, "app=tolerant")
        ok = len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else None

    pods = k8s_cluster.wait_for("tolerant pods Running", running)
    assert {p["spec"]["nodeName"] for p in pods} == {"cc-nfd-snp"}
    assert all(p["status"]["podIP"] for p in pods)

    def unschedulable() -> list[dict[str, Any]] | None:
        pods = _pods(k8s_cluster, ns, "app=intolerant")
        conds = [
            c
            for p in pods
            for c in p["status"].get("conditions", [])
            if c["type"] == "PodScheduled"
        ]
        done = len(pods) == 2 and len(conds) == 2 and all(c["status"] == "False" for c in conds)
        return pods if done else None

    pods = k8s_cluster.wait_for("intolerant pods reported unschedulable", unschedulable)
    assert all(p["status"]["phase"] == "Pending" and not p["spec"].get("nodeName") for p in pods)
    message = pods[0]["status"]["conditions"][0]["message"]
    assert "untolerated taint {confidential-computing: true}" in message


@pytest.mark.parametrize(
    ("runtime_class", "node"),
    [
        ("kata-qemu-snp", "cc-nfd-snp"),
        ("kata-qemu-tdx", "cc-nfd-tdx"),
        ("kata-cc-isolation", "cc-aks-kata-cc"),
    ],
)
def test_runtime_class_schedules_onto_its_nodes(
    k8s_cluster: K8sCluster, k8s_namespace: str, runtime_class: str, node: str
) -> None:
    require_simulated(k8s_cluster)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cc"},
        "spec": {
            "runtimeClassName": runtime_class,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=json.dumps(pod))

    def placed() -> dict[str, Any] | None:
        obj: dict[str, Any] = _json(k8s_cluster, "get", "pod", "cc", "-n", k8s_namespace)
        return obj if obj["status"].get("phase") == "Running" else None

    obj = k8s_cluster.wait_for(f"pod with {runtime_class} Running", placed)
    assert obj["spec"]["nodeName"] == node
    # The RuntimeClass admission plugin merged the class's scheduling into the pod.
    assert obj["spec"]["nodeSelector"]
    assert any(t.get("key") == "confidential-computing" for t in obj["spec"]["tolerations"])


def test_garbage_collector_deletes_dependents(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=_deployment("gc", 2, {}))

    def owned() -> bool:
        return len(_pods(k8s_cluster, ns, "app=gc")) == 2

    k8s_cluster.wait_for("deployment pods", owned)
    rs = _json(k8s_cluster, "get", "replicasets", "-n", ns, "-l", "app=gc")["items"]
    assert [o["kind"] for o in rs[0]["metadata"]["ownerReferences"]] == ["Deployment"]

    # A plain owner reference, no controller involved: ConfigMap → ConfigMap.
    owner = json.loads(
        k8s_cluster.kubectl("create", "configmap", "owner", "-n", ns, "-o", "json").stdout
    )
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [ref]},
    }
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dependent))

    k8s_cluster.kubectl("delete", "deployment", "gc", "-n", ns, "--cascade=background")
    k8s_cluster.kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=background")

    def collected() -> bool:
        left = k8s_cluster.kubectl(
            "get",
            "replicasets,pods",
            "-n",
            ns,
            "-l",
            "app=gc",
            "-o",
            "name",
            "--ignore-not-found",
        ).stdout.split()
        cm = k8s_cluster.kubectl(
            "get", "configmap", "dependent", "-n", ns, "--ignore-not-found", "-o", "name"
        ).stdout.strip()
        return not left and not cm

    k8s_cluster.wait_for("garbage collection of the dependents", collected, timeout=60)


def _ca_context(cluster: K8sCluster) -> ssl.SSLContext:
    config = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify").stdout)
    data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    return ssl.create_default_context(cadata=base64.b64decode(data).decode())


def _get_with_token(cluster: K8sCluster, path: str, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        cluster.server + path, headers={"Authorization": f"Bearer {token}"}
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_ca_context(cluster))
    )
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rbac_denies_a_service_account_without_permissions(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    from kubernetes import client

    ns = k8s_namespace
    k8s_cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    with k8s_cluster.api_client() as api:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        )
        token = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token("nobody", ns, request)
            .status.token
        )
    path = f"/api/v1/namespaces/{ns}/pods"
    status, body = _get_with_token(k8s_cluster, path, token)
    assert status == 403
    assert body["reason"] == "Forbidden"
    assert f'"system:serviceaccount:{ns}:nobody" cannot list resource "pods"' in body["message"]

    k8s_cluster.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", ns)
    k8s_cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-reads",
        "--role=pod-reader",
        f"--serviceaccount={ns}:nobody",
        "-n",
        ns,
    )

    def allowed() -> bool:
        return _get_with_token(k8s_cluster, path, token)[0] == 200

    k8s_cluster.wait_for("RBAC grant to take effect", allowed)
    assert _get_with_token(k8s_cluster, f"/api/v1/namespaces/{ns}/secrets", token)[0] == 403
