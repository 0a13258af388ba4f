"""Typed errors with stable codes.

Every failure this project reports on purpose is a :class:`CmcpError`: a stable, dotted
``code`` (documented in docs/errors.md), one line of message, and an optional hint that says
what to do about it. Command-line tools print :meth:`CmcpError.render`; libraries raise.
"""

from __future__ import annotations


class CmcpError(Exception):
    """Base class: a stable code, a one-line message and an optional hint."""

    code: str = "cmcp.error"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def render(self) -> str:
        """One line for the user, plus a hint line when there is one."""
        line = f"error[{self.code}]: {self.message}"
        return f"{line}\n  hint: {self.hint}" if self.hint else line


class InputError(CmcpError):
    """Input that cannot be read at all: malformed JSON, bad base64, truncated binary."""

    code = "input.malformed"


class VerificationError(CmcpError):
    """A check failed: the object was read, and it is not what it must be."""

    code = "verify.rejected"


class ConfigError(CmcpError):
    """A configuration file or option is invalid."""

    code = "config.invalid"


class BundleError(CmcpError):
    """A policy bundle is malformed or does not match its pin."""

    code = "bundle.invalid"
