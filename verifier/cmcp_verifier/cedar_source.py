"""Positions in Cedar source text, for error messages that say where.

cedarpy reports parse and validation errors without source positions, so the bundle loader
finds them itself: a small lexer (identifiers, strings, numbers, punctuation, ``//``
comments — Cedar's policy and schema languages share it) splits a policy file into its
statements, and :func:`locate` turns an error message into an offset, either by finding the
token the message names or by searching for the shortest prefix of the text that already
fails with the same message (the parser reports the first token it cannot accept).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

_TOKEN_RE = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>//[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[0-9]+)
    | (?P<punct>::|==|!=|<=|>=|&&|\|\||.)
    """,
    re.VERBOSE | re.DOTALL,
)
_COARSE_RE = re.compile(r'"(?:[^"\\]|\\.)*"?|//[^\n]*|;|[^";/]+|/', re.DOTALL)
_HEAD_RE = re.compile(
    r'(?:\s+|//[^\n]*|@\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:\(\s*"(?:[^"\\]|\\.)*"\s*\))?)*', re.DOTALL
)
_BACKTICKED_RE = re.compile(r"`([^`]+)`")
_TRAILING_NAME_RE = re.compile(r":\s*([A-Za-z_][A-Za-z0-9_:]*)\s*$")
_POLICY_ID_RE = re.compile(r"^policy[0-9]+$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Token(NamedTuple):
    kind: str  # ident | string | number | punct
    text: str
    offset: int

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


def tokenize(text: str) -> list[Token]:
    """The significant tokens of ``text`` (whitespace and comments dropped)."""
    return [
        Token(kind, match.group(), match.start())
        for match in _TOKEN_RE.finditer(text)
        if (kind := match.lastgroup or "punct") not in ("ws", "comment")
    ]


@dataclass(frozen=True)
class Statement:
    """One ``…;`` statement of ``text[start:end]`` (the ``;`` included when present)."""

    start: int
    end: int

    def tokens(self, text: str) -> list[Token]:
        """The statement's tokens, offsets relative to the whole text."""
        return [
            t._replace(offset=t.offset + self.start) for t in tokenize(text[self.start : self.end])
        ]

    def effect_offset(self, text: str) -> int:
        """Offset of the effect keyword (after comments and annotations)."""
        return _HEAD_RE.match(text, self.start, self.end).end()  # type: ignore[union-attr]


def split_statements(text: str) -> list[Statement]:
    """The statements of ``text``, ending at ``;`` outside strings and comments.

    Cedar never nests ``;`` inside a policy, so this needs no parser. A trailing statement
    without ``;`` is returned too (ending at its last significant character).
    """
    statements: list[Statement] = []
    start: int | None = None
    last = 0
    for match in _COARSE_RE.finditer(text):
        chunk = match.group()
        if chunk == ";":
            statements.append(Statement(match.start() if start is None else start, match.end()))
            start = None
        elif not chunk.startswith("//"):
            significant = chunk.strip()
            if significant:
                if start is None:
                    start = match.start() + len(chunk) - len(chunk.lstrip())
                last = match.start() + len(chunk.rstrip())
    if start is not None:
        statements.append(Statement(start, last))
    return statements


class LineIndex:
    """Offset → (line, column), both 1-based, columns in characters."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset) - 1
        return line + 1, offset - self._starts[line] + 1


def message_names(message: str) -> list[str]:
    """Names an error message points at: its backticked parts, else a trailing name."""
    names = [n for n in _BACKTICKED_RE.findall(message) if not _POLICY_ID_RE.match(n)]
    if not names:
        match = _TRAILING_NAME_RE.search(message)
        if match:
            names.append(match.group(1))
    return names


def find_name(text: str, tokens: Sequence[Token], names: Sequence[str]) -> int | None:
    """Offset of the first token where one of ``names`` (tried in order) is written."""
    for name in names:
        for candidate in (name, name.rsplit(".", 1)[-1], name.rsplit("::", 1)[-1]):
            if not candidate:
                continue
            plain = _IDENT_RE.match(candidate) is not None
            for tok in tokens:
                hit = tok.text == candidate if plain else text.startswith(candidate, tok.offset)
                if hit:
                    return tok.offset
    return None


def first_failing_token(
    text: str, tokens: Sequence[Token], fails_with: Callable[[str], str | None], message: str
) -> int | None:
    """Offset of the token at which ``text`` starts failing with ``message``.

    Binary search for the shortest token-aligned prefix whose parse fails with exactly
    ``message``; shorter prefixes either parse or fail with a different message (usually
    "unexpected end of input"). Returns None when no prefix reproduces the message.
    """
    lo, hi = 0, len(tokens) - 1
    found: int | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fails_with(text[: tokens[mid].end]) == message:
            found, hi = mid, mid - 1
        else:
            lo = mid + 1
    return None if found is None else tokens[found].offset


def locate(
    text: str,
    tokens: Sequence[Token],
    message: str,
    *,
    fails_with: Callable[[str], str | None] | None = None,
    default: int = 0,
) -> int:
    """Best offset for ``message`` within ``text`` (tokens restricted to the relevant part).

    With ``fails_with`` (a parser returning its error message or None), syntax errors are
    located by prefix search and checked against the names the message mentions; otherwise
    the first place a mentioned name is written wins, then ``default``.
    """
    if "end of input" in message and tokens:
        return tokens[-1].offset
    names = message_names(message)
    by_name = find_name(text, tokens, names)
    if fails_with is not None:
        by_parse = first_failing_token(text, tokens, fails_with, message)
        if by_parse is not None and (by_name is None or _token_at(tokens, by_parse, names)):
            return by_parse
    return default if by_name is None else by_name


def _token_at(tokens: Sequence[Token], offset: int, names: Sequence[str]) -> bool:
    return any(tok.offset == offset and tok.text in names for tok in tokens)
