"""The ``gpu-cc`` provider: CPU evidence from a real swtpm, GPU evidence from a stand-in of NVML
(nvml_standin.py: pynvml's functions and structures, answering with the real Hopper report —
there is no GPU here), and the real pynvml for the machine without an NVIDIA driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmcp_sidecar.attest import (
    AttestationError,
    AttestationProvider,
    Attestor,
    Evidence,
    Probe,
    ProviderContext,
    SigningIdentity,
    default_registry,
)
from cmcp_sidecar.attest.gpu import GpuCcProvider
from cmcp_verifier.binding import binding_digest
from cmcp_verifier.evidence import EvidencePolicy
from cmcp_verifier.keys import jwk_thumbprint, public_jwk
from cmcp_verifier.report import Status
from cmcp_verifier.roots import root_bytes
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..conftest import EVIDENCE
from ..tpm_fixtures import running_swtpm
from ..verifier.claimfactory import BUNDLE, CATALOG
from .attestkit import AkCa, ak_pem, claim_with, failed, status
from .nvml_standin import NvmlStandIn

pytestmark = pytest.mark.tpm

NV = EVIDENCE / "nvidia"
HOPPER = bytes.fromhex("".join((NV / "hopper.report.hex.txt").read_text().split()))
HOPPER_CERTS = (NV / "hopper-cert-chain-case1.txt").read_bytes()
HOPPER_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
KEY = Ed25519PrivateKey.generate()
BINDING = binding_digest(jwk_thumbprint(public_jwk(KEY)), BUNDLE, CATALOG, b"")


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TPM with a certified AK: the CPU evidence the GPU evidence accompanies."""
    work = tmp_path_factory.mktemp("gpu-cpu")
    with running_swtpm(work / "tpm", pcr_banks="sha256") as tpm:
        ca = AkCa(work / "roots")
        # --roots replaces the bundled roots wholesale: the GPU's root joins the test AK CA.
        name = "nvidia-device-identity-root.pem"
        (ca.roots / name).write_bytes(root_bytes(name))
        cert = ca.issue(ak_pem(tpm), work / "ak.pem")
        yield {"tpm": tpm, "roots": ca.roots, "options": {"tcti": tpm.tcti, "ak_cert": str(cert)}}


def gpu_provider(lab: dict[str, Any], nvml: Any = None, **options: Any) -> GpuCcProvider:
    context = ProviderContext(
        dev_mode=options.pop("dev_mode", False),
        options={"cpu": "tpm", **options},
        all_options={"tpm": lab["options"]},
        registry=default_registry(),
    )
    return GpuCcProvider(context, nvml=nvml)


def standin(**kw: Any) -> NvmlStandIn:
    return NvmlStandIn(HOPPER, HOPPER_CERTS, **kw)


async def test_gpu_evidence_is_collected_faithfully(cpu: dict[str, Any]) -> None:
    nvml = standin()
    provider = gpu_provider(cpu, nvml)
    probe = await provider.probe()
    assert probe.available and "tpm CPU evidence" in probe.reason
    assert (provider.evidence_type, provider.platform) == ("tpm", "tpm2")
    gpu = provider.gpu_evidence(HOPPER_NONCE)
    assert gpu == {"report": HOPPER, "certs": HOPPER_CERTS}
    assert nvml.nonces == [HOPPER_NONCE]
    await provider.aclose()
    assert nvml.initialised == 0


async def test_a_report_for_another_nonce_is_refused(cpu: dict[str, Any]) -> None:
    """The stand-in cannot sign for our binding, as a GPU would: the provider notices that the
    report does not carry the nonce it asked for and produces no evidence."""
    provider = gpu_provider(cpu, standin())
    await provider.probe()
    try:
        with pytest.raises(AttestationError) as err:
            await provider.collect(BINDING)
    finally:
        await provider.aclose()
    assert err.value.code == "attestation.binding_mismatch"


async def test_composite_claim_is_verified_as_a_whole(cpu: dict[str, Any]) -> None:
    """CPU evidence (TPM quote of the binding) with the real GPU evidence as its ``gpu`` member:
    the TPM checks, the GPU's signature and chain pass; the GPU nonce is not the binding."""
    provider = gpu_provider(cpu, standin())
    await provider.probe()
    assert provider.cpu is not None
    try:
        evidence = await provider.cpu.collect(BINDING)
        gpu = provider.gpu_evidence(HOPPER_NONCE)
    finally:
        await provider.aclose()

    members = {**evidence.members, "gpu": gpu}
    claim = claim_with("tpm", "tpm2", members, evidence.measurement, KEY)
    report = verify_claim(claim, ClaimPolicy(evidence=EvidencePolicy(roots_dir=cpu["roots"])))
    for name in (
        "tpm.quote.signature",
        "attestation.report_data",
        "gpu.report.signature",
        "gpu.cert.chain",
        "gpu.cert.fwid",
    ):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"gpu.nonce"}


@pytest.mark.parametrize(
    ("nvml", "code", "words"),
    [
        (standin(cc=False), "attestation.gpu_not_cc", "not in confidential-computing mode"),
        (standin(devtools=True), "attestation.gpu_not_cc", "developer-tools mode"),
        (standin(gpus=0), "attestation.gpu_unavailable", "nvmlDeviceGetHandleByIndex"),
    ],
)
async def test_gpus_outside_cc_mode_get_a_refusal(
    cpu: dict[str, Any], nvml: NvmlStandIn, code: str, words: str
) -> None:
    with pytest.raises(AttestationError) as err:
        await gpu_provider(cpu, nvml).probe()
    assert err.value.code == code and words in err.value.message
    assert nvml.nonces == []  # never asked for a report: no evidence for a GPU outside CC


async def test_machine_without_nvidia_driver(cpu: dict[str, Any]) -> None:
    """The real pynvml on this machine: no libnvidia-ml, a clear refusal."""
    with pytest.raises(AttestationError) as err:
        await gpu_provider(cpu).probe()
    assert err.value.code == "attestation.gpu_unavailable"
    assert "nvmlInit" in err.value.message and "NVIDIA driver" in (err.value.hint or "")


async def test_software_cpu_evidence_is_refused(cpu: dict[str, Any], tmp_path: Path) -> None:
    provider = gpu_provider(cpu, standin(), cpu="software", dev_mode=True)
    with pytest.raises(AttestationError) as err:
        await provider.probe()
    assert err.value.code == "attestation.gpu_needs_cpu_tee"


def test_options_are_validated(cpu: dict[str, Any]) -> None:
    for bad in ({"cpu": "gpu-cc"}, {"device_index": -1}, {"cpu": 3}):
        with pytest.raises(AttestationError):
            gpu_provider(cpu, **bad)


class _Composite(AttestationProvider):
    """Reports nested members the way gpu-cc does (a stand-in: no hardware behind it)."""

    name = "test-composite"
    evidence_type = "software"
    platform = "software-only"

    def __init__(self) -> None:
        self.measured: list[str] = []

    async def probe(self) -> Probe:
        return Probe(True, "stand-in")

    async def measure_bundle(self, bundle_hash: str) -> None:
        self.measured.append(bundle_hash)

    async def collect(self, report_data: bytes) -> Evidence:
        return Evidence(
            members={"report": b"\x01", "gpu": {"report": b"\x02", "certs": b"\x03"}},
            measurement="sha256:" + "00" * 32,
            report_data=report_data,
            collected_at=0,
        )


async def test_attestor_measures_the_bundle_and_nests_accompanying_members() -> None:
    provider = _Composite()
    attestor = Attestor(
        provider,
        SigningIdentity.generate(),
        bundle_hash=BUNDLE,
        catalog_hash=CATALOG,
        validity_seconds=60,
    )
    await attestor.start()
    try:
        member = attestor.current.claim_member(stale=False)
    finally:
        await attestor.close()
    assert provider.measured == [BUNDLE]
    assert member["evidence"] == {"gpu": {"certs": "Aw", "report": "Ag"}, "report": "AQ"}
