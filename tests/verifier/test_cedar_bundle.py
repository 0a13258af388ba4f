"""Bundle loading and validation: the code the sidecar and the operator share."""

from __future__ import annotations

import json
import subprocess
import sys

import cedarpy
import pytest

from cmcp_verifier.bundle import BundleFiles, bundle_hash
from cmcp_verifier.cedar_bundle import BundleValidationError, load_bundle
from cmcp_verifier.errors import BundleError

from ..policyfactory import (
    EXAMPLES,
    MANIFEST,
    POLICIES,
    SCHEMA_TEXT,
    bundle_files,
    example_files,
    load,
    schema,
)

ALLOW = "permit(principal, action, resource);\n"


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_bundle_loads(name: str) -> None:
    bundle = load_bundle(POLICIES / name)
    assert bundle.hash == example_files(name).hash
    assert bundle.manifest.name == name
    assert bundle.policies
    assert "README.md" in bundle.files.ignored


def test_policy_infos_have_stable_ids_and_places() -> None:
    bundle = load(
        {
            "a.cedar": ALLOW + '\n// comment\n@id("no-env")\n@note("x")\n'
            '  forbid(principal, action, resource == Tool::"get-env");\n',
            "b.cedar": '@note("n")\npermit(principal, action, resource);',
        }
    )
    first, second, third = bundle.policies
    assert (first.id, first.file, first.line, first.column, first.effect) == (
        "a.cedar:0",
        "a.cedar",
        1,
        1,
        "permit",
    )
    assert (second.id, second.line, second.column, second.effect) == ("no-env", 6, 3, "forbid")
    assert second.annotations == {"id": "no-env", "note": "x"}
    assert second.text.startswith('@id("no-env")') and second.text.endswith(";")
    assert second.resource_scope == {"op": "==", "entity": {"type": "Tool", "id": "get-env"}}
    assert (third.id, third.line) == ("b.cedar:0", 2)
    assert bundle.policy("no-env") is second
    assert set(bundle.policy_texts) == {"a.cedar", "b.cedar"}


def test_expected_hash_is_checked() -> None:
    bundle = load_bundle(POLICIES / "allow-all-but-one")
    bundle.check_hash(bundle.hash)
    with pytest.raises(BundleError) as info:
        bundle.check_hash("sha256:" + "0" * 64)
    assert info.value.code == "bundle.hash_mismatch"
    assert bundle.hash in info.value.message
    with pytest.raises(BundleError) as info:
        bundle.check_hash("deadbeef")
    assert info.value.code == "bundle.expected_hash"


def _many(n: int, bad: dict[int, str] | None = None) -> str:
    """n one-line policies (line i+1 holds policy i), some replaced by ``bad``."""
    bad = bad or {}
    return "\n".join(
        bad.get(i, f'forbid(principal, action, resource == Tool::"t{i}");') for i in range(n)
    )


def test_large_files_keep_positions_and_ids() -> None:
    bundle = load(_many(700))  # converted and validated in chunks of 256 statements
    assert len(bundle.policies) == 700
    for i in (0, 255, 256, 511, 699):
        info = bundle.policies[i]
        assert (info.id, info.line, info.index) == (f"policies.cedar:{i}", i + 1, i)
        assert f'"t{i}"' in info.text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {400: "forbid(principal, action, resource) when { 1 + };"},
            "401:48: unexpected token `}`",
        ),
        ({520: 'forbid(principal, action, resource == Tol::"x");'}, "521:39: unrecognized entity"),
        ({600: "permit(principal == ?principal, action, resource);"}, "601:1: policy templates"),
    ],
)
def test_large_files_report_the_right_line(bad: dict[int, str], message: str) -> None:
    with pytest.raises(BundleValidationError) as info:
        load(_many(700, bad))
    assert str(info.value.problems[0]).startswith("policies.cedar:" + message)


def test_policy_set_json_names_decisions_by_stable_id() -> None:
    bundle = load_bundle(POLICIES / "allow-all-but-one")
    policies = cedarpy.PolicySet.from_json_str(bundle.policy_set_json())
    request = {
        "principal": {"type": "Agent", "id": "a"},
        "action": {"type": "Action", "id": "call_tool"},
        "resource": {"type": "Tool", "id": "get-env"},
        "context": {},
    }
    result = cedarpy.is_authorized(request, policies, [])
    assert not result.allowed
    assert result.diagnostics.reasons == ["policies.cedar:1"]
    only_permit = cedarpy.PolicySet.from_json_str(bundle.policy_set_json(["policies.cedar:0"]))
    assert cedarpy.is_authorized(request, only_permit, []).allowed


# Each case: files to put in the bundle, expected code, expected first message (exact).
INVALID = {
    "syntax error": (
        {"deny.cedar": ALLOW + "\nforbid(principal, action, resource)\n  when { 1 + };\n"},
        "bundle.syntax",
        "deny.cedar:4:14: unexpected token `}`",
    ),
    "missing semicolon": (
        {"deny.cedar": ALLOW + "forbid(principal, action, resource)\n"},
        "bundle.syntax",
        "deny.cedar:2:35: unexpected end of input (is a `;` missing?)",
    ),
    "unknown effect": (
        {"deny.cedar": "\n  permt(principal, action, resource);\n"},
        "bundle.syntax",
        "deny.cedar:2:3: invalid policy effect: permt",
    ),
    "unterminated string": (
        {"deny.cedar": 'permit(principal, action, resource == Tool::"abc);\n'},
        "bundle.syntax",
        "deny.cedar:1:45: invalid token",
    ),
    "wrong entity type": (
        {"deny.cedar": ALLOW + "\n" * 5 + 'forbid(principal, action, resource == Tol::"get-env");'},
        "bundle.validation",
        "deny.cedar:7:39: unrecognized entity type `Tol`",
    ),
    "unknown action": (
        {"deny.cedar": 'forbid(principal,\n  action == Action::"call_tol", resource);'},
        "bundle.validation",
        'deny.cedar:2:13: unrecognized action `Action::"call_tol"`',
    ),
    "schema violation (undeclared argument)": (
        {
            "deny.cedar": "permit(principal, action, resource)\n"
            '  when { context.arguments.ssn == "1" };'
        },
        "bundle.validation",
        "deny.cedar:2:18: attribute `arguments.ssn` in context not found",
    ),
    "schema violation (type)": (
        {
            "deny.cedar": "\n\npermit(principal, action, resource)\n"
            "  when { context.tool.labels.contains(1) };"
        },
        "bundle.validation",
        "deny.cedar:3:1: the types Long and String are not compatible",
    ),
    "template": (
        {"deny.cedar": ALLOW + "permit(principal == ?principal, action, resource);"},
        "bundle.template",
        "deny.cedar:2:1: policy templates (?principal / ?resource slots) "
        "are not supported in bundles",
    ),
    "duplicate id": (
        {
            "a.cedar": '@id("x") permit(principal, action, resource);',
            "b.cedar": '\n@id("x")\n forbid(principal, action, resource);',
        },
        "bundle.duplicate_id",
        "b.cedar:3:2: policy id 'x' is already used at a.cedar:1",
    ),
    "auto id taken by @id": (
        {"a.cedar": ALLOW + '@id("a.cedar:0") forbid(principal, action, resource);'},
        "bundle.duplicate_id",
        "a.cedar:2:18: policy id 'a.cedar:0' is already used at a.cedar:1",
    ),
    "bad id": (
        {"deny.cedar": '@id("has space")\npermit(principal, action, resource);'},
        "bundle.policy_id",
        'deny.cedar:1:1: @id("has space") is not a valid policy id '
        "(1-128 of [A-Za-z0-9._:/@+-], starting with a letter or digit)",
    ),
    "unknown obligation annotation": (
        {"deny.cedar": '@id("r")\n  @redact_argument("ssn")\npermit(principal, action, resource);'},
        "bundle.annotation",
        "deny.cedar:2:3: unknown obligation annotation @redact_argument "
        "(known: @redact_arguments, @redact_result)",
    ),
    "ill-formed selector": (
        {"deny.cedar": '@redact_result("a..b")\npermit(principal, action, resource);'},
        "bundle.annotation",
        "deny.cedar:1:1: @redact_result: bad field selector 'a..b': "
        "segments are names ([A-Za-z0-9_$@:/-]), * or **",
    ),
    "ill-formed regex": (
        {
            "deny.cedar": ALLOW
            + '@redact_arguments("regex:(abc")\npermit(principal, action, resource);'
        },
        "bundle.annotation",
        "deny.cedar:2:1: @redact_arguments: invalid regular expression '(abc': "
        "missing ), unterminated subpattern at position 0",
    ),
    "obligation on forbid": (
        {"deny.cedar": '@redact_result("ssn")\nforbid(principal, action, resource);'},
        "bundle.annotation",
        "deny.cedar:1:1: @redact_result belongs on a permit policy, not on forbid",
    ),
    "not UTF-8": (
        {"deny.cedar": "permit(principal, action, resource);\n// \udcff\n"},
        "bundle.encoding",
        "deny.cedar:2:4: not valid UTF-8 (invalid start byte)",
    ),
}


def _files(texts: dict[str, str]) -> BundleFiles:
    return BundleFiles(
        {
            **{n: t.encode("utf-8", "surrogateescape") for n, t in texts.items()},
            "schema.cedarschema": schema(),
            "manifest.json": MANIFEST,
        }
    )


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_policies_are_rejected_with_their_place(case: str) -> None:
    texts, code, message = INVALID[case]
    with pytest.raises(BundleValidationError) as info:
        load_bundle(_files(texts))
    assert info.value.code == code
    assert str(info.value.problems[0]) == message
    assert info.value.message.startswith(message)
    assert isinstance(info.value, BundleError)


SCHEMA_CASES = {
    "schema syntax": (
        SCHEMA_TEXT.replace("entity Server;", "entity Server"),
        "bundle.schema",
        "schema.cedarschema:14:1: error parsing schema: unexpected token `entity`",
    ),
    "unknown type in schema": (
        SCHEMA_TEXT.replace("title: String", "title: Strin"),
        "bundle.schema",
        "schema.cedarschema:29:10: failed to resolve type: Strin",
    ),
    "schema lacks a context attribute the gateway sends": (
        SCHEMA_TEXT.replace("  title: String,\n", ""),
        "bundle.contract",
        "schema.cedarschema:48:8: action call_tool on Tool: the gateway's requests do not fit "
        "this schema: while parsing context, record attribute `title` should not exist "
        "according to the schema",
    ),
    "schema requires an argument": (
        SCHEMA_TEXT.replace("type Arguments = {\n};", "type Arguments = { to: String };"),
        "bundle.contract",
        "schema.cedarschema:48:8: action call_tool on Tool: the gateway's requests do not fit "
        "this schema: while parsing context, expected the record to have an attribute `to`, "
        "but it does not",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=list(SCHEMA_CASES))
def test_invalid_schemas_are_rejected_with_their_place(case: str) -> None:
    text, code, message = SCHEMA_CASES[case]
    files = bundle_files(ALLOW, override={"schema.cedarschema": text.encode()})
    with pytest.raises(BundleValidationError) as info:
        load_bundle(files)
    assert (info.value.code, str(info.value.problems[0])) == (code, message)


def test_a_schema_may_leave_out_actions_it_does_not_use() -> None:
    start = SCHEMA_TEXT.index("action read_resource")
    end = SCHEMA_TEXT.index("action complete")
    text = SCHEMA_TEXT[:start] + SCHEMA_TEXT[end:]
    bundle = load_bundle(bundle_files(ALLOW, override={"schema.cedarschema": text.encode()}))
    assert len(bundle.policies) == 1


MANIFESTS = {
    b'{"name": "x", "version": "1", "description": "d", "extra": 1}': (
        "manifest.json: unknown member 'extra' (allowed: contract, description, name, version)"
    ),
    b'{"name": "x",\n "version": 1,,}': (
        "manifest.json:2:15: is not valid JSON: Expecting property name enclosed in double quotes"
    ),
    b'{"name": "x", "name": "y", "version": "1", "description": ""}': (
        "manifest.json: JSON object has duplicate key 'name'"
    ),
    b'{"name": "x", "version": "1"}': 'manifest.json: "description" must be a string',
    b'{"name": "Bad Name", "version": "1", "description": ""}': (
        'manifest.json: "name" must be lowercase letters, digits, ".", "_" or "-" (at most 64)'
    ),
    b'{"name": "x", "version": "1 2", "description": ""}': (
        'manifest.json: "version" must be 1 to 64 characters without spaces'
    ),
    b'{"name": "x", "version": "1", "description": "", "contract": "cmcp-cedar/v9"}': (
        'manifest.json: "contract" must be "cmcp-cedar/v1" (the only Cedar contract this '
        "version knows)"
    ),
    b"[]": "manifest.json: must be a JSON object",
}


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_manifest_is_strict(manifest: bytes) -> None:
    with pytest.raises(BundleValidationError) as info:
        load_bundle(bundle_files(ALLOW, override={"manifest.json": manifest}))
    assert info.value.code == "bundle.manifest"
    assert str(info.value.problems[0]) == MANIFESTS[manifest]


def test_manifest_fields_are_exposed() -> None:
    manifest = b'{"name": "n", "version": "2.0", "description": "d", "contract": "cmcp-cedar/v1"}'
    bundle = load_bundle(bundle_files(ALLOW, override={"manifest.json": manifest}))
    assert bundle.manifest.to_json() == json.loads(manifest)
    assert bundle.summary()["manifest"]["version"] == "2.0"


@pytest.mark.parametrize(
    ("drop", "code"),
    [
        ("schema.cedarschema", "bundle.missing_schema"),
        ("manifest.json", "bundle.missing_manifest"),
        ("policies.cedar", "bundle.no_policies"),
    ],
)
def test_missing_members_are_rejected(drop: str, code: str) -> None:
    files = dict(bundle_files(ALLOW).files)
    del files[drop]
    with pytest.raises(BundleError) as info:
        load_bundle(BundleFiles(files))
    assert info.value.code == code


def test_missing_directory_is_a_bundle_error(tmp_path: object) -> None:
    with pytest.raises(BundleError) as info:
        load_bundle(f"{tmp_path}/nope")
    assert info.value.code == "bundle.not_found"


def test_all_problems_are_reported_in_file_order() -> None:
    files = bundle_files(
        {
            "a.cedar": "permit(principal, action, resource) when { context.nope };",
            "b.cedar": "forbid(principal, action, resource",
        },
        override={"manifest.json": b"{}"},
    )
    with pytest.raises(BundleValidationError) as info:
        load_bundle(files)
    places = [(p.file, p.code) for p in info.value.problems]
    assert places == [
        ("manifest.json", "bundle.manifest"),
        ("manifest.json", "bundle.manifest"),
        ("manifest.json", "bundle.manifest"),
        ("a.cedar", "bundle.validation"),
        ("b.cedar", "bundle.syntax"),
    ]
    assert info.value.message.endswith("(and 4 more problems)")


@pytest.mark.parametrize("name", ["allow-all-but-one", "redact-pii"])
def test_any_byte_change_in_any_member_changes_the_hash(name: str) -> None:
    files = dict(example_files(name).files)
    original = bundle_hash(files)
    seen = {original}
    for member, data in files.items():
        for i in range(len(data)):
            changed = bytearray(data)
            changed[i] ^= 0x01
            digest = bundle_hash({**files, member: bytes(changed)})
            assert digest not in seen
            seen.add(digest)
    renamed = {("other.cedar" if n == "policies.cedar" else n): d for n, d in files.items()}
    assert bundle_hash(renamed) != original


def test_missing_cedarpy_is_a_clear_bundle_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # cedarpy cannot be uninstalled inside the test run: hiding the module is the only way
    # to produce the "verifier installed alone" situation here.
    monkeypatch.setitem(sys.modules, "cedarpy", None)
    with pytest.raises(BundleError) as info:
        load_bundle(POLICIES / "allow-all-but-one")
    assert info.value.code == "bundle.cedarpy_missing"
    assert info.value.message == (
        "Cedar validation needs cedarpy: install confidential-mcp[sidecar] or [operator]"
    )


def test_the_verifier_does_not_import_cedarpy() -> None:
    code = (
        "import sys, cmcp_verifier.cedar_bundle, cmcp_verifier.cli; "
        "assert 'cedarpy' not in sys.modules, 'cedarpy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
