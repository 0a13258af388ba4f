"""The custom resources as pydantic models — the single source of the CRD schemas.

``crds/*.yaml`` is generated from these models (:mod:`cmcp_operator.crdgen`; a test checks
the committed files equal the generated ones), so the API server and the operator agree on
every field. Field names are the camelCase of the attribute names. Rules a JSON schema cannot
state are CEL ``x-kubernetes-validations`` attached here, next to the field they guard.
Reference: docs/operator.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
POLICY_FILE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.cedar$"
UPSTREAM_NAME = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
LABEL_KEY_CEL = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MEASUREMENT = r"^(sha(256|384|512):)?[0-9a-fA-F]{32,256}$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
MAX_BUNDLE_TEXT = 1024 * 1024

TeeType = Literal["sev-snp", "tdx", "azure-cvm", "kata-cc"]
EnforcementMode = Literal["enforcing", "advisory", "silent"]
Provider = Literal["auto", "software", "tpm", "sev-snp", "tdx", "coco", "azure-cvm", "gpu-cc"]


def cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message, **extra}]}


def cels(*rules: tuple[str, str]) -> dict[str, Any]:
    """Several ``x-kubernetes-validations`` entries."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def _quantity(value: str | int) -> str | int:
    if isinstance(value, bool) or not re.match(QUANTITY, str(value)):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 100m or 64Mi")
    return value


Quantity = Annotated[
    str | int,
    AfterValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class Model(BaseModel):
    """Base: camelCase names in the API, snake_case in Python; unknown members ignored
    (the API server prunes them anyway)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API shows it (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# -- shared pieces ---------------------------------------------------------------------------


class Condition(Model):
    """A standard Kubernetes condition (``metav1.Condition``)."""

    type: Annotated[str, Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[
        str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    observed_generation: Annotated[int, Field(ge=0)] | None = None


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class LocalObjectRef(Model):
    """A ConfigMap in the same namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


# -- McpPolicyBundle -------------------------------------------------------------------------


class McpPolicyBundleSpec(Model):
    """A Cedar policy bundle (policies, schema, manifest) and its tool catalog, given inline
    or as the keys of a ConfigMap; ``expectedHash`` pins its content."""

    model_config = ConfigDict(
        json_schema_extra=cels(
            (
                "has(self.configMapRef) != (has(self.policies) || has(self.schema)"
                " || has(self.manifest))",
                "give the bundle either inline (policies, schema, manifest) or as configMapRef,"
                " exactly one of them",
            ),
            (
                "!has(self.policies) || (has(self.schema) && has(self.manifest))",
                "an inline bundle needs policies, schema and manifest",
            ),
            (
                "!(has(self.configMapRef) && has(self.catalog))",
                "with configMapRef the catalog is the ConfigMap's catalog.json key",
            ),
        )
    )

    expected_hash: Annotated[
        str | None,
        Field(
            pattern=DIGEST_PATTERN,
            description="Pin: the bundle hash (sha256:<64 hex>) this content must have. A"
            " bundle that does not match is refused and nothing is rendered.",
        ),
    ] = None
    policies: Annotated[
        dict[str, Annotated[str, Field(max_length=MAX_BUNDLE_TEXT)]] | None,
        Field(
            min_length=1,
            max_length=64,
            description="Cedar policy files: file name (*.cedar) → source.",
            json_schema_extra=cel(
                f"self.all(k, k.matches(r'{POLICY_FILE}'))",
                "policy file names must match " + POLICY_FILE,
            ),
        ),
    ] = None
    schema_text: Annotated[
        str | None,
        Field(
            alias="schema",
            max_length=MAX_BUNDLE_TEXT,
            description="schema.cedarschema: the Cedar schema the policies are validated against.",
        ),
    ] = None
    manifest: Annotated[
        str | None,
        Field(max_length=64 * 1024, description="manifest.json, verbatim."),
    ] = None
    catalog: Annotated[
        str | None,
        Field(
            max_length=MAX_BUNDLE_TEXT,
            description="catalog.json: the approved tools with pinned definition hashes"
            " (optional; not part of the bundle hash, reported as status.catalogHash).",
        ),
    ] = None
    config_map_ref: Annotated[
        LocalObjectRef | None,
        Field(
            description="Read the bundle from this ConfigMap: keys *.cedar,"
            " schema.cedarschema, manifest.json and optionally catalog.json."
        ),
    ] = None


class McpPolicyBundleStatus(Model):
    """What the operator found: the hash, the rendered ConfigMap, conditions."""

    observed_generation: int | None = None
    hash: Annotated[str | None, Field(pattern=DIGEST_PATTERN)] = None
    short_hash: Annotated[str | None, Field(max_length=12)] = None
    catalog_hash: Annotated[str | None, Field(pattern=DIGEST_PATTERN)] = None
    config_map_name: Annotated[str | None, Field(max_length=253)] = None
    files: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=260)] = []
    policy_count: Annotated[int, Field(ge=0)] = 0
    problems: Annotated[
        list[Annotated[str, Field(max_length=2048)]],
        Field(max_length=20, description="Validation problems as file:line:column: message."),
    ] = []
    used_by: Annotated[
        list[Annotated[str, Field(max_length=253)]],
        Field(max_length=100, description="McpGateways that pin this bundle."),
    ] = []
    conditions: Conditions = []


# -- McpGateway ------------------------------------------------------------------------------


class SelectorRequirement(Model):
    model_config = ConfigDict(
        json_schema_extra=cel(
            "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            "In and NotIn need values; Exists and DoesNotExist take none",
        )
    )

    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] | None,
        Field(max_length=64),
    ] = None


class LabelSelector(Model):
    """A label selector over Deployments and StatefulSets in the gateway's namespace."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            "(has(self.matchLabels) && size(self.matchLabels) > 0)"
            " || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "an empty selector would select every workload of the namespace; name at least"
            " one label",
        )
    )

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=32,
            json_schema_extra=cel(
                f"self.all(k, k.matches(r'{LABEL_KEY_CEL}'))", "label keys must be valid"
            ),
        ),
    ] = {}
    match_expressions: Annotated[list[SelectorRequirement], Field(max_length=32)] = []


class BundleRef(Model):
    """An McpPolicyBundle in the gateway's namespace and the hash the gateway requires."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    hash: Annotated[str, Field(pattern=DIGEST_PATTERN)]


class SecretKeyRef(Model):
    """A key of a Secret in the gateway's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        "headers"
    )


class Upstream(Model):
    """An MCP server the gateway fronts."""

    name: Annotated[str, Field(pattern=UPSTREAM_NAME, max_length=63)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s@#]+$", max_length=2048)]
    prefix: Annotated[
        str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", max_length=63)
    ] = None
    headers_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(
            description="Credential headers ('Name: value' lines) from a Secret key, mounted"
            " only into the sidecar."
        ),
    ] = None


class Attestation(Model):
    model_config = ConfigDict(
        json_schema_extra=cel(
            "!has(self.provider) || self.provider != 'software'"
            " || (has(self.allowSoftware) && self.allowSoftware)",
            "provider software needs allowSoftware: true",
        )
    )

    provider: Annotated[
        Provider, Field(description="Evidence source; auto probes sev-snp, tdx, tpm.")
    ] = "auto"
    allow_software: Annotated[
        bool,
        Field(
            description="Development only: run the sidecar in dev mode (software attestation"
            " when no hardware is found) and accept software-only claims as verified."
        ),
    ] = False
    validity_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400
    staleness_policy: Literal["fail_closed", "warn_only"] = "fail_closed"
    expected_measurement: Annotated[str | None, Field(pattern=MEASUREMENT)] = None


class Toleration(Model):
    model_config = ConfigDict(
        json_schema_extra=cels(
            (
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value)"
                " || self.value == ''",
                "a toleration with operator Exists takes no value",
            ),
            (
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds only applies to effect NoExecute",
            ),
            (
                "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                "a toleration without key must use operator Exists",
            ),
        )
    )

    key: Annotated[str | None, Field(max_length=317)] = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str | None, Field(max_length=63, pattern=LABEL_VALUE)] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


DEFAULT_TOLERATIONS = [
    Toleration(key="confidential-computing", operator="Equal", value="true", effect="NoSchedule")
]


class Placement(Model):
    """Where injected pods may run."""

    tee_types: Annotated[
        list[TeeType],
        Field(
            max_length=4,
            description="Pods are scheduled only onto nodes of one of these TEE types (node"
            " affinity on the labels NFD, AKS and GKE set; docs/operator.md).",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    runtime_class_name: Annotated[str | None, Field(max_length=253, pattern=DNS_SUBDOMAIN)] = None
    node_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=16,
            description="Extra node labels every chosen node must carry.",
            json_schema_extra=cel(
                f"self.all(k, k.matches(r'{LABEL_KEY_CEL}'))", "label keys must be valid"
            ),
        ),
    ] = {}
    tolerations: Annotated[
        list[Toleration],
        Field(
            max_length=16,
            description="Tolerations added to injected pods (default: the"
            " confidential-computing=true:NoSchedule taint).",
        ),
    ] = DEFAULT_TOLERATIONS


class Resources(Model):
    requests: Annotated[dict[str, Quantity], Field(max_length=8)] = {
        "cpu": "50m",
        "memory": "64Mi",
    }
    limits: Annotated[dict[str, Quantity], Field(max_length=8)] = {"memory": "512Mi"}


class Sidecar(Model):
    image: Annotated[
        str | None,
        Field(max_length=512, description="Sidecar image (default: the operator's)."),
    ] = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    port: Annotated[int, Field(ge=1024, le=65535)] = 8443
    resources: Resources = Resources()


class Injection(Model):
    endpoint_env: Annotated[
        str,
        Field(
            pattern=ENV_NAME,
            max_length=128,
            description="Environment variable that tells agent containers the MCP endpoint.",
        ),
    ] = "MCP_GATEWAY_URL"
    containers: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]],
        Field(
            max_length=32,
            description="Agent containers that get the endpoint (default: all containers).",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []


class ModelInfo(Model):
    provider: Annotated[str, Field(max_length=253)] = "unspecified"
    model_id: Annotated[str, Field(max_length=253)] = "unspecified"
    version: Annotated[str | None, Field(max_length=253)] = None


class Claims(Model):
    mode: Literal["session", "call", "interval"] = "session"
    interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    idle_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 900
    max_age_seconds: Annotated[
        int,
        Field(
            ge=0,
            description="Claims older than this are not counted as verified (0: no limit).",
        ),
    ] = 86400
    trust_domain: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)] = "cluster.local"
    model: ModelInfo = ModelInfo()
    data_classes: Annotated[
        list[Annotated[str, Field(max_length=63)]] | None, Field(min_length=1, max_length=32)
    ] = None


class Audit(Model):
    fsync: Literal["every", "batch"] = "batch"
    size_limit: Annotated[
        Quantity | None, Field(description="Size limit of the audit volume (emptyDir).")
    ] = None


class McpGatewaySpec(Model):
    """Which agent workloads get the sidecar, and how it is configured."""

    model_config = ConfigDict(
        json_schema_extra=cels(
            (
                "!has(self.candidateBundle) || (self.candidateBundle.name != self.bundle.name"
                " && self.candidateBundle.hash != self.bundle.hash)",
                "candidateBundle must name another McpPolicyBundle with another hash than bundle",
            ),
            (
                "(has(self.attestation) && has(self.attestation.allowSoftware)"
                " && self.attestation.allowSoftware) || (has(self.placement)"
                " && ((has(self.placement.teeTypes) && size(self.placement.teeTypes) > 0)"
                " || has(self.placement.runtimeClassName)))",
                "attestation is required (allowSoftware is false), so placement must name"
                " teeTypes or a runtimeClassName",
            ),
        )
    )

    selector: LabelSelector
    bundle: Annotated[BundleRef, Field(description="The active bundle and its required hash.")]
    candidate_bundle: Annotated[
        BundleRef | None,
        Field(
            description="A bundle to evaluate in shadow next to the active one (never"
            " enforced). Reported in status; evaluated once the sidecar supports it."
        ),
    ] = None
    upstreams: Annotated[
        list[Upstream],
        Field(
            min_length=1,
            max_length=32,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    enforcement_mode: EnforcementMode = "enforcing"
    attestation: Attestation = Attestation()
    placement: Placement = Placement()
    sidecar: Sidecar = Sidecar()
    injection: Injection = Injection()
    claims: Claims = Claims()
    audit: Audit = Audit()


class WorkloadCounts(Model):
    selected: int = 0
    injected: int = 0
    refused: int = 0


class DecisionCounts(Model):
    """Sums of the call summaries of the newest claim of every session."""

    calls: int = 0
    allow: int = 0
    deny: int = 0
    redact: int = 0
    error: int = 0
    blocked: int = 0


class PodClaim(Model):
    """The newest claim of one injected pod."""

    pod: Annotated[str, Field(max_length=253)]
    claim: Annotated[str, Field(max_length=253)]
    session: Annotated[str, Field(max_length=256)] = ""
    issued_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    verdict: Literal["verified", "rejected"]
    attested: bool = False
    reason: Annotated[str, Field(max_length=1024)] = ""
    bundle_hash: Annotated[str, Field(max_length=80)] = ""
    platform: Annotated[str, Field(max_length=64)] = ""


class McpGatewayStatus(Model):
    observed_generation: int | None = None
    bundle_hash: Annotated[str | None, Field(pattern=DIGEST_PATTERN)] = None
    short_bundle_hash: Annotated[str | None, Field(max_length=12)] = None
    config_map_name: Annotated[str | None, Field(max_length=253)] = None
    workloads: WorkloadCounts = WorkloadCounts()
    injected_workloads: Annotated[
        list[Annotated[str, Field(max_length=300)]], Field(max_length=100)
    ] = []
    pods_injected: int = 0
    pods_attested: int = 0
    pods_verified: int = 0
    decisions: DecisionCounts = DecisionCounts()
    last_claims: Annotated[list[PodClaim], Field(max_length=50)] = []
    conditions: Conditions = []


# -- printer columns and CRD-level facts (used by crdgen) -------------------------------------

BUNDLE_COLUMNS: list[dict[str, Any]] = [
    {"name": "Hash", "type": "string", "jsonPath": ".status.shortHash"},
    {
        "name": "Valid",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
    },
    {
        "name": "Pinned",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="HashMatches")].status',
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Full-Hash", "type": "string", "jsonPath": ".status.hash", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
]

GATEWAY_COLUMNS: list[dict[str, Any]] = [
    {"name": "Mode", "type": "string", "jsonPath": ".spec.enforcementMode"},
    {"name": "Bundle", "type": "string", "jsonPath": ".status.shortBundleHash"},
    {"name": "Workloads", "type": "integer", "jsonPath": ".status.workloads.injected"},
    {"name": "Pods", "type": "integer", "jsonPath": ".status.podsInjected"},
    {"name": "Attested", "type": "integer", "jsonPath": ".status.podsAttested"},
    {"name": "Verified", "type": "integer", "jsonPath": ".status.podsVerified"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
]
