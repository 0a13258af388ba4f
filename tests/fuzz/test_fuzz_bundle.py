"""Fuzzing the policy bundle loader with mutated real bundles, and redaction with any JSON.

Whatever bytes a bundle holds, loading it either succeeds or raises BundleError; a bundle
that loads builds an engine whose decisions never raise.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from cmcp_sidecar.policy import PolicyEngine, PolicyRequest, redact_arguments, redact_result
from cmcp_verifier.bundle import BundleFiles
from cmcp_verifier.cedar_bundle import load_bundle
from cmcp_verifier.errors import BundleError
from cmcp_verifier.obligations import obligations_of

from ..policyfactory import EXAMPLES, example_files
from ._settings import fuzz_settings

BUNDLES = [dict(example_files(name).files) for name in EXAMPLES]
# Fragments that steer mutations into Cedar's and the loader's interesting corners.
FRAGMENTS = [
    b";",
    b"(",
    b")",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b"@",
    b",",
    b"::",
    b"==",
    b".",
    b'@id("x")',
    b'@redact_result("',
    b'@redact_arguments("regex:',
    b'@redact_x("a")',
    b"permit",
    b"forbid",
    b"when",
    b"unless",
    b"principal",
    b"action",
    b"resource",
    b"context",
    b" in ",
    b" is ",
    b" has ",
    b" like ",
    b"?principal",
    b"//",
    b"\n",
    b"\xff",
    b"\x00",
    b"entity ",
    b"type ",
    b"namespace ",
    b"appliesTo",
    b"Set<",
    b"Long",
    b"String",
    b"{}",
    b"9223372036854775807",
    b'"__entity"',
    b"\xf0\x9f\x98\x80",
    b'Tool::"',
    b'Server::"',
    b'"contract"',
    b'"name"',
    b"null",
    b"1.5",
]


# Two bytes in three printable: most mutations should get past UTF-8 and JSON decoding.
PRINTABLE_MOSTLY = st.one_of(st.integers(32, 126), st.integers(32, 126), st.integers(0, 255))


def _mutate(data: st.DataObject, blob: bytearray) -> bytes:
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.integers(0, 3))
        i = data.draw(st.integers(0, len(blob)))
        if op == 0 and blob:
            blob[min(i, len(blob) - 1)] = data.draw(PRINTABLE_MOSTLY)
        elif op == 1:
            blob[i:i] = data.draw(st.sampled_from(FRAGMENTS))
        elif op == 2:
            del blob[i : i + data.draw(st.integers(1, 16))]
        else:
            j = data.draw(st.integers(0, len(blob)))
            blob[i:i] = blob[j : j + data.draw(st.integers(1, 32))]
    return bytes(blob)


@fuzz_settings
@given(st.data())
def test_mutated_bundles_only_raise_bundle_errors(data: st.DataObject) -> None:
    files = dict(data.draw(st.sampled_from(BUNDLES)))
    # Policy files twice as often as the schema or the manifest.
    cedar = sorted(n for n in files if n.endswith(".cedar"))
    name = data.draw(st.sampled_from([*cedar, *cedar, "schema.cedarschema", "manifest.json"]))
    files[name] = _mutate(data, bytearray(files[name]))
    try:
        bundle = load_bundle(BundleFiles(files))
    except BundleError as exc:
        assert exc.code.startswith("bundle.") and exc.message
        event(exc.code)
        return
    event("loaded")
    engine = PolicyEngine.from_bundle(bundle)
    for tool in ("get-env", "lookup"):
        decision = engine.decide(PolicyRequest.call_tool("a", tool, "s", {"ssn": "1", "n": 1.5}))
        assert decision.outcome in ("allow", "deny", "redact")


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _containers,
    max_leaves=30,
)
selectors = st.sampled_from(
    ["ssn", "**.ssn", "*.a", "a.0.b", "text", "regex:[0-9]+", "a, regex:x|y"]
)


@fuzz_settings
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=5), selectors, selectors)
def test_redaction_never_raises(value: dict[str, Any], arguments: str, result: str) -> None:
    plan = obligations_of("permit", {"redact_arguments": arguments, "redact_result": result})
    redact_arguments(value, plan)
    redact_result(value, plan)
    redact_result(
        {"content": [{"type": "text", "text": str(value)}], "structuredContent": value}, plan
    )
