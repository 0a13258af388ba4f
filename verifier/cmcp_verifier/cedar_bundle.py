"""Loading and validating a Cedar policy bundle — the same code in the sidecar and the operator.

:func:`load_bundle` reads a bundle (directory or :class:`~cmcp_verifier.bundle.BundleFiles`),
parses ``manifest.json`` strictly, parses ``schema.cedarschema`` and checks that it accepts the
requests of the Cedar contract (:mod:`cmcp_verifier.cedar_contract`), parses every ``*.cedar``
file, validates the policies against the schema (Cedar's strict validator), gives every
policy a stable id (``@id("…")``, else ``<file>:<n>`` with ``n`` its 0-based position in the
file) and parses its obligation annotations (:mod:`cmcp_verifier.obligations`).

Every problem is reported with its place, ``deny.cedar:7:12: unrecognized entity type `Tol```,
all problems of a bundle at once in :class:`BundleValidationError`. cedarpy is imported only
when a bundle is loaded, so the verifier package itself never needs it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .bundle import MANIFEST_FILE, SCHEMA_FILE, BundleFiles, check_members, read_bundle_dir
from .canonical import parse_json
from .cedar_contract import (
    ACTION_TYPE,
    ACTIONS,
    CONTRACT,
    PRINCIPAL_TYPE,
    SERVER_TYPE,
    context_record,
    gateway_record,
    session_record,
    tool_record,
)
from .cedar_source import (
    LineIndex,
    Statement,
    find_name,
    locate,
    split_statements,
    tokenize,
)
from .digests import is_digest
from .errors import BundleError, InputError
from .obligations import ObligationError, RedactionPlan, obligations_of

POLICY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_MANIFEST_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_MANIFEST_KEYS = {"name", "version", "description", "contract"}
_FOR_POLICY_RE = re.compile(r"^for policy `[^`]*`, ")
_FOR_ACTION_RE = re.compile(r' for Action::"[^"]*"')
_JSON_POS_RE = re.compile(r":? line (\d+) column (\d+) \(char \d+\)")
_CHUNK = 256
_CEDARPY_MISSING = "Cedar validation needs cedarpy: install confidential-mcp[sidecar] or [operator]"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle, with its place (line 0: the whole file)."""

    code: str
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class BundleValidationError(BundleError):
    """A bundle failed validation; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        more = len(self.problems) - 1
        message = str(first) + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
        super().__init__(message, code=first.code, hint=_HINTS.get(first.code))


_HINTS = {
    "bundle.contract": "start from policies/schema.cedarschema and extend only `Arguments`",
    "bundle.validation": "policies must type-check against schema.cedarschema (docs/policy.md)",
    "bundle.annotation": "see 'Redaction annotations' in docs/policy.md",
}


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: ``{"name", "version", "description"[, "contract"]}``, nothing else."""

    name: str
    version: str
    description: str
    contract: str = CONTRACT

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "contract": self.contract,
        }


@dataclass(frozen=True)
class PolicyInfo:
    """One policy of a loaded bundle."""

    id: str
    file: str
    index: int  # 0-based position in its file (the n of the automatic id <file>:<n>)
    line: int  # of the effect keyword
    column: int
    effect: str  # permit | forbid
    annotations: Mapping[str, str]
    obligations: RedactionPlan
    text: str  # its source, annotations included
    est_json: str  # Cedar's JSON policy form, to build policy sets with stable ids
    resource_scope: Mapping[str, Any]  # the EST resource constraint, e.g. {"op": "All"}


@dataclass(frozen=True)
class LoadedBundle:
    """A valid bundle: identity, manifest, schema text and policies (with stable ids)."""

    hash: str
    files: BundleFiles
    manifest: Manifest
    schema_text: str
    policies: tuple[PolicyInfo, ...]
    policy_texts: Mapping[str, str]  # file name → Cedar source
    _by_id: Mapping[str, PolicyInfo] = field(repr=False, compare=False, default_factory=dict)

    def policy(self, policy_id: str) -> PolicyInfo:
        """The policy with this stable id (KeyError when there is none)."""
        return self._by_id[policy_id]

    def policy_set_json(self, ids: Iterable[str] | None = None) -> str:
        """Cedar JSON for a policy set of these policies (all by default), keyed by stable id.

        ``cedarpy.PolicySet.from_json_str`` turns it into a handle whose decisions name the
        stable ids.
        """
        chosen = self.policies if ids is None else [self._by_id[i] for i in ids]
        body = ",".join(json.dumps(p.id) + ":" + p.est_json for p in chosen)
        return '{"staticPolicies":{' + body + '},"templates":{},"templateLinks":[]}'

    def check_hash(self, expected: str) -> None:
        """Raise :class:`BundleError` unless the bundle hash is ``expected`` (``sha256:<hex>``)."""
        if not is_digest(expected):
            raise BundleError(
                f"expected hash {expected!r} is not sha256:<64 hex digits>",
                code="bundle.expected_hash",
            )
        if self.hash != expected:
            raise BundleError(
                f"bundle hash {self.hash} does not match the expected {expected}",
                code="bundle.hash_mismatch",
                hint="a policy file, the schema or the manifest differs from the pinned bundle",
            )

    def summary(self) -> dict[str, Any]:
        """What ``cmcp validate-bundle`` prints and the operator reports."""
        return {
            "hash": self.hash,
            "manifest": self.manifest.to_json(),
            "files": sorted(self.files.files),
            "policies": len(self.policies),
            "ignored": list(self.files.ignored),
        }


def load_bundle(source: str | Path | BundleFiles) -> LoadedBundle:
    """Read and validate a bundle; raise :class:`BundleError` (with places) when invalid."""
    files = source if isinstance(source, BundleFiles) else read_bundle_dir(source)
    check_members(files.files)
    problems: list[Problem] = []
    texts = {name: _decode(name, data, problems) for name, data in sorted(files.files.items())}
    manifest = _parse_manifest(files.files[MANIFEST_FILE], problems)
    cedarpy = _cedarpy()
    schema = _load_schema(cedarpy, texts[SCHEMA_FILE], problems)
    policies: list[PolicyInfo] = []
    for name in files.policy_names:
        text = texts[name]
        if text is not None:
            policies.extend(_load_policy_file(cedarpy, name, text, schema, problems))
    by_id = _index_ids(policies, problems)
    if problems or manifest is None or schema is None:
        raise BundleValidationError(problems)
    return LoadedBundle(
        hash=files.hash,
        files=files,
        manifest=manifest,
        schema_text=texts[SCHEMA_FILE] or "",
        policies=tuple(policies),
        policy_texts={n: texts[n] or "" for n in files.policy_names},
        _by_id=by_id,
    )


def _cedarpy() -> ModuleType:
    try:
        import cedarpy
    except ImportError:
        raise BundleError(
            _CEDARPY_MISSING,
            code="bundle.cedarpy_missing",
            hint="the verifier alone cannot validate Cedar; the operator and sidecar extras can",
        ) from None
    return cedarpy


def _decode(name: str, data: bytes, problems: list[Problem]) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8", errors="replace")
        line, column = LineIndex(prefix).position(len(prefix))
        problems.append(
            Problem("bundle.encoding", name, line, column, f"not valid UTF-8 ({exc.reason})")
        )
        return None


def _parse_manifest(data: bytes, problems: list[Problem]) -> Manifest | None:
    before = len(problems)

    def bad(message: str, line: int = 0, column: int = 0) -> None:
        problems.append(Problem("bundle.manifest", MANIFEST_FILE, line, column, message))

    try:
        doc = parse_json(data, what=MANIFEST_FILE, max_bytes=64 * 1024)
    except InputError as exc:
        pos = _JSON_POS_RE.search(exc.message)
        line, column = (int(pos.group(1)), int(pos.group(2))) if pos else (0, 0)
        message = _JSON_POS_RE.sub("", exc.message).removeprefix(MANIFEST_FILE).lstrip(": ")
        bad(message, line, column)
        return None
    if not isinstance(doc, dict):
        bad("must be a JSON object")
        return None
    unknown = sorted(set(doc) - _MANIFEST_KEYS)
    if unknown:
        bad(f"unknown member {unknown[0]!r} (allowed: {', '.join(sorted(_MANIFEST_KEYS))})")
    for key in ("name", "version", "description"):
        if not isinstance(doc.get(key), str):
            bad(f'"{key}" must be a string')
    if len(problems) > before:
        return None
    return _check_manifest_values(doc, bad)


def _check_manifest_values(doc: dict[str, Any], bad: Callable[[str], None]) -> Manifest | None:
    ok = True
    if not _MANIFEST_NAME_RE.match(doc["name"]):
        bad('"name" must be lowercase letters, digits, ".", "_" or "-" (at most 64)')
        ok = False
    if not 0 < len(doc["version"]) <= 64 or any(c.isspace() for c in doc["version"]):
        bad('"version" must be 1 to 64 characters without spaces')
        ok = False
    if len(doc["description"]) > 4096:
        bad('"description" is longer than 4096 characters')
        ok = False
    contract = doc.get("contract", CONTRACT)
    if contract != CONTRACT:
        bad(f'"contract" must be "{CONTRACT}" (the only Cedar contract this version knows)')
        ok = False
    if not ok:
        return None
    return Manifest(doc["name"], doc["version"], doc["description"], contract)


def _parse_error(parse: Any, text: str) -> str | None:
    """The parser's error message for ``text``, or None when it parses."""
    try:
        parse(text)
    except ValueError as exc:
        return str(exc) or "parse error"
    return None


def _load_schema(cedarpy: ModuleType, text: str | None, problems: list[Problem]) -> Any:
    if text is None:
        return None
    parse = cedarpy.Schema.from_str
    message = _parse_error(parse, text)
    if message is not None:
        tokens = tokenize(text)
        offset = locate(text, tokens, message, fails_with=lambda t: _parse_error(parse, t))
        line, column = LineIndex(text).position(offset)
        problems.append(Problem("bundle.schema", SCHEMA_FILE, line, column, message))
        return None
    schema = parse(text)
    _check_contract(cedarpy, schema, text, problems)
    return schema


def _check_contract(cedarpy: ModuleType, schema: Any, text: str, problems: list[Problem]) -> None:
    """Every contract request for an action the schema declares must fit the schema."""
    permit_all = cedarpy.PolicySet.from_str("permit(principal, action, resource);")
    context = context_record(
        {}, tool_record((), None), session_record(()), gateway_record("enforcing", "")
    )
    cases = [(a, r) for a, types in ACTIONS.items() for r in types]
    requests = [
        {
            "principal": {"type": PRINCIPAL_TYPE, "id": "contract-check"},
            "action": {"type": ACTION_TYPE, "id": action},
            "resource": {"type": resource_type, "id": "contract-check"},
            "context": context,
        }
        for action, resource_type in cases
    ]
    entities = [
        {
            "uid": {"type": resource_type, "id": "contract-check"},
            "attrs": {},
            "parents": [{"type": SERVER_TYPE, "id": "contract-check"}],
        }
        for resource_type in sorted({r for _, r in cases})
    ]
    results = cedarpy.is_authorized_batch(requests, permit_all, entities, schema=schema)
    for (action, resource_type), result in zip(cases, results, strict=True):
        errors = list(result.diagnostics.errors)
        if not errors or any("does not exist in the supplied schema" in e for e in errors):
            continue
        offset = find_name(text, tokenize(text), [action]) or 0
        line, column = LineIndex(text).position(offset)
        detail = errors[0].removeprefix("failed to build request: ")
        message = (
            f"action {action} on {resource_type}: the gateway's requests do not fit this "
            f"schema: {detail}"
        )
        problems.append(Problem("bundle.contract", SCHEMA_FILE, line, column, message))
        return


@dataclass
class _PolicyFile:
    """Working state while one policy file is checked."""

    name: str
    text: str
    statements: list[Statement]
    lines: LineIndex
    problems: list[Problem]

    def add(self, code: str, offset: int, message: str) -> None:
        line, column = self.lines.position(offset)
        self.problems.append(Problem(code, self.name, line, column, message))


def _load_policy_file(
    cedarpy: ModuleType, name: str, text: str, schema: Any, problems: list[Problem]
) -> list[PolicyInfo]:
    src = _PolicyFile(name, text, split_statements(text), LineIndex(text), problems)
    infos: list[PolicyInfo | None] = []
    # Converted in chunks of statements: Cedar's peak memory grows with the text converted.
    for first in range(0, len(src.statements), _CHUNK):
        part = src.statements[first : first + _CHUNK]
        try:
            est = json.loads(cedarpy.policies_to_json_str(text[part[0].start : part[-1].end]))
        except ValueError as exc:
            _report_syntax_error(cedarpy, src, part, str(exc))
            return []
        by_index = _positional(est, src, first, len(part))
        if by_index is None:
            return []
        infos.extend(_policy_info(src, i, policy) for i, policy in sorted(by_index.items()))
    if schema is not None:
        for first in range(0, len(src.statements), _CHUNK):
            _validate(cedarpy, src, schema, first, _CHUNK)
    return [info for info in infos if info is not None]


def _report_syntax_error(
    cedarpy: ModuleType, src: _PolicyFile, statements: list[Statement], message: str
) -> None:
    """Find the first statement that does not parse on its own and the token that fails."""

    def fails_with(text: str) -> str | None:
        return _parse_error(cedarpy.PolicySet.from_str, text)

    for statement in statements:
        part = src.text[statement.start : statement.end]
        part_message = fails_with(part)
        if part_message is None:
            continue
        offset = locate(part, tokenize(part), part_message, fails_with=fails_with)
        hint = " (is a `;` missing?)" if "end of input" in part_message else ""
        src.add("bundle.syntax", statement.start + offset, part_message + hint)
        return
    src.add("bundle.syntax", statements[0].start, message)


def _positional(
    est: dict[str, Any], src: _PolicyFile, first: int, count: int
) -> dict[int, dict[str, Any]] | None:
    """Cedar's positional ids (policy<N>, N counted from ``first``) → policies."""
    for key in est.get("templates", {}):
        index = first + int(key.removeprefix("policy"))
        src.add(
            "bundle.template",
            _statement_offset(src, index),
            "policy templates (?principal / ?resource slots) are not supported in bundles",
        )
    if est.get("templates"):
        return None
    policies = {int(k.removeprefix("policy")): v for k, v in est["staticPolicies"].items()}
    if sorted(policies) != list(range(count)):
        src.add(
            "bundle.syntax",
            src.statements[first].start,
            "could not match policies to their source statements",
        )
        return None
    return {first + i: policy for i, policy in policies.items()}


def _statement_offset(src: _PolicyFile, index: int) -> int:
    if 0 <= index < len(src.statements):
        return src.statements[index].effect_offset(src.text)
    return 0


def _policy_info(src: _PolicyFile, index: int, policy: dict[str, Any]) -> PolicyInfo | None:
    statement = src.statements[index]
    annotations = {k: ("" if v is None else v) for k, v in policy.get("annotations", {}).items()}
    policy_id = annotations.get("id", f"{src.name}:{index}")
    if not POLICY_ID_RE.match(policy_id):
        src.add(
            "bundle.policy_id",
            _annotation_offset(src, statement, "id"),
            f"@id({json.dumps(policy_id)}) is not a valid policy id "
            "(1-128 of [A-Za-z0-9._:/@+-], starting with a letter or digit)",
        )
        return None
    try:
        plan = obligations_of(policy["effect"], annotations)
    except ObligationError as exc:
        src.add("bundle.annotation", _annotation_offset(src, statement, exc.annotation), str(exc))
        return None
    effect_at = statement.effect_offset(src.text)
    line, column = src.lines.position(effect_at)
    return PolicyInfo(
        id=policy_id,
        file=src.name,
        index=index,
        line=line,
        column=column,
        effect=policy["effect"],
        annotations=annotations,
        obligations=plan,
        text=src.text[statement.start : statement.end],
        est_json=json.dumps(policy, separators=(",", ":")),
        resource_scope=policy["resource"],
    )


def _annotation_offset(src: _PolicyFile, statement: Statement, key: str) -> int:
    tokens = statement.tokens(src.text)
    for i in range(len(tokens) - 1):
        if tokens[i].text == "@" and tokens[i + 1].text == key:
            return tokens[i].offset
    return statement.effect_offset(src.text)


def _validate(cedarpy: ModuleType, src: _PolicyFile, schema: Any, first: int, count: int) -> None:
    """Validate statements ``first … first+count-1`` against the schema."""
    part = src.statements[first : first + count]
    result = cedarpy.validate_policies(src.text[part[0].start : part[-1].end], schema)
    seen: set[tuple[str, str]] = set()
    for error in result.errors:
        # Cedar repeats an error once per action a policy applies to; report it once.
        message = _FOR_ACTION_RE.sub("", _FOR_POLICY_RE.sub("", error.error))
        if (error.policy_id, message) in seen:
            continue
        seen.add((error.policy_id, message))
        index = int(error.policy_id.removeprefix("policy") or "-1")
        if not 0 <= index < count:
            src.add("bundle.validation", part[0].start, message)
            continue
        statement = part[index]
        tokens = statement.tokens(src.text)
        offset = locate(src.text, tokens, message, default=statement.effect_offset(src.text))
        src.add("bundle.validation", offset, message)


def _index_ids(policies: list[PolicyInfo], problems: list[Problem]) -> dict[str, PolicyInfo]:
    by_id: dict[str, PolicyInfo] = {}
    for info in policies:
        first = by_id.get(info.id)
        if first is not None:
            problems.append(
                Problem(
                    "bundle.duplicate_id",
                    info.file,
                    info.line,
                    info.column,
                    f"policy id {info.id!r} is already used at {first.file}:{first.line}",
                )
            )
        else:
            by_id[info.id] = info
    return by_id
