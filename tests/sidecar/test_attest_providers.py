"""The software provider (dev mode only), the self-measurement and provider selection.

Hardware providers are not part of this build yet; selection is shown with the real registry
(software only) and with stand-in providers registered under hardware names (DeviceFileProvider,
whose device file is present or not), which is what a hardware provider's probe reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cmcp_sidecar.attest import (
    AUTO_ORDER,
    AttestationError,
    ProviderRegistry,
    default_registry,
    select_provider,
)
from cmcp_sidecar.attest.selfmeasure import measure_packages, self_measurement
from cmcp_sidecar.attest.software import SoftwareProvider

from .trailkit import DeviceFileProvider


def test_software_provider_is_refused_without_dev_mode() -> None:
    with pytest.raises(AttestationError) as err:
        SoftwareProvider(dev_mode=False)
    assert err.value.code == "attestation.dev_mode_required"
    assert "set CMCP_DEV_MODE=1" in err.value.message and "'software'" in err.value.message


async def test_software_evidence_is_honest() -> None:
    provider = SoftwareProvider(dev_mode=True)
    evidence = await provider.collect(b"\x01" * 32)
    assert (provider.evidence_type, provider.platform) == ("software", "software-only")
    assert evidence.members == {} and evidence.report_data == b"\x01" * 32
    assert evidence.measurement == self_measurement().digest
    assert evidence.facts["hardware"] is False


def test_self_measurement_covers_every_package_file(tmp_path: Path) -> None:
    package = tmp_path / "measured_pkg_for_test"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "data" / "table.json").write_text("{}")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"ignored")
    sys.path.insert(0, str(tmp_path))
    try:
        first = measure_packages(("measured_pkg_for_test",))
        assert first.files == 2
        (package / "__pycache__" / "junk.pyc").write_bytes(b"changed, still ignored")
        assert measure_packages(("measured_pkg_for_test",)) == first
        (package / "data" / "table.json").write_text('{"a": 1}')
        assert measure_packages(("measured_pkg_for_test",)).digest != first.digest
    finally:
        sys.path.remove(str(tmp_path))
    assert self_measurement().files > 20


async def test_software_only_in_dev_mode() -> None:
    provider = await select_provider("software", True)
    assert provider.name == "software"
    with pytest.raises(AttestationError) as err:
        await select_provider("software", False)
    assert err.value.code == "attestation.dev_mode_required"


async def test_auto_without_hardware_refuses_to_start_outside_dev_mode() -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider("auto", False)
    assert err.value.code == "attestation.no_provider"
    assert "CMCP_DEV_MODE=1" in (err.value.hint or "")
    for name in AUTO_ORDER:
        assert name in err.value.message
    # In dev mode auto settles for software, saying so.
    assert (await select_provider("auto", True)).name == "software"


async def test_named_hardware_provider_never_falls_back_to_software() -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider("tpm", True, ProviderRegistry({}))
    assert err.value.code == "attestation.provider_missing"
    with pytest.raises(AttestationError) as unknown:
        await select_provider("quantum", True)
    assert unknown.value.code == "attestation.provider_unknown"


def _registry(tmp_path: Path, present: set[str]) -> ProviderRegistry:
    """The real registry plus stand-ins under the hardware names; a stand-in's probe finds
    its device file only for the names in ``present``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    registry = default_registry()
    for name in AUTO_ORDER:
        device = tmp_path / name
        if name in present:
            device.write_bytes(name.encode())
        kind = type(f"StandIn_{name}", (DeviceFileProvider,), {"name": name})
        registry.register(name, lambda ctx, kind=kind, device=device: kind(device))
    return registry


async def test_auto_probes_snp_then_tdx_then_tpm(tmp_path: Path) -> None:
    chosen = await select_provider("auto", False, _registry(tmp_path / "1", {"tdx", "tpm"}))
    assert chosen.name == "tdx"
    chosen = await select_provider("auto", False, _registry(tmp_path / "2", {"tpm"}))
    assert chosen.name == "tpm"
    with pytest.raises(AttestationError) as err:
        await select_provider("auto", False, _registry(tmp_path / "3", set()))
    assert "tpm: " in err.value.message and "missing" in err.value.message


async def test_requested_hardware_that_is_absent_is_an_error_even_in_dev_mode(
    tmp_path: Path,
) -> None:
    registry = _registry(tmp_path, set())
    with pytest.raises(AttestationError) as err:
        await select_provider("tpm", True, registry)
    assert err.value.code == "attestation.unavailable"
    assert "never falls back" in (err.value.hint or "")
    assert (await select_provider("tpm", True, _registry(tmp_path / "x", {"tpm"}))).name == "tpm"
