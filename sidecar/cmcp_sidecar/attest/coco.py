"""The ``coco`` provider: evidence from a Confidential Containers pod VM's attestation agent.

In a CoCo pod (kata + guest-components, with ``agent.guest_components_rest_api=all`` or
``attestation``), the attestation agent's REST server answers
``GET http://127.0.0.1:8006/aa/evidence?runtime_data=<text>`` with the TEE's evidence. The
agent puts the UTF-8 bytes of ``runtime_data`` (at most 64, zero padded) into REPORT_DATA, so
the gateway sends the 64 hex digits of its binding digest and REPORT_DATA is their ASCII
(:func:`cmcp_verifier.binding.hex_report_data`; the verifier checks that form for ``coco``).

Replies understood (the agent's JSON; older agents answer one TEE's evidence, newer ones a list
of ``[tee, evidence]`` pairs):

* TDX — ``{"quote": <base64>, "cc_eventlog": <base64 CCEL>|null}`` → members ``quote``,
  ``event_log``; platform ``intel-tdx``;
* SEV-SNP — ``{"attestation_report": <bytes>, "cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|
  "ARK", "data": <bytes>}]|null}`` with bytes as a JSON array or base64 → members ``report``,
  ``vcek``, ``chain``; platform ``amd-sev-snp``. Agents built with sev < 4 serialise the report
  field by field; those replies are refused (upgrade guest-components).

Options (``attestation.coco``): ``url`` (default ``http://127.0.0.1:8006/aa/evidence``),
``timeout_seconds`` (default 30).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from cmcp_verifier.binding import hex_report_data
from cmcp_verifier.canonical import parse_json
from cmcp_verifier.errors import CmcpError
from cmcp_verifier.evidence._common import json_bytes
from cmcp_verifier.evidence.sevsnp import PLATFORM as SNP_PLATFORM
from cmcp_verifier.evidence.sevsnp import SnpReport
from cmcp_verifier.evidence.tdx import PLATFORM as TDX_PLATFORM
from cmcp_verifier.evidence.tdx_quote import parse_quote

from .base import AttestationError, AttestationProvider, Evidence, Probe
from .registry import ProviderContext, register_builtin

AA_URL = "http://127.0.0.1:8006/aa/evidence"
MAX_REPLY = 4 << 20
AGENT_HINT = (
    "is the attestation agent's REST API enabled in this pod VM "
    "(kernel parameter agent.guest_components_rest_api=all)? attestation.coco.url"
)


class Malformed(Exception):
    """The agent's reply is not evidence we understand."""


class CocoProvider(AttestationProvider):
    """Evidence from the CoCo attestation agent (see the module docs)."""

    name = "coco"
    evidence_type = "coco"
    platform = "unknown"  # the underlying TEE's, known after the first reply

    def __init__(self, options: Mapping[str, Any]) -> None:
        url = options.get("url", AA_URL)
        timeout = options.get("timeout_seconds", 30)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise AttestationError(self.name, "attestation.coco.url must be an http(s) URL")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise AttestationError(self.name, "attestation.coco.timeout_seconds must be positive")
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=float(timeout))

    async def probe(self) -> Probe:
        evidence = await self.collect(bytes(32))  # one real round trip names the TEE
        return Probe(True, f"attestation agent at {self.url}: {evidence.facts['tee']}")

    async def collect(self, report_data: bytes) -> Evidence:
        reply = await self._get(hex_report_data(report_data).decode("ascii"))
        try:
            tee, members = parse_reply(reply)
            if tee == "tdx":
                body = parse_quote(members["quote"]).body
                measured, carried, platform = body.mr_td, body.report_data, TDX_PLATFORM
            else:
                snp = SnpReport.parse(members["report"])
                measured, carried, platform = snp.measurement, snp.report_data, SNP_PLATFORM
        except (Malformed, CmcpError) as exc:
            raise AttestationError(
                self.name,
                f"malformed reply from the attestation agent: {getattr(exc, 'message', exc)}",
                code="attestation.malformed",
                hint="check the guest-components version (evidence of SEV-SNP or TDX expected)",
            ) from None
        self.platform = platform
        return Evidence(
            members=members,
            measurement="sha384:" + measured.hex(),
            report_data=carried,
            collected_at=int(time.time()),
            facts={"tee": tee, "agent": self.url},
        )

    async def _get(self, runtime_data: str) -> bytes:
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(self.url, params={"runtime_data": runtime_data}) as resp,
            ):
                body = await _read_limited(resp.content, MAX_REPLY + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AttestationError(
                self.name,
                f"the attestation agent at {self.url} is not answering: "
                f"{exc or type(exc).__name__}",
                code="attestation.agent_down",
                hint=AGENT_HINT,
            ) from None
        if status != 200:
            raise AttestationError(
                self.name,
                f"the attestation agent answered HTTP {status}: {body[:200]!r}",
                code="attestation.agent_error",
                hint=AGENT_HINT,
            )
        if len(body) > MAX_REPLY:
            raise AttestationError(
                self.name,
                f"the attestation agent's reply exceeds {MAX_REPLY} bytes",
                code="attestation.malformed",
            )
        return body


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await stream.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse_reply(body: bytes) -> tuple[str, dict[str, bytes]]:
    """``(tee, members)`` from the agent's reply (see the module docs); raises Malformed."""
    try:
        doc = parse_json(body, what="attestation agent reply")
    except CmcpError as exc:
        raise Malformed(exc.message) from None
    if isinstance(doc, list):  # [[tee, "<evidence JSON>"], …]: take the CPU TEE's
        for entry in doc:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
                try:
                    return parse_reply(entry[1].encode())
                except Malformed:
                    continue
        raise Malformed("no SEV-SNP or TDX evidence in the agent's list")
    if not isinstance(doc, dict):
        raise Malformed("the reply is not a JSON object")
    if "quote" in doc:
        members = {"quote": _bytes(doc["quote"], "quote")}
        if doc.get("cc_eventlog"):
            members["event_log"] = _bytes(doc["cc_eventlog"], "cc_eventlog")
        return "tdx", members
    if "attestation_report" in doc:
        return "sev-snp", _snp_members(doc)
    raise Malformed(f"unknown evidence with members {sorted(doc)[:8]}")


def _snp_members(doc: dict[str, Any]) -> dict[str, bytes]:
    report = doc["attestation_report"]
    if isinstance(report, dict):
        raise Malformed(
            "the SEV-SNP report is serialised field by field (guest-components with sev < 4)"
        )
    members = {"report": _bytes(report, "attestation_report")}
    chain = []
    for entry in doc.get("cert_chain") or []:
        if not isinstance(entry, dict):
            raise Malformed("cert_chain entries must be objects")
        kind = str(entry.get("cert_type", "")).upper()
        data = _bytes(entry.get("data"), f"cert_chain {kind}")
        if kind in ("VCEK", "VLEK"):
            members["vcek"] = data
        elif kind in ("ASK", "ASVK", "ARK"):
            chain.append(data)
    if chain:
        members["chain"] = b"".join(chain)
    return members


def _bytes(value: Any, what: str) -> bytes:
    try:
        return json_bytes(value, what)
    except CmcpError as exc:
        raise Malformed(exc.message) from None


def _factory(context: ProviderContext) -> CocoProvider:
    return CocoProvider(context.options)


register_builtin(CocoProvider.name, _factory)
