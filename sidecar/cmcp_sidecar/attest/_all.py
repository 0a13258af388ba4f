"""Every built-in provider module; importing one registers it (see registry.py)."""

from . import software, tpm  # noqa: F401
