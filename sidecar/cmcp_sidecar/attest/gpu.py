"""The ``gpu-cc`` provider: CPU evidence accompanied by NVIDIA GPU confidential-computing
evidence, nonce-bound to the same binding digest.

A GPU cannot prove where the gateway's code runs; the CPU TEE does. So ``gpu-cc`` wraps a CPU
provider (``attestation.gpu-cc.cpu``: ``auto`` — SEV-SNP, TDX, TPM — or a provider name; its
own options come from its own section) and adds the GPU's evidence as the ``gpu`` member of the
CPU evidence (claims: ``gateway.attestation.evidence.gpu`` = ``{report, certs}``, base64url;
:mod:`cmcp_verifier.evidence.accompanying`). The evidence type and platform are the CPU
provider's.

The GPU evidence comes from NVML (the ``nvidia-ml-py`` package, ``pynvml``):

* ``nvmlSystemGetConfComputeState()``: CC must be on (``ccFeature``) and developer tools mode
  off — otherwise the provider refuses; it never produces evidence for a GPU outside CC mode;
* ``nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)`` with the 32-byte binding
  digest as nonce: the SPDM GET_MEASUREMENTS request ‖ response, signed by the GPU
  (``report``); the provider checks the request carries the nonce before using it;
* ``nvmlDeviceGetConfComputeGpuCertificate(handle)``: the attestation certificate chain
  (``certs``, PEM, leaf first).

Options (``attestation.gpu-cc``): ``cpu`` (default ``auto``), ``device_index`` (default 0).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from cmcp_verifier.errors import CmcpError
from cmcp_verifier.evidence import GPU_MEMBER
from cmcp_verifier.evidence.nvidia import SpdmReport

from .base import AttestationError, AttestationProvider, Evidence, Probe
from .registry import ProviderContext, register_builtin

NONCE_SIZE = 32


def _pynvml() -> Any:
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        raise AttestationError(
            "gpu-cc",
            "the NVML Python bindings are not installed",
            hint="install confidential-mcp[gpu] (nvidia-ml-py)",
            code="attestation.gpu_unavailable",
        ) from None
    return pynvml


class GpuCcProvider(AttestationProvider):
    """CPU evidence plus the GPU's SPDM measurements (see the module docs)."""

    name = "gpu-cc"
    evidence_type = "gpu-cc"  # replaced by the CPU provider's once it is chosen
    platform = "nvidia-h100"

    def __init__(self, context: ProviderContext, nvml: Any | None = None) -> None:
        options = context.options
        self.cpu_name = options.get("cpu", "auto")
        self.index = options.get("device_index", 0)
        if not isinstance(self.cpu_name, str) or self.cpu_name == self.name:
            raise AttestationError(self.name, "attestation.gpu-cc.cpu must name a CPU provider")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise AttestationError(self.name, "attestation.gpu-cc.device_index must be ≥ 0")
        self.context = context
        self.nvml = nvml  # pynvml, or a stand-in with the same functions (tests)
        self.cpu: AttestationProvider | None = None
        self._handle: Any = None

    async def probe(self) -> Probe:
        await asyncio.to_thread(self._open_gpu)
        if self.cpu is None:
            from .registry import select_provider

            self.cpu = await select_provider(
                self.cpu_name,
                self.context.dev_mode,
                self.context.registry,
                options=self.context.all_options,
            )
            if self.cpu.evidence_type == "software":
                await self.cpu.aclose()
                self.cpu = None
                raise AttestationError(
                    self.name,
                    "GPU evidence must accompany hardware CPU evidence, not software-only",
                    code="attestation.gpu_needs_cpu_tee",
                    hint="run in a confidential VM (SEV-SNP, TDX) or on a TPM",
                )
            self.evidence_type, self.platform = self.cpu.evidence_type, self.cpu.platform
        return Probe(True, f"GPU {self.index} in CC mode, with {self.cpu.name} CPU evidence")

    async def measure_bundle(self, bundle_hash: str) -> None:
        await self._cpu().measure_bundle(bundle_hash)

    async def collect(self, report_data: bytes) -> Evidence:
        cpu = self._cpu()
        evidence = await cpu.collect(report_data)
        gpu = await asyncio.to_thread(self.gpu_evidence, report_data)
        self.platform = cpu.platform
        return Evidence(
            members={**evidence.members, GPU_MEMBER: gpu},
            measurement=evidence.measurement,
            report_data=evidence.report_data,
            collected_at=evidence.collected_at,
            facts={**evidence.facts, "gpu": {"device_index": self.index, "cc_mode": "on"}},
        )

    async def aclose(self) -> None:
        if self.cpu is not None:
            await self.cpu.aclose()
        if self._handle is not None:
            self._handle = None
            await asyncio.to_thread(self._nvml_call, "nvmlShutdown")

    def _cpu(self) -> AttestationProvider:
        if self.cpu is None:
            raise AttestationError(self.name, "used before probe()", code="attestation.not_started")
        return self.cpu

    # -- NVML (worker thread) ----------------------------------------------------------------------

    def _nvml_call(self, function: str, *args: Any) -> Any:
        nvml = self.nvml = self.nvml or _pynvml()
        try:
            return getattr(nvml, function)(*args)
        except nvml.NVMLError as exc:
            raise AttestationError(
                self.name,
                f"NVML {function} failed: {exc}",
                code="attestation.gpu_unavailable",
                hint="needs the NVIDIA driver (libnvidia-ml) and a Hopper-or-later GPU in "
                "confidential-computing mode (nvidia-smi conf-compute -f)",
            ) from None

    def _open_gpu(self) -> None:
        """Initialise NVML and refuse unless the system is in CC mode (devtools off)."""
        if self._handle is not None:
            return
        self._nvml_call("nvmlInit")
        nvml: Any = self.nvml
        state = self._nvml_call("nvmlSystemGetConfComputeState")
        if state.ccFeature != nvml.NVML_CC_SYSTEM_FEATURE_ENABLED:
            self._nvml_call("nvmlShutdown")
            raise AttestationError(
                self.name,
                "the GPU is not in confidential-computing mode: no GPU evidence is produced",
                code="attestation.gpu_not_cc",
                hint="enable CC mode on the GPU (nvidia_gpu_tools.py --set-cc-mode=on) "
                "inside a confidential VM, or use a CPU provider without gpu-cc",
            )
        if state.devToolsMode != nvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF:
            self._nvml_call("nvmlShutdown")
            raise AttestationError(
                self.name,
                "the GPU is in CC developer-tools mode, which lets the host inspect it",
                code="attestation.gpu_not_cc",
                hint="switch developer tools mode off (--set-cc-mode=on, not devtools)",
            )
        self._handle = self._nvml_call("nvmlDeviceGetHandleByIndex", self.index)

    def gpu_evidence(self, nonce: bytes) -> dict[str, bytes]:
        """The GPU's ``report`` (SPDM request ‖ response for ``nonce``) and ``certs``."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError("the GPU nonce is 32 bytes")
        self._open_gpu()
        got = self._nvml_call("nvmlDeviceGetConfComputeGpuAttestationReport", self._handle, nonce)
        certs = self._nvml_call("nvmlDeviceGetConfComputeGpuCertificate", self._handle)
        report = bytes(got.attestationReport[: got.attestationReportSize])
        chain = bytes(certs.attestationCertChain[: certs.attestationCertChainSize])
        try:
            spdm = SpdmReport.parse(report)
        except CmcpError as exc:
            raise AttestationError(
                self.name,
                f"NVML returned a malformed GPU report: {exc.message}",
                code="attestation.malformed",
            ) from None
        if not hmac.compare_digest(spdm.nonce, nonce):
            raise AttestationError(
                self.name,
                "the GPU report does not carry the requested nonce",
                code="attestation.binding_mismatch",
                hint="the driver answered another request; retry",
            )
        if not chain:
            raise AttestationError(
                self.name,
                "NVML returned no attestation certificate chain",
                code="attestation.malformed",
            )
        return {"report": report, "certs": chain}


def _factory(context: ProviderContext) -> GpuCcProvider:
    return GpuCcProvider(context)


register_builtin(GpuCcProvider.name, _factory)
