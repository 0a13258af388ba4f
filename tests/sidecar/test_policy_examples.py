"""Each example bundle under policies/ behaves as its README says."""

from __future__ import annotations

import re

import pytest

from cmcp_sidecar.policy import (
    MARKER,
    Mode,
    PolicyEngine,
    PolicyRequest,
    SessionFacts,
    ToolFacts,
    apply_mode,
    redact_arguments,
    redact_result,
)

from ..policyfactory import EXAMPLES, POLICIES, SCHEMA_TEXT, example_engine


def outcome(engine: PolicyEngine, request: PolicyRequest) -> tuple[str, tuple[str, ...]]:
    decision = engine.decide(request)
    return decision.outcome, decision.policy_ids


def call(
    principal: str, name: str, server: str, args: dict[str, object] | None = None, **facts: object
) -> PolicyRequest:
    return PolicyRequest.call_tool(principal, name, server, args or {}, **facts)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_ship_the_contract_schema(name: str) -> None:
    """Every example's schema is the contract schema; only `Arguments` may differ."""
    block = re.compile(r"type Arguments = \{[^}]*\};")
    text = (POLICIES / name / "schema.cedarschema").read_text()
    assert block.sub("", text) == block.sub("", SCHEMA_TEXT)
    assert (POLICIES / name / "README.md").is_file()


def test_allow_all_but_one() -> None:
    engine = example_engine("allow-all-but-one")
    assert outcome(engine, call("any", "get-env", "everything")) == ("deny", ("policies.cedar:1",))
    assert outcome(engine, call("any", "get-env", "other")) == ("deny", ("policies.cedar:1",))
    assert outcome(engine, call("any", "echo", "everything")) == ("allow", ("policies.cedar:0",))
    listing = PolicyRequest("any", "list_tools", "Tool", "get-env", "everything")
    assert outcome(engine, listing) == ("allow", ("policies.cedar:0",))
    for request in (
        PolicyRequest("any", "read_resource", "Resource", "file:///x", "fs"),
        PolicyRequest("any", "get_prompt", "Prompt", "p", "everything"),
        PolicyRequest("any", "complete", "Prompt", "p", "everything"),
    ):
        assert outcome(engine, request) == ("allow", ("policies.cedar:0",))


def test_redact_pii() -> None:
    engine = example_engine("redact-pii")
    pii = ToolFacts.of(["pii"], None)
    args = {"ssn": "123-45-6789", "card": {"number": "4111", "cvv": "1"}, "people": [{"ssn": "1"}]}
    decision = engine.decide(call("a", "lookup", "crm", args, tool=pii))
    assert (decision.outcome, decision.policy_ids) == ("redact", ("allow-all", "redact-pii"))
    enforcement = apply_mode(decision, Mode.ENFORCING)
    assert enforcement.forward and enforcement.redact
    forwarded = redact_arguments(args, decision.obligations).value
    assert forwarded == {
        "ssn": MARKER,
        "card": {"number": MARKER, "cvv": "1"},
        "people": [{"ssn": MARKER}],
    }
    result = {
        "content": [
            {"type": "text", "text": '{"name": "Ann", "ssn": "987-65-4321"}'},
            {"type": "text", "text": "call 555-12-3456 now"},
            {"type": "image", "data": "MTIzLTQ1LTY3ODk=", "mimeType": "image/png"},
        ],
        "structuredContent": {"name": "Ann", "ssn": "987-65-4321", "notes": "alt 111-22-3333"},
    }
    returned = redact_result(result, decision.obligations).value
    assert returned["structuredContent"] == {"name": "Ann", "ssn": MARKER, "notes": f"alt {MARKER}"}
    assert returned["content"][0]["text"] == '{"name": "Ann", "ssn": "[REDACTED]"}'
    assert returned["content"][1]["text"] == f"call {MARKER} now"
    assert returned["content"][2] == result["content"][2]
    plain = engine.decide(call("a", "echo", "crm", args))
    assert (plain.outcome, plain.policy_ids) == ("allow", ("allow-all",))
    for mode in (Mode.ADVISORY, Mode.SILENT):
        enforcement = apply_mode(decision, mode)
        assert not enforcement.redact and enforcement.would_redact


def test_mnpi_flow() -> None:
    engine = example_engine("mnpi-flow")
    email = ToolFacts.of(["communication"], None)
    memo = ToolFacts.of(["mnpi"], {"readOnlyHint": True})
    session = SessionFacts()
    assert (
        engine.decide(call("a", "send-email", "mail", tool=email, session=session)).outcome
        == "allow"
    )
    assert (
        engine.decide(call("a", "read-deal-memo", "docs", tool=memo, session=session)).outcome
        == "allow"
    )
    session = session.after_result(memo.labels)  # the memo's result reached the agent
    decision = engine.decide(call("a", "send-email", "mail", tool=email, session=session))
    assert (decision.outcome, decision.policy_ids) == ("deny", ("no-mnpi-to-communication",))
    assert (
        engine.decide(call("a", "read-deal-memo", "docs", tool=memo, session=session)).outcome
        == "allow"
    )
    fresh = SessionFacts()
    assert (
        engine.decide(call("a", "send-email", "mail", tool=email, session=fresh)).outcome == "allow"
    )


def test_session_facts_accumulate_without_mutation() -> None:
    start = SessionFacts()
    after = start.after_result(["mnpi", "pii"]).after_result(["pii"])
    assert after.data_classes_seen == {"mnpi", "pii"} and start.data_classes_seen == frozenset()
    assert after.after_result([]) is after
    assert after.record == {"data_classes_seen": ["mnpi", "pii"]}


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"destructiveHint": True}, "deny"),
        ({"readOnlyHint": False, "destructiveHint": False}, "allow"),
        ({"readOnlyHint": True}, "allow"),
        (None, "deny"),
        ({"destructiveHint": "no"}, "deny"),
    ],
)
def test_read_only(annotations: dict[str, object] | None, expected: str) -> None:
    engine = example_engine("read-only")
    decision = engine.decide(call("a", "t", "s", tool=ToolFacts.of([], annotations)))
    assert decision.outcome == expected
    if expected == "deny":
        assert decision.policy_ids == ("deny-destructive",)
    listing = PolicyRequest("a", "list_tools", "Tool", "t", "s", tool=ToolFacts.of([], annotations))
    assert engine.decide(listing).outcome == "allow"


BILLING = "finance/billing-agent"
SUPPORT = "support/support-agent"
READ_ONLY = ToolFacts.of([], {"readOnlyHint": True})


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            PolicyRequest("anyone/x", "list_tools", "Tool", "crm.lookup", "crm"),
            ("allow", ("everyone-discovers",)),
        ),
        (
            PolicyRequest("anyone/x", "list_resources", "Resource", "file:///a", "fs"),
            ("allow", ("everyone-discovers",)),
        ),
        (
            PolicyRequest("anyone/x", "read_resource", "Resource", "file:///a", "fs"),
            ("allow", ("everyone-discovers",)),
        ),
        (call(BILLING, "billing.invoice", "billing"), ("allow", ("billing-agent-uses-billing",))),
        (
            call(BILLING, "billing.refund", "billing", {"amount": 200}),
            ("allow", ("billing-agent-uses-billing",)),
        ),
        (call(BILLING, "billing.refund", "billing", {"amount": 900}), ("deny", ("refund-limit",))),
        (call(BILLING, "billing.refund", "billing"), ("allow", ("billing-agent-uses-billing",))),
        (
            call(BILLING, "billing.refund", "billing", {"amount": "900"}),
            ("deny", ("refund-limit",)),
        ),
        (
            call(BILLING, "billing.refund", "billing", {"amount": 900.5}),
            ("deny", ("refund-limit",)),
        ),
        (call(BILLING, "crm.lookup", "crm", tool=READ_ONLY), ("deny", ())),
        (
            call(SUPPORT, "crm.lookup", "crm", tool=READ_ONLY),
            ("allow", ("support-agent-reads-crm",)),
        ),
        (call(SUPPORT, "crm.delete-contact", "crm"), ("deny", ())),
        (call(SUPPORT, "billing.invoice", "billing", tool=READ_ONLY), ("deny", ())),
    ],
)
def test_per_principal(request_: PolicyRequest, expected: tuple[str, tuple[str, ...]]) -> None:
    assert outcome(example_engine("per-principal"), request_) == expected


def test_per_principal_reasons() -> None:
    engine = example_engine("per-principal")
    assert engine.decide(call(BILLING, "crm.lookup", "crm")).reason == "no_permit"
    assert (
        engine.decide(call(BILLING, "billing.refund", "billing", {"amount": "900"})).reason
        == "error"
    )
