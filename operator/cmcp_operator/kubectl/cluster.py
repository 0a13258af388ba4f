"""The cluster connection, configured like kubectl (``--kubeconfig``, ``--context``, ``-n``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from cmcp_verifier.errors import CmcpError

from .. import api

GROUP, VERSION = "cmcp.dev", "v1alpha1"
TIMEOUT = 15
# The kubernetes package has no type hints: its modules are used as Any.
client: Any = kubernetes.client
config: Any = kubernetes.config


class ClusterError(CmcpError):
    """The cluster could not be reached or refused a request (exit status 2)."""


@dataclass
class Cluster:
    """API clients and the namespace kubectl would use."""

    core: Any
    custom: Any
    namespace: str

    def gateways(self, namespace: str | None) -> list[dict[str, Any]]:
        return self._custom_list("mcpgateways", namespace)

    def gateway(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "mcpgateways", name, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"McpGateway {namespace}/{name}") from None
        return obj

    def claim_configmaps(self, namespace: str | None, gateway: str | None) -> list[dict[str, Any]]:
        """The claim ConfigMaps the sidecars wrote (of one gateway, or all)."""
        selector = f"{api.LABEL_COMPONENT}={api.COMPONENT_CLAIM}"
        if gateway:
            selector += f",{api.LABEL_GATEWAY}={gateway}"
        items = self._call(
            "ConfigMaps",
            self.core.list_namespaced_config_map,
            self.core.list_config_map_for_all_namespaces,
            namespace,
            label_selector=selector,
        )
        return items

    def injected_pods(self, namespace: str | None) -> list[dict[str, Any]]:
        items = self._call(
            "Pods",
            self.core.list_namespaced_pod,
            self.core.list_pod_for_all_namespaces,
            namespace,
            label_selector=api.LABEL_GATEWAY,
        )
        return items

    def _custom_list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        try:
            if namespace is None:
                doc = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, _request_timeout=TIMEOUT
                )
            else:
                doc = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _request_timeout=TIMEOUT
                )
        except ApiException as exc:
            raise _api_error(exc, plural) from None
        except Exception as exc:
            raise _unreachable(exc) from None
        return list(doc.get("items") or [])

    @staticmethod
    def _call(
        what: str, namespaced: Any, everywhere: Any, namespace: str | None, **kw: Any
    ) -> list[dict[str, Any]]:
        """A list call's items as plain API objects (no model classes, camelCase keys)."""
        kw.update(_request_timeout=TIMEOUT, _preload_content=False)
        try:
            resp = everywhere(**kw) if namespace is None else namespaced(namespace, **kw)
            return list(json.loads(resp.data)["items"] or [])
        except ApiException as exc:
            raise _api_error(exc, what) from None
        except Exception as exc:
            raise _unreachable(exc) from None


def _api_error(exc: ApiException, what: str) -> ClusterError:
    hint = None
    if exc.status == 404:
        hint = "are the CRDs installed? kubectl apply --server-side -f crds/"
    elif exc.status in (401, 403):
        hint = "your credentials may not read this resource (kubectl auth can-i)"
    return ClusterError(
        f"listing {what}: HTTP {exc.status} {exc.reason}", code="kubectl.api", hint=hint
    )


def _unreachable(exc: Exception) -> ClusterError:
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ClusterError(
        f"the API server cannot be reached: {detail}",
        code="kubectl.unreachable",
        hint="check --kubeconfig/--context (kubectl cluster-info)",
    )


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    """Clients for the kubeconfig (``$KUBECONFIG`` / ~/.kube/config) and context given."""
    try:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        cfg.retries = 1  # an unreachable server is reported at once, not after urllib3's 3
        api_client = client.ApiClient(cfg)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise ClusterError(
            f"cannot load the kubeconfig: {exc}",
            code="kubectl.kubeconfig",
            hint="pass --kubeconfig FILE or set KUBECONFIG",
        ) from None
    ns = namespace or (active or {}).get("context", {}).get("namespace") or "default"
    return Cluster(client.CoreV1Api(api_client), client.CustomObjectsApi(api_client), ns)
