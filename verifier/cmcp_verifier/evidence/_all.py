"""Imports every evidence module so that each registers itself."""

from . import azure, coco, nvidia, sevsnp, tdx, tpm  # noqa: F401
