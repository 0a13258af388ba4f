"""Policy decisions: every outcome, fail-closed errors, the index against full evaluation."""

from __future__ import annotations

import json

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmcp_sidecar.policy import (
    Decision,
    GatewayFacts,
    PolicyEngine,
    PolicyRequest,
    SessionFacts,
    ToolFacts,
)
from cmcp_sidecar.policy.engine import scope_key

from ..policyfactory import engine, load

BASE = """
@id("allow-all")
permit(principal, action, resource);

@id("deny-env")
forbid(principal, action == Action::"call_tool", resource == Tool::"get-env");

@id("redact-crm")
@redact_arguments("ssn")
@redact_result("regex:\\\\d{3}-\\\\d{2}-\\\\d{4}")
permit(principal, action == Action::"call_tool", resource in Server::"crm");

@id("overflow")
forbid(principal, action == Action::"call_tool", resource == Tool::"calc")
when { context.arguments has n && context.arguments.n + 1 > 10 };
"""


@pytest.fixture(scope="module")
def base() -> PolicyEngine:
    return engine(BASE, arguments="n?: Long,")


def call(
    name: str, server: str = "s", args: dict[str, object] | None = None, **facts: object
) -> PolicyRequest:
    return PolicyRequest.call_tool("ns/agent", name, server, args or {}, **facts)


def test_allow(base: PolicyEngine) -> None:
    decision = base.decide(call("echo"))
    assert (decision.outcome, decision.reason, decision.policy_ids) == (
        "allow",
        "permit",
        ("allow-all",),
    )
    assert decision.bundle_hash == base.bundle_hash and not decision.obligations


def test_deny_by_forbid(base: PolicyEngine) -> None:
    decision = base.decide(call("get-env"))
    assert (decision.outcome, decision.reason, decision.policy_ids) == (
        "deny",
        "forbid",
        ("deny-env",),
    )
    assert decision.denied


def test_deny_by_default_when_nothing_permits() -> None:
    decision = engine('permit(principal, action == Action::"list_tools", resource);').decide(
        call("x")
    )
    assert (decision.outcome, decision.reason, decision.policy_ids) == ("deny", "no_permit", ())


def test_redact_carries_the_obligations_of_the_determining_permits(base: PolicyEngine) -> None:
    decision = base.decide(call("lookup", "crm"))
    assert decision.outcome == "redact"
    assert decision.policy_ids == ("allow-all", "redact-crm")
    assert decision.obligations.to_json() == {
        "arguments": ["ssn"],
        "result": ["regex:\\d{3}-\\d{2}-\\d{4}"],
    }
    assert decision.to_audit()["redact"] == decision.obligations.to_json()


def test_redaction_needs_the_annotated_permit_to_match(base: PolicyEngine) -> None:
    # Same tool name on another server: redact-crm does not match, plain allow.
    assert base.decide(call("lookup", "other")).outcome == "allow"


def test_forbid_wins_over_a_redacting_permit() -> None:
    eng = engine(
        '@redact_arguments("a") permit(principal, action, resource);\n'
        'forbid(principal, action, resource == Tool::"x");'
    )
    decision = eng.decide(call("x"))
    assert decision.outcome == "deny" and not decision.obligations


def test_evaluation_error_fails_closed(base: PolicyEngine) -> None:
    # n + 1 overflows: Cedar would skip the failing forbid and allow; we deny.
    decision = base.decide(call("calc", args={"n": 2**63 - 1}))
    assert (decision.outcome, decision.reason, decision.policy_ids) == (
        "deny",
        "error",
        ("overflow",),
    )
    assert decision.errors[0].policy_id == "overflow"
    assert "overflow" in decision.errors[0].message
    audit = decision.to_audit()
    assert audit["errors"] == ["overflow"]
    assert str(2**63 - 1) not in json.dumps(audit)  # argument values never reach the audit
    assert base.decide(call("calc", args={"n": 3})).outcome == "allow"
    assert base.decide(call("calc", args={"n": 30})).reason == "forbid"


def test_type_error_in_a_permit_fails_closed() -> None:
    eng = engine(
        "permit(principal, action, resource)\n"
        "  when { context.arguments has n && context.arguments.n > 1 };",
        arguments="n?: Long,",
    )
    # A string where the schema said Long: Cedar cannot evaluate `>`; deny, never guess.
    decision = eng.decide(call("t", args={"n": "5"}))
    assert (decision.outcome, decision.reason) == ("deny", "error")
    assert eng.decide(call("t", args={"n": 5})).outcome == "allow"
    assert eng.decide(call("t", args={"n": 5.5})).reason == "error"  # 5.5 reaches Cedar as "5.5"


def test_a_satisfied_forbid_still_determines_an_erroring_decision() -> None:
    eng = engine(
        'permit(principal, action, resource);\n@id("f") forbid(principal, action, resource);\n'
        '@id("e") forbid(principal, action, resource)\n'
        "  when { context.arguments has n && context.arguments.n + 1 > 0 };",
        arguments="n?: Long,",
    )
    decision = eng.decide(call("t", args={"n": 2**63 - 1}))
    assert (decision.outcome, decision.reason, decision.policy_ids) == ("deny", "forbid", ("f",))
    assert [e.policy_id for e in decision.errors] == ["e"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"x": {"__entity": {"type": "Agent", "id": "admin"}}},
        {"x": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}},
    ],
)
def test_cedar_escapes_in_arguments_are_refused(
    base: PolicyEngine, arguments: dict[str, object]
) -> None:
    decision = base.decide(call("echo", args=arguments))
    assert (decision.outcome, decision.reason, decision.policy_ids) == ("deny", "error", ())
    assert decision.to_audit()["errors"] == ["request"]


def test_unencodable_text_is_denied_not_raised(base: PolicyEngine) -> None:
    for request in (
        call("echo", args={"q": "\udcff"}),
        PolicyRequest("\udcff", "call_tool", "Tool", "t", "s"),
    ):
        decision = base.decide(request)
        assert (decision.outcome, decision.reason) == ("deny", "error")
    assert base.decide(call("echo", args={"q": "x" * 4_000_000})).outcome == "allow"


def test_escape_injection_would_otherwise_impersonate() -> None:
    # Without the guard Cedar would read {"__entity": ...} as the entity itself.
    eng = engine(
        "permit(principal, action, resource)\n"
        '  when { context.arguments has owner && context.arguments.owner == "x" };',
        arguments="owner?: String,",
    )
    assert eng.decide(call("t", args={"owner": "x"})).outcome == "allow"
    assert (
        eng.decide(call("t", args={"owner": {"__entity": {"type": "Agent", "id": "x"}}})).reason
        == "error"
    )


def test_arguments_values_reach_policies() -> None:
    eng = engine(
        """permit(principal, action, resource)
        when { context.arguments has card && context.arguments.card has number &&
               context.arguments.card.number like "4111*" && context.arguments has tags &&
               context.arguments.tags.contains("vip") };""",
        arguments="card?: { number?: String }, tags?: Set<String>,",
    )
    good = {"card": {"number": "4111-1111", "cvv": None}, "tags": ["vip", "x"], "extra": 0.5}
    assert eng.decide(call("t", args=good)).outcome == "allow"
    assert eng.decide(call("t", args={**good, "tags": ["x"]})).outcome == "deny"


def test_context_facts_reach_policies() -> None:
    eng = engine(
        """permit(principal, action, resource)
        when { context.tool.labels.contains("pii") && context.tool.annotations.readOnlyHint &&
               context.gateway.mode == "advisory" && context.gateway.platform == "sev-snp" &&
               context.session.data_classes_seen.contains("mnpi") };"""
    )
    facts = {
        "tool": ToolFacts.of(["pii"], {"readOnlyHint": True}),
        "session": SessionFacts().after_result(["mnpi"]),
        "gateway": GatewayFacts("advisory", "sev-snp"),
    }
    assert eng.decide(call("t", **facts)).outcome == "allow"
    assert eng.decide(call("t", **{**facts, "gateway": GatewayFacts()})).outcome == "deny"


def test_every_action_and_resource_type_is_decided() -> None:
    eng = engine(
        """permit(principal == Agent::"ns/agent", action, resource);
        forbid(principal, action == Action::"read_resource",
               resource == Resource::"file:///etc/passwd");
        forbid(principal, action in [Action::"get_prompt", Action::"list_prompts"],
               resource in Server::"secret");"""
    )
    cases = [
        ("call_tool", "Tool", "t", "s", "allow"),
        ("list_tools", "Tool", "t", "s", "allow"),
        ("read_resource", "Resource", "file:///etc/passwd", "fs", "deny"),
        ("read_resource", "Resource", "file:///tmp/x", "fs", "allow"),
        ("subscribe_resource", "Resource", "file:///etc/passwd", "fs", "allow"),
        ("list_resources", "Resource", "file:///tmp/x", "fs", "allow"),
        ("get_prompt", "Prompt", "p", "secret", "deny"),
        ("list_prompts", "Prompt", "p", "secret", "deny"),
        ("get_prompt", "Prompt", "p", "open", "allow"),
        ("complete", "Prompt", "p", "open", "allow"),
        ("complete", "Resource", "file:///{x}", "fs", "allow"),
    ]
    for action, rtype, rid, server, outcome in cases:
        request = PolicyRequest("ns/agent", action, rtype, rid, server)
        assert eng.decide(request).outcome == outcome, (action, rid)
    assert eng.decide(PolicyRequest("other", "call_tool", "Tool", "t", "s")).reason == "no_permit"


def test_requests_are_typed() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        PolicyRequest("a", "tools/call", "Tool", "t", "s")
    with pytest.raises(ValueError, match="applies to Tool"):
        PolicyRequest("a", "call_tool", "Prompt", "t", "s")


def test_odd_names_are_safe_entity_ids(base: PolicyEngine) -> None:
    for name in ['get-env"; permit', "a\nb", "", 'Tool::"x"', "\u0000"]:
        assert base.decide(call(name)).outcome == "allow"
    assert base.decide(PolicyRequest.call_tool('x"y', "get-env", "s", {})).outcome == "deny"


SCOPED_50 = "permit(principal, action, resource);\n" + "\n".join(
    f'forbid(principal, action, resource == Tool::"t{i}");' for i in range(50)
)


@pytest.mark.parametrize("inline_budget", [1000, 0])
def test_policy_sets_are_parsed_once(monkeypatch: pytest.MonkeyPatch, inline_budget: int) -> None:
    eng = PolicyEngine.from_bundle(load(SCOPED_50), inline_budget=inline_budget)
    assert eng.stats().inline_unscoped is (inline_budget > 0)
    built: list[str] = []
    real = cedarpy.PolicySet.from_json_str
    # A spy (not a fake): counts how often policy sets are built, the real parser does the work.
    monkeypatch.setattr(cedarpy.PolicySet, "from_json_str", lambda s: built.append(s) or real(s))
    for _ in range(3):
        for i in range(50):
            decision = eng.decide(call(f"t{i}"))
            assert (decision.outcome, decision.policy_ids) == ("deny", (f"policies.cedar:{i + 1}",))
        assert eng.decide(call("other")).outcome == "allow"
    assert len(built) == 50  # one per scoped tool, once; the unscoped set was built at load
    stats = eng.stats()
    assert (stats.policies, stats.unscoped, stats.buckets, stats.policy_sets) == (51, 1, 50, 51)


def test_unscoped_policies_are_copied_only_within_budget() -> None:
    bundle = load(SCOPED_50)
    inline = PolicyEngine.from_bundle(bundle, inline_budget=50)
    separate = PolicyEngine.from_bundle(bundle, inline_budget=49)
    assert inline.stats().inline_unscoped and not separate.stats().inline_unscoped
    for i in range(50):
        assert inline.decide(call(f"t{i}")) == separate.decide(call(f"t{i}"))


def test_entity_cache_is_bounded() -> None:
    eng = PolicyEngine.from_bundle(load(SCOPED_50), entity_cache_size=5)
    for i in range(20):
        assert eng.decide(call(f"t{i}")).outcome == "deny"
    assert eng.stats().cached_entities == 5
    assert eng.decide(call("t0")).outcome == "deny"  # rebuilt after eviction


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ('resource == Tool::"x"', ("uid", "Tool", "x")),
        ('resource in Server::"s"', ("uid", "Server", "s")),
        ('resource is Tool in Server::"s"', ("uid", "Server", "s")),
        ("resource is Prompt", ("is", "Prompt")),
        ("resource", None),
    ],
)
def test_scope_keys(scope: str, key: tuple[str, ...] | None) -> None:
    bundle = load(f"permit(principal, action, {scope});")
    assert scope_key(dict(bundle.policies[0].resource_scope)) == key


def test_decision_audit_form_is_plain_json() -> None:
    decision = Decision.gateway_deny("catalog_drift", "sha256:" + "0" * 64)
    assert decision.to_audit() == {
        "decision": "deny",
        "reason": "catalog_drift",
        "policy_ids": [],
        "bundle_hash": "sha256:" + "0" * 64,
    }


# --- the index agrees with evaluating the whole bundle --------------------------------------

TOOLS = ["t0", "t1", "t2"]
SERVERS = ["s0", "s1"]
RESOURCES = ["r0"]
PRINCIPALS = ['Agent::"a"', 'Agent::"b"']
SCOPES = (
    ["resource"]
    + [f'resource == Tool::"{t}"' for t in TOOLS]
    + [f'resource in Tool::"{t}"' for t in TOOLS[:1]]
    + [f'resource in Server::"{s}"' for s in SERVERS]
    + ["resource is Tool", "resource is Resource", 'resource is Tool in Server::"s1"']
    + ['resource == Resource::"r0"']
)
ACTIONS = [
    "action",
    'action == Action::"call_tool"',
    'action in [Action::"list_tools", Action::"read_resource"]',
]
CONDITIONS = [
    "",
    ' when { context.tool.labels.contains("x") }',
    " when { context.arguments has n && context.arguments.n > 2 }",
    " when { context.arguments has n && context.arguments.n + 9223372036854775806 > 0 }",
    ' unless { context.session.data_classes_seen.contains("y") }',
]


def _policy(eff: str, p: str | None, a: str, r: str, c: str, red: int | None) -> str:
    if "call_tool" in a and "Resource" in r:
        a = "action"  # call_tool never applies to a Resource: the validator would reject it
    annotation = f'@redact_result("f{red}")\n' if red is not None and eff == "permit" else ""
    return annotation + f"{eff}({'principal' if p is None else 'principal == ' + p}, {a}, {r}){c};"


policy_text = st.builds(
    _policy,
    st.sampled_from(["permit", "permit", "forbid"]),
    st.none() | st.sampled_from(PRINCIPALS),
    st.sampled_from(ACTIONS),
    st.sampled_from(SCOPES),
    st.sampled_from(CONDITIONS),
    st.none() | st.integers(0, 2),
)
request = st.builds(
    lambda principal, kind, server, n, labels, seen: PolicyRequest(
        principal,
        kind[0],
        kind[1],
        kind[2],
        server,
        {} if n is None else {"n": n},
        tool=ToolFacts.of(labels, None),
        session=SessionFacts(frozenset(seen)),
    ),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(
        [("call_tool", "Tool", t) for t in TOOLS]
        + [
            ("list_tools", "Tool", "t1"),
            ("read_resource", "Resource", "r0"),
            ("read_resource", "Resource", "r1"),
        ]
    ),
    st.sampled_from(SERVERS),
    st.none() | st.integers(-5, 5),
    st.sets(st.sampled_from(["x", "z"])),
    st.sets(st.sampled_from(["y", "z"])),
)


def _key(d: Decision) -> tuple[object, ...]:
    return (
        d.outcome,
        d.reason,
        d.policy_ids,
        tuple(sorted(str(e) for e in d.errors)),
        d.obligations,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policy_text, min_size=1, max_size=12), st.lists(request, min_size=1, max_size=8))
def test_index_agrees_with_full_evaluation(
    policies: list[str], requests: list[PolicyRequest]
) -> None:
    bundle = load("\n".join(policies), arguments="n?: Long,")
    full = PolicyEngine.from_bundle(bundle, indexed=False)
    inline = PolicyEngine.from_bundle(bundle)
    separate = PolicyEngine.from_bundle(bundle, inline_budget=0)
    for req in requests:
        expected = _key(full.decide(req))
        assert _key(inline.decide(req)) == expected, req
        assert _key(separate.decide(req)) == expected, req
