"""The ``coco`` provider against a real HTTP server on loopback that speaks the CoCo attestation
agent's REST API (``GET /aa/evidence?runtime_data=…``) and answers with real TDX and SEV-SNP
evidence from ../shared/evidence, in the JSON shapes guest-components produces. That evidence
is another machine's, so the verifier passes its signatures and chains and rejects the
binding; the positive path needs a CoCo pod VM (docs/attestation.md)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from cmcp_sidecar.attest import AttestationError, select_provider
from cmcp_sidecar.attest.coco import CocoProvider, parse_reply
from cmcp_verifier.binding import evidence_carries_binding, hex_report_data
from cmcp_verifier.report import Status
from cmcp_verifier.verify_claim import ClaimPolicy, verify_claim

from ..conftest import EVIDENCE
from .attestkit import claim_with, failed, loopback, status

BINDING = bytes(range(32))
TDX_QUOTE = (EVIDENCE / "tdx" / "gcp-cos-ccel.quote.dat").read_bytes()
CCEL = (EVIDENCE / "tdx" / "gcp-cos-ccel.eventlog.bin").read_bytes()
SNP_REPORT = (EVIDENCE / "sev-snp" / "trustee-milan.report.bin").read_bytes()
SNP_VCEK = (EVIDENCE / "sev-snp" / "trustee-milan.vcek.der").read_bytes()


def tdx_reply() -> dict[str, Any]:
    b64 = base64.standard_b64encode
    return {"cc_eventlog": b64(CCEL).decode(), "quote": b64(TDX_QUOTE).decode()}


def snp_reply() -> dict[str, Any]:
    return {
        "attestation_report": list(SNP_REPORT),
        "cert_chain": [{"cert_type": "VCEK", "data": list(SNP_VCEK)}],
    }


@asynccontextmanager
async def agent(
    body: bytes | None = None, status_code: int = 200
) -> AsyncIterator[tuple[str, list[str]]]:
    """An attestation agent REST server on loopback; yields its URL and the runtime data seen."""
    seen: list[str] = []

    async def evidence(request: web.Request) -> web.Response:
        runtime_data = request.query.get("runtime_data")
        if runtime_data is None:
            return web.Response(status=400)
        seen.append(runtime_data)
        return web.Response(body=body, status=status_code, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/aa/evidence", evidence)
    async with loopback(app) as url:
        yield f"{url}/aa/evidence", seen


async def collect(body: bytes) -> tuple[CocoProvider, Any, list[str]]:
    async with agent(body) as (url, seen):
        provider = await select_provider("coco", False, options={"coco": {"url": url}})
        assert isinstance(provider, CocoProvider)
        return provider, await provider.collect(BINDING), seen


async def test_tdx_evidence_from_the_agent() -> None:
    provider, evidence, seen = await collect(json.dumps(tdx_reply()).encode())
    assert seen[-1] == BINDING.hex()  # runtime data: the binding as 64 hex digits
    assert evidence.members == {"quote": TDX_QUOTE, "event_log": CCEL}
    assert provider.platform == "intel-tdx" and evidence.facts["tee"] == "tdx"
    report = verify_claim(
        claim_with("coco", "intel-tdx", evidence.members, evidence.measurement), ClaimPolicy()
    )
    for name in ("coco.tdx.quote.signature", "coco.tdx.pck.chain", "runtime.platform"):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"attestation.report_data"}


async def test_snp_evidence_from_the_agent_in_the_list_form() -> None:
    body = json.dumps([["snp", json.dumps(snp_reply())]]).encode()
    provider, evidence, _ = await collect(body)
    assert evidence.members == {"report": SNP_REPORT, "vcek": SNP_VCEK}
    assert provider.platform == "amd-sev-snp"
    report = verify_claim(
        claim_with("coco", "amd-sev-snp", evidence.members, evidence.measurement), ClaimPolicy()
    )
    for name in ("coco.report.signature", "coco.cert.chain"):
        assert status(report, name) is Status.PASS, name
    assert failed(report) == {"attestation.report_data"}


async def test_claim_platform_must_be_the_underlying_tees() -> None:
    _, evidence, _ = await collect(json.dumps(tdx_reply()).encode())
    report = verify_claim(
        claim_with("coco", "amd-sev-snp", evidence.members, evidence.measurement), ClaimPolicy()
    )
    assert "runtime.platform" in failed(report)


def test_report_data_is_the_hex_of_the_binding() -> None:
    carried = hex_report_data(BINDING)
    assert len(carried) == 64 and carried == BINDING.hex().encode()
    assert evidence_carries_binding("coco", carried, BINDING)
    assert not evidence_carries_binding("coco", BINDING + bytes(32), BINDING)
    assert not evidence_carries_binding("tdx", carried, BINDING)


async def test_agent_down_is_refused_with_the_fix() -> None:
    with pytest.raises(AttestationError) as err:
        await select_provider(
            "coco", False, options={"coco": {"url": "http://127.0.0.1:1/aa/evidence"}}
        )
    assert "not answering" in err.value.message
    assert "guest_components_rest_api" in (err.value.hint or "")


async def test_agent_errors_are_refused() -> None:
    async with agent(b"attester failed", status_code=500) as (url, _):
        with pytest.raises(AttestationError) as err:
            await CocoProvider({"url": url}).collect(BINDING)
    assert err.value.code == "attestation.agent_error" and "HTTP 500" in err.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"something": 1}',
        json.dumps({"quote": "!!!"}).encode(),
        json.dumps({"quote": base64.b64encode(b"short").decode()}).encode(),
        json.dumps({"attestation_report": {"version": 2}}).encode(),
        json.dumps({**snp_reply(), "attestation_report": list(SNP_REPORT[:50])}).encode(),
    ],
)
async def test_malformed_replies_are_refused(body: bytes) -> None:
    async with agent(body) as (url, _):
        with pytest.raises(AttestationError) as err:
            await CocoProvider({"url": url}).collect(BINDING)
    assert err.value.code == "attestation.malformed"


def test_reply_forms() -> None:
    tee, members = parse_reply(
        json.dumps(
            {"quote": base64.urlsafe_b64encode(TDX_QUOTE).decode(), "cc_eventlog": None}
        ).encode()
    )
    assert tee == "tdx" and members == {"quote": TDX_QUOTE}
    with pytest.raises(AttestationError):
        CocoProvider({"url": "ftp://x"})
