"""Which nodes a TEE type means: node-label terms as NFD, AKS and GKE set them.

Each TEE type maps to one or more alternative label sets (any one suffices); an McpGateway's
``placement.nodeLabels`` are required in addition. The table can be replaced per operator
(``cmcp-operator --placement-labels FILE``, a YAML mapping of the same shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cmcp_verifier.errors import ConfigError

DEFAULT_TEE_LABELS: dict[str, list[dict[str, str]]] = {
    "sev-snp": [
        {"feature.node.kubernetes.io/cpu-security.sev.snp.enabled": "true"},  # NFD
        {"cloud.google.com/gke-confidential-nodes-instance-type": "SEV_SNP"},  # GKE
    ],
    "tdx": [
        {"feature.node.kubernetes.io/cpu-security.tdx.protected": "true"},  # NFD
        {"cloud.google.com/gke-confidential-nodes-instance-type": "TDX"},  # GKE
    ],
    "azure-cvm": [{"kubernetes.azure.com/security-type": "ConfidentialVM"}],  # AKS CVM pools
    "kata-cc": [{"kubernetes.azure.com/kata-cc-isolation": "true"}],  # AKS KataCcIsolation
}

TeeLabels = Mapping[str, list[dict[str, str]]]


def load_tee_labels(path: str | Path) -> dict[str, list[dict[str, str]]]:
    """Read a replacement table; unknown TEE types and malformed entries are errors."""
    try:
        doc: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read placement labels {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: must map TEE types to lists of label maps")
    table: dict[str, list[dict[str, str]]] = {}
    for tee, alternatives in doc.items():
        if tee not in DEFAULT_TEE_LABELS:
            raise ConfigError(f"{path}: unknown TEE type {tee!r}")
        if not isinstance(alternatives, list) or not all(
            isinstance(a, dict) and a and all(isinstance(v, str) for v in a.values())
            for a in alternatives
        ):
            raise ConfigError(f"{path}: {tee}: must be a list of non-empty label maps")
        table[tee] = [{str(k): v for k, v in a.items()} for a in alternatives]
    return {**DEFAULT_TEE_LABELS, **table}


def node_terms(
    tee_types: list[str], node_labels: Mapping[str, str], table: TeeLabels = DEFAULT_TEE_LABELS
) -> list[dict[str, Any]]:
    """Node selector terms (ORed) for the TEE types, each also requiring ``node_labels``."""
    extra = _exprs(node_labels)
    if not tee_types:
        return [{"matchExpressions": extra}] if extra else []
    terms = []
    for tee in sorted(set(tee_types)):
        for labels in table.get(tee, []):
            terms.append({"matchExpressions": _exprs(labels) + extra})
    return terms


def _exprs(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "operator": "In", "values": [labels[k]]} for k in sorted(labels)]


def combine_terms(
    existing: list[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Terms that require both: the workload's own terms AND ours (terms are ORed, their
    expressions ANDed, so this is the cross product)."""
    if not existing:
        return [dict(t) for t in ours]
    out = []
    for mine in existing:
        for term in ours:
            combined = dict(mine)
            combined["matchExpressions"] = list(mine.get("matchExpressions") or []) + list(
                term["matchExpressions"]
            )
            out.append(combined)
    return out
