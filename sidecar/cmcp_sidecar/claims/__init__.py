"""TRACE claims: per-session ledgers, the claim builder, the issuer and claim sinks.

Public API: :class:`ClaimIssuer` (:mod:`.issuer`: session ids, closing, serving, modes),
:func:`build_claim` with :class:`ClaimSettings`, :class:`ModelInfo`, :class:`PolicyStatus`,
:class:`ChainPoint` and :func:`default_subject` (:mod:`.builder`), :class:`SessionLedger`
(:mod:`.ledger`), and :class:`ClaimSink` / :class:`DirectorySink` (:mod:`.sink`). The claim
format is :mod:`cmcp_verifier.claim`; field meanings are in docs/formats.md.
"""

from .builder import (
    APPRAISAL_VERIFIER,
    DEFAULT_TRUST_DOMAIN,
    ENFORCEMENT_MODES,
    ChainPoint,
    ClaimSettings,
    ModelInfo,
    PolicyStatus,
    build_claim,
    default_subject,
    encode_claim,
)
from .issuer import CLAIM_MODES, ClaimError, ClaimIssuer, ClaimMode, IssuerStats, claim_name
from .ledger import DATA_CLASS_ORDER, NO_DATA_CLASS, LedgerSnapshot, SessionLedger
from .sink import ClaimSink, ClaimSinkError, DirectorySink

__all__ = [
    "APPRAISAL_VERIFIER",
    "CLAIM_MODES",
    "DATA_CLASS_ORDER",
    "DEFAULT_TRUST_DOMAIN",
    "ENFORCEMENT_MODES",
    "NO_DATA_CLASS",
    "ChainPoint",
    "ClaimError",
    "ClaimIssuer",
    "ClaimMode",
    "ClaimSettings",
    "ClaimSink",
    "ClaimSinkError",
    "DirectorySink",
    "IssuerStats",
    "LedgerSnapshot",
    "ModelInfo",
    "PolicyStatus",
    "SessionLedger",
    "build_claim",
    "claim_name",
    "default_subject",
    "encode_claim",
]
