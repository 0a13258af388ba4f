"""The injection plan of an McpGateway: the sidecar container and volumes, fully specified.

Every field the API server would otherwise default is written out (``imagePullPolicy``,
probe timings, ``terminationMessagePath``, volume ``defaultMode``, ``fieldRef.apiVersion``,
token ``expirationSeconds``), so the stored template equals the computed one and an unchanged
gateway never causes a rollout.
"""

from __future__ import annotations

from typing import Any

from . import api
from .inject import Plan
from .models import McpGatewaySpec
from .placement import DEFAULT_TEE_LABELS, TeeLabels, node_terms

PROBE_MODULE = "cmcp_sidecar.probe"
TOKEN_SECONDS = 3600
DEFAULT_MODE = 0o644


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _probe(path: str, port: int, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {
            "command": ["python", "-m", PROBE_MODULE, f"http://127.0.0.1:{port}{path}"],
        },
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
        "successThreshold": 1,
    }


def sidecar_container(spec: McpGatewaySpec, gateway: str, image: str) -> dict[str, Any]:
    """The native sidecar (an init container with ``restartPolicy: Always``)."""
    port = spec.sidecar.port
    env = [
        _field_env(api.ENV_POD_NAME, "metadata.name"),
        _field_env(api.ENV_POD_NAMESPACE, "metadata.namespace"),
        _field_env(api.ENV_POD_UID, "metadata.uid"),
        _field_env(api.ENV_SERVICE_ACCOUNT, "spec.serviceAccountName"),
        {"name": api.ENV_GATEWAY_NAME, "value": gateway},
        {"name": api.ENV_LOG_FORMAT, "value": "json"},
    ]
    if spec.attestation.allow_software:
        env.append({"name": api.ENV_DEV_MODE, "value": "1"})
    mounts = [
        {"name": api.VOLUME_CONFIG, "mountPath": api.CONFIG_DIR, "readOnly": True},
        {"name": api.VOLUME_BUNDLE, "mountPath": api.BUNDLE_DIR, "readOnly": True},
        {"name": api.VOLUME_DATA, "mountPath": api.DATA_DIR},
        {"name": api.VOLUME_TOKEN, "mountPath": api.TOKEN_DIR, "readOnly": True},
    ]
    if any(u.headers_secret_ref for u in spec.upstreams):
        mounts.append(
            {"name": api.VOLUME_UPSTREAMS, "mountPath": api.UPSTREAMS_DIR, "readOnly": True}
        )
    resources = spec.sidecar.resources
    return {
        "name": api.SIDECAR_NAME,
        "image": spec.sidecar.image or image,
        "imagePullPolicy": spec.sidecar.image_pull_policy,
        "command": ["cmcp", "start", "--config", f"{api.CONFIG_DIR}/{api.CONFIG_FILE}"],
        "env": env,
        "resources": {
            k: {r: str(q) for r, q in sorted(v.items())}
            for k, v in (("limits", resources.limits), ("requests", resources.requests))
            if v
        },
        "volumeMounts": mounts,
        # The agent containers start only once this passes: the gateway is serving.
        "startupProbe": _probe("/readyz", port, period=1, failures=300),
        "readinessProbe": _probe("/readyz", port, period=10, failures=3),
        "livenessProbe": _probe("/healthz", port, period=20, failures=3),
        "restartPolicy": "Always",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def volumes(spec: McpGatewaySpec, bundle_cm: str, config_cm: str) -> list[dict[str, Any]]:
    """The sidecar's volumes: config, bundle, data (audit + claims), token, credentials."""
    data: dict[str, Any] = {}
    if spec.audit.size_limit is not None:
        data["sizeLimit"] = str(spec.audit.size_limit)
    out: list[dict[str, Any]] = [
        {"name": api.VOLUME_CONFIG, "configMap": {"name": config_cm, "defaultMode": DEFAULT_MODE}},
        {"name": api.VOLUME_BUNDLE, "configMap": {"name": bundle_cm, "defaultMode": DEFAULT_MODE}},
        {"name": api.VOLUME_DATA, "emptyDir": data},
        {
            "name": api.VOLUME_TOKEN,
            "projected": {
                "defaultMode": DEFAULT_MODE,
                "sources": [
                    {
                        "serviceAccountToken": {
                            "expirationSeconds": TOKEN_SECONDS,
                            "path": "token",
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                }
                            ]
                        }
                    },
                ],
            },
        },
    ]
    secrets = [
        {
            "secret": {
                "name": u.headers_secret_ref.name,
                "items": [{"key": u.headers_secret_ref.key, "path": f"{u.name}/headers"}],
            }
        }
        for u in spec.upstreams
        if u.headers_secret_ref is not None
    ]
    if secrets:
        out.append(
            {
                "name": api.VOLUME_UPSTREAMS,
                "projected": {"defaultMode": DEFAULT_MODE, "sources": secrets},
            }
        )
    return out


def build_plan(
    spec: McpGatewaySpec,
    gateway: str,
    *,
    bundle_cm: str,
    config_cm: str,
    image: str,
    tee_labels: TeeLabels = DEFAULT_TEE_LABELS,
) -> Plan:
    """Everything the gateway adds to a pod template."""
    placement = spec.placement
    return Plan(
        gateway=gateway,
        sidecar=sidecar_container(spec, gateway, image),
        volumes=volumes(spec, bundle_cm, config_cm),
        endpoint_env=spec.injection.endpoint_env,
        endpoint_url=f"http://127.0.0.1:{spec.sidecar.port}/mcp",
        containers=tuple(spec.injection.containers),
        node_terms=node_terms(list(placement.tee_types), placement.node_labels, tee_labels),
        tolerations=[t.to_api() for t in placement.tolerations],
        runtime_class=placement.runtime_class_name,
    )
