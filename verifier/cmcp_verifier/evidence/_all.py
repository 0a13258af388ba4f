"""Imports every evidence module so that each registers itself."""

from . import (
    tdx,  # noqa: F401
    tpm,  # noqa: F401
)
