"""Enforcement modes: every decision under every mode."""

from __future__ import annotations

import pytest

from cmcp_sidecar.policy import Decision, Enforcement, Mode, apply_mode, parse_mode
from cmcp_verifier.errors import ConfigError
from cmcp_verifier.obligations import obligations_of

PLAN = obligations_of("permit", {"redact_arguments": "ssn"})
DECISIONS = {
    "allow": Decision("allow", "permit", ("p",)),
    "redact": Decision("redact", "permit", ("p",), PLAN),
    "deny": Decision("deny", "forbid", ("f",)),
    "error": Decision("deny", "error", ("e",)),
}
#                     forward redact log   audit would_block would_redact
EXPECTED = {
    ("enforcing", "allow"): (True, False, False, True, False, False),
    ("enforcing", "redact"): (True, True, True, True, False, False),
    ("enforcing", "deny"): (False, False, True, True, False, False),
    ("enforcing", "error"): (False, False, True, True, False, False),
    ("advisory", "allow"): (True, False, False, True, False, False),
    ("advisory", "redact"): (True, False, True, True, False, True),
    ("advisory", "deny"): (True, False, True, True, True, False),
    ("advisory", "error"): (True, False, True, True, True, False),
    ("silent", "allow"): (True, False, False, True, False, False),
    ("silent", "redact"): (True, False, False, True, False, True),
    ("silent", "deny"): (True, False, False, True, True, False),
    ("silent", "error"): (True, False, False, True, True, False),
}


@pytest.mark.parametrize(("mode", "decision"), EXPECTED)
def test_every_decision_under_every_mode(mode: str, decision: str) -> None:
    assert apply_mode(DECISIONS[decision], parse_mode(mode)) == Enforcement(
        *EXPECTED[mode, decision]
    )


def test_modes_parse_and_name_themselves_for_trace() -> None:
    assert [parse_mode(m).trace_name for m in ("enforcing", "advisory", "silent")] == [
        "enforce",
        "advisory",
        "silent",
    ]
    with pytest.raises(ConfigError) as info:
        parse_mode("enforce")
    assert info.value.code == "config.enforcement_mode"
    assert Mode("silent") is Mode.SILENT
