"""Hardware evidence verification, one module per evidence type.

Each type implements :class:`EvidenceType`: it can add its own command-line options
(``cmcp-verify evidence --type NAME …``), read the files vendors' tools write, and verify the
evidence embedded in a claim. All of them return an :class:`EvidenceReport`: named checks plus
the report data that must carry the claim's binding digest.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..report import Report


@dataclass(frozen=True)
class EvidencePolicy:
    """What the caller requires beyond the vendors' rules."""

    roots_dir: Path | None = None
    allow_debug: bool = False
    nonce: bytes | None = None
    expected_measurement: str | None = None
    evaluation_time: dt.datetime | None = None
    allow_network: bool = False

    def now(self) -> dt.datetime:
        return self.evaluation_time or dt.datetime.now(dt.UTC)


@dataclass
class EvidenceReport(Report):
    """A report on one piece of evidence, plus what the claim verifier needs from it."""

    report_data: bytes | None = None
    measurement: str | None = None
    platform: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EvidenceType(Protocol):
    """One kind of hardware evidence."""

    name: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this type's options to ``cmcp-verify evidence``."""

    def verify_files(self, args: argparse.Namespace, policy: EvidencePolicy) -> EvidenceReport:
        """Verify evidence given as files on the command line."""

    def verify_embedded(self, evidence: dict[str, Any], policy: EvidencePolicy) -> EvidenceReport:
        """Verify evidence embedded in a claim (members are base64url strings)."""


# A claim's CPU evidence may carry accompanying GPU evidence: ``evidence.gpu`` is an object in
# the embedded form of type ``gpu-cc`` whose nonce is the binding digest (see .accompanying).
GPU_MEMBER = "gpu"

_REGISTRY: dict[str, EvidenceType] = {}


def register(kind: EvidenceType) -> EvidenceType:
    """Make an evidence type available to the CLI and the claim verifier."""
    _REGISTRY[kind.name] = kind
    return kind


def evidence_types() -> dict[str, EvidenceType]:
    """All registered types (importing the modules registers them)."""
    from . import _all  # noqa: F401  (import for side effect: registration)

    return dict(_REGISTRY)
