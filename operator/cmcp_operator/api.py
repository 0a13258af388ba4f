"""Names shared by the operator, the CRDs and what the operator writes into the cluster.

API group ``cmcp.dev``, version ``v1alpha1`` (docs/operator.md, "API"). Every label and
annotation the operator sets is under ``cmcp.dev/``.
"""

from __future__ import annotations

import hashlib

GROUP = "cmcp.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
BUNDLE_KIND = "McpPolicyBundle"
BUNDLE_PLURAL = "mcppolicybundles"
GATEWAY_KIND = "McpGateway"
GATEWAY_PLURAL = "mcpgateways"

FIELD_MANAGER = "cmcp-operator"
FINALIZER = "cmcp.dev/finalizer"

# Labels.
LABEL_COMPONENT = "cmcp.dev/component"  # bundle | config | claim
LABEL_BUNDLE = "cmcp.dev/bundle"  # rendered bundle ConfigMaps: the McpPolicyBundle's name
LABEL_GATEWAY = "cmcp.dev/gateway"  # injected pod templates, config and claim ConfigMaps
LABEL_POD = "cmcp.dev/pod"  # claim ConfigMaps
LABEL_SESSION = "cmcp.dev/session"  # claim ConfigMaps
LABEL_INJECT = "cmcp.dev/inject"  # on a workload: "false" opts it out
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "cmcp-operator"

# Annotations.
ANN_INJECTION = "cmcp.dev/injection"  # on an injected workload: what was added (JSON)
ANN_BUNDLE_HASH = "cmcp.dev/bundle-hash"
ANN_CATALOG_HASH = "cmcp.dev/catalog-hash"
ANN_CONFIG_HASH = "cmcp.dev/config-hash"

COMPONENT_BUNDLE = "bundle"
COMPONENT_CONFIG = "config"
COMPONENT_CLAIM = "claim"

# What the operator adds to a pod template.
SIDECAR_NAME = "cmcp-gateway"
VOLUME_BUNDLE = "cmcp-bundle"
VOLUME_CONFIG = "cmcp-config"
VOLUME_DATA = "cmcp-data"
VOLUME_TOKEN = "cmcp-token"  # noqa: S105 (a volume name)  # nosec B105
VOLUME_UPSTREAMS = "cmcp-upstreams"
VOLUME_CANDIDATE = "cmcp-candidate"  # the candidate bundle, evaluated in shadow
OUR_VOLUMES = (
    VOLUME_BUNDLE,
    VOLUME_CONFIG,
    VOLUME_DATA,
    VOLUME_TOKEN,
    VOLUME_UPSTREAMS,
    VOLUME_CANDIDATE,
)

# Paths inside the sidecar.
BUNDLE_DIR = "/etc/cmcp/bundle"
CANDIDATE_DIR = "/etc/cmcp/candidate"
CONFIG_DIR = "/etc/cmcp/config"
CONFIG_FILE = "cmcp-config.yaml"
DATA_DIR = "/var/lib/cmcp"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 (a path)  # nosec B105
UPSTREAMS_DIR = "/var/run/secrets/cmcp/upstreams"
CATALOG_FILE = "catalog.json"
CLAIM_KEY = "claim.json"  # the key of a claim ConfigMap

# The sidecar reads these (downward API); CMCP_POD_UID and CMCP_GATEWAY_NAME feed its
# Kubernetes claim sink.
ENV_POD_NAME = "CMCP_POD_NAME"
ENV_POD_NAMESPACE = "CMCP_POD_NAMESPACE"
ENV_POD_UID = "CMCP_POD_UID"
ENV_SERVICE_ACCOUNT = "CMCP_SERVICE_ACCOUNT"
ENV_GATEWAY_NAME = "CMCP_GATEWAY_NAME"
ENV_DEV_MODE = "CMCP_DEV_MODE"
ENV_LOG_FORMAT = "CMCP_LOG_FORMAT"


def bounded(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` characters, else a prefix plus a hash of the whole
    (so two long names never share a derived name)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"
