"""Every built-in provider module; importing one registers it (see registry.py)."""

from . import software  # noqa: F401
