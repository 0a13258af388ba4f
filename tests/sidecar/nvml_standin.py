"""A stand-in for NVML, the NVIDIA driver's management library, as ``pynvml`` exposes it.

No GPU is attached here. This object implements the pynvml functions the ``gpu-cc`` provider
calls and returns pynvml's own ctypes structures, filled with a real Hopper attestation report
and certificate chain from ../shared/evidence/nvidia. A real GPU signs a report for the nonce it
is given; this one always returns the same real report (whose nonce is 931d8dd0…), so only a
caller asking for that nonce gets a report carrying its nonce. Errors are pynvml's NVMLError.
"""

from __future__ import annotations

from typing import Any

import pynvml  # type: ignore[import-untyped]


class NvmlStandIn:
    def __init__(
        self, report: bytes, certs: bytes, *, cc: bool = True, devtools: bool = False, gpus: int = 1
    ) -> None:
        self.report, self.certs = report, certs
        self.cc, self.devtools, self.gpus = cc, devtools, gpus
        self.initialised = 0
        self.nonces: list[bytes] = []

    def __getattr__(self, name: str) -> Any:  # constants and NVMLError come from pynvml
        if name.startswith("NVML"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if self.initialised == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def _ready(self) -> None:
        if self.initialised == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetConfComputeState(self) -> Any:
        self._ready()
        state = pynvml.c_nvmlConfComputeSystemState_t()
        state.environment = pynvml.NVML_CC_SYSTEM_ENVIRONMENT_PROD
        state.ccFeature = int(self.cc)
        state.devToolsMode = int(self.devtools)
        return state

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._ready()
        if index >= self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ("gpu", index)

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle: Any, nonce: bytes) -> Any:
        self._ready()
        self.nonces.append(bytes(nonce))
        out = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        out.nonce[:] = list(nonce)
        out.attestationReport[: len(self.report)] = list(self.report)
        out.attestationReportSize = len(self.report)
        return out

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: Any) -> Any:
        self._ready()
        out = pynvml.c_nvmlConfComputeGpuCertificate_t()
        out.attestationCertChain[: len(self.certs)] = list(self.certs)
        out.attestationCertChainSize = len(self.certs)
        return out
