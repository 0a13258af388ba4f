"""Imports every evidence module so that each registers itself."""

from . import tpm  # noqa: F401
