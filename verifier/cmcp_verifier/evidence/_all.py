"""Imports every evidence module so that each registers itself."""

from . import nvidia, sevsnp, tdx, tpm  # noqa: F401
