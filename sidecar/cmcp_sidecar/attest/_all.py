"""Every built-in provider module; importing one registers it (see registry.py)."""

from . import azure, coco, gpu, sevsnp, software, tdx, tpm  # noqa: F401
