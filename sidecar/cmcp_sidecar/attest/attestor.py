"""Keeping evidence fresh and bound to the key, the bundle and the catalog.

Usage::

    attestor = Attestor(provider, identity, bundle_hash=b, catalog_hash=c,
                        validity_seconds=86400, staleness_policy="fail_closed",
                        expected_measurement=None)
    await attestor.start()            # first evidence; a pinned-measurement mismatch raises
    attestor.may_forward()            # the proxy refuses calls when False
    attestor.status().to_json()       # for /readyz
    attestor.current                  # BoundEvidence for nonce-less claims
    await attestor.update(bundle_hash=new)   # on policy reload, BEFORE the bundle goes live
    await attestor.evidence_for_nonce(nonce) # GET /attestation?nonce=
    await attestor.close()

Evidence is collected off the request path (providers do their I/O in threads or
subprocesses; collections are serialised and time-limited here) and re-collected in the
background at ``refresh_fraction`` of ``validity_seconds``, retrying with backoff. Once it is
older than ``validity_seconds`` it is *stale*: ``fail_closed`` stops forwarding
(:meth:`Attestor.may_forward` false, status not ready); ``warn_only`` keeps forwarding, logs,
and claims carry ``attestation.stale: true``.

:meth:`Attestor.update` collects evidence for the new hashes and only then makes it current;
if it raises, the old evidence stays current and the gateway must keep the old bundle (as for
an invalid bundle), so claims never pair a bundle with evidence that does not bind it.

A refresh whose evidence does not bind this gateway's key, bundle and catalog
(``attestation.binding_mismatch``) or shows another measurement than the pinned one
(``attestation.measurement_mismatch``) is not a transient failure: the platform or its
attestation agent is not what it was. Forwarding stops at once (:attr:`Attestor.integrity_error`)
and stays stopped until the gateway is restarted, however fresh the old evidence still is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cmcp_verifier.binding import MAX_NONCE_BYTES, binding_digest, evidence_carries_binding
from cmcp_verifier.digests import b64url_encode, is_digest

from .base import AttestationError, AttestationProvider, Evidence, Members
from .identity import SigningIdentity

StalenessPolicy = Literal["fail_closed", "warn_only"]
INTEGRITY_CODES = frozenset({"attestation.binding_mismatch", "attestation.measurement_mismatch"})
State = Literal["starting", "fresh", "stale", "closed"]
log = logging.getLogger("cmcp.attest")


@dataclass(frozen=True)
class BoundEvidence:
    """Evidence plus everything its binding digest commits to."""

    provider: str
    evidence_type: str
    platform: str
    evidence: Evidence
    binding: bytes
    nonce: bytes
    bundle_hash: str
    catalog_hash: str
    jwk: dict[str, str]
    key_thumbprint: str

    def claim_member(self, *, stale: bool) -> dict[str, Any]:
        """The ``gateway.attestation`` member of a claim."""
        return {
            "type": self.evidence_type,
            "evidence": _encode_members(self.evidence.members),
            "binding": {"digest": b64url_encode(self.binding), "nonce": b64url_encode(self.nonce)},
            "collected_at": self.evidence.collected_at,
            "stale": stale,
        }

    def to_json(self, *, stale: bool = False) -> dict[str, Any]:
        """The body of ``GET /attestation``: evidence and every input of its binding."""
        return {
            **self.claim_member(stale=stale),
            "provider": self.provider,
            "platform": self.platform,
            "measurement": self.evidence.measurement,
            "bundle_hash": self.bundle_hash,
            "catalog_hash": self.catalog_hash,
            "cnf": {"jwk": self.jwk},
            "key_thumbprint": self.key_thumbprint,
            "facts": dict(self.evidence.facts),
        }


def _encode_members(members: Members) -> dict[str, Any]:
    """Raw members as base64url, nested mappings (accompanying evidence) as objects."""
    return {
        k: b64url_encode(v) if isinstance(v, bytes) else _encode_members(v)
        for k, v in sorted(members.items())
    }


def _members_ok(members: Members, *, depth: int = 0) -> bool:
    return all(
        isinstance(v, bytes) or (depth == 0 and isinstance(v, Mapping) and _members_ok(v, depth=1))
        for v in members.values()
    )


@dataclass(frozen=True)
class AttestationStatus:
    """What /readyz and metrics show about attestation."""

    state: State
    provider: str
    platform: str
    staleness_policy: StalenessPolicy
    collected_at: int | None
    expires_at: int | None
    last_error: str | None

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "fresh": self.fresh,
            "provider": self.provider,
            "platform": self.platform,
            "staleness_policy": self.staleness_policy,
            "collected_at": self.collected_at,
            "expires_at": self.expires_at,
            "last_error": self.last_error,
        }


class AttestationBusy(AttestationError):
    """Too many distinct nonces are waiting for evidence (HTTP 429 at the endpoint)."""

    code = "attestation.busy"


class Attestor:
    """Current evidence for one provider and key; see the module docs."""

    def __init__(
        self,
        provider: AttestationProvider,
        identity: SigningIdentity,
        *,
        bundle_hash: str,
        catalog_hash: str,
        validity_seconds: float,
        staleness_policy: StalenessPolicy = "fail_closed",
        expected_measurement: str | None = None,
        refresh_fraction: float = 0.5,
        collect_timeout_seconds: float = 60.0,
        max_pending_nonces: int = 8,
    ) -> None:
        if validity_seconds <= 0 or not 0 < refresh_fraction < 1:
            raise ValueError("validity_seconds must be > 0 and 0 < refresh_fraction < 1")
        if staleness_policy not in ("fail_closed", "warn_only"):
            raise ValueError(f"unknown staleness_policy {staleness_policy!r}")
        self.provider = provider
        self.identity = identity
        self.staleness_policy: StalenessPolicy = staleness_policy
        self.validity_seconds = validity_seconds
        self.expected_measurement = expected_measurement
        self._bundle, self._catalog = bundle_hash, catalog_hash
        self._refresh_fraction = refresh_fraction
        self._timeout = collect_timeout_seconds
        self._max_pending = max_pending_nonces
        self._current: BoundEvidence | None = None
        self._current_at = 0.0  # monotonic time of the current collection
        self._last_error: AttestationError | None = None
        self.integrity_error: AttestationError | None = None  # latched; see the module docs
        self._device = asyncio.Lock()
        self._inflight: dict[tuple[bytes, str, str], asyncio.Future[BoundEvidence]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._listeners: list[Callable[[AttestationStatus], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> BoundEvidence:
        """Collect the first evidence and start background refresh.

        Raises :class:`AttestationError` when collection fails or the measurement differs
        from ``expected_measurement`` (the gateway must not start)."""
        bound = await self._collect(b"", self._bundle, self._catalog)
        self._install(bound)
        self._task = asyncio.create_task(self._refresh_loop(), name="cmcp-attestation-refresh")
        return bound

    async def close(self) -> None:
        """Stop refreshing and release the provider."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.provider.aclose()
        self._notify()

    def subscribe(self, listener: Callable[[AttestationStatus], None]) -> None:
        """Call ``listener(status)`` after every collection attempt (logs, metrics, audit)."""
        self._listeners.append(listener)

    # -- state -----------------------------------------------------------------------------

    @property
    def current(self) -> BoundEvidence:
        """The nonce-less evidence claims rest on (raises before :meth:`start`)."""
        if self._current is None:
            raise AttestationError(
                self.provider.name, "no evidence collected yet", code="attestation.not_started"
            )
        return self._current

    @property
    def bundle_hash(self) -> str:
        return self._bundle

    @property
    def catalog_hash(self) -> str:
        return self._catalog

    @property
    def fresh(self) -> bool:
        """True while the current evidence is younger than ``validity_seconds``."""
        return (
            not self._closed
            and self._current is not None
            and time.monotonic() - self._current_at < self.validity_seconds
        )

    @property
    def state(self) -> State:
        """``starting``, ``fresh``, ``stale`` or ``closed``."""
        if self._closed:
            return "closed"
        if self._current is None:
            return "starting"
        return "fresh" if self.fresh else "stale"

    def status(self) -> AttestationStatus:
        """Everything /readyz and metrics show about attestation."""
        collected = self._current.evidence.collected_at if self._current else None
        return AttestationStatus(
            state=self.state,
            provider=self.provider.name,
            platform=self.provider.platform,
            staleness_policy=self.staleness_policy,
            collected_at=collected,
            expires_at=None if collected is None else collected + int(self.validity_seconds),
            last_error=self._last_error.render() if self._last_error else None,
        )

    def may_forward(self) -> bool:
        """Whether the proxy may forward calls now (fresh, or stale under ``warn_only``)."""
        if self._closed or self._current is None or self.integrity_error is not None:
            return False
        return self.fresh or self.staleness_policy == "warn_only"

    # -- collection ------------------------------------------------------------------------

    async def update(
        self, *, bundle_hash: str | None = None, catalog_hash: str | None = None
    ) -> BoundEvidence:
        """Re-attest for new hashes and make that evidence current (see the module docs)."""
        bundle = bundle_hash or self._bundle
        catalog = catalog_hash or self._catalog
        bound = await self._collect(b"", bundle, catalog)
        self._bundle, self._catalog = bundle, catalog
        self._install(bound)
        return bound

    async def evidence_for_nonce(self, nonce: bytes) -> BoundEvidence:
        """Fresh evidence bound to a verifier's nonce (current evidence for an empty nonce).

        Concurrent requests for the same nonce share one collection; at most
        ``max_pending_nonces`` distinct nonces wait at a time (:class:`AttestationBusy`)."""
        if not nonce:
            return self.current
        if len(nonce) > MAX_NONCE_BYTES:
            raise AttestationError(
                self.provider.name,
                f"nonce longer than {MAX_NONCE_BYTES} bytes",
                code="attestation.nonce_too_long",
            )
        key = (nonce, self._bundle, self._catalog)
        future = self._inflight.get(key)
        if future is None:
            if len(self._inflight) >= self._max_pending:
                raise AttestationBusy(
                    self.provider.name,
                    f"{self._max_pending} nonce requests already waiting",
                    hint="retry shortly",
                )
            future = asyncio.ensure_future(self._collect(nonce, self._bundle, self._catalog))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(future)

    def _settled(self, key: tuple[bytes, str, str], done: asyncio.Future[BoundEvidence]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: waiters that went away must not leave it unread

    async def _collect(self, nonce: bytes, bundle: str, catalog: str) -> BoundEvidence:
        binding = binding_digest(self.identity.thumbprint, bundle, catalog, nonce)
        async with self._device:
            try:
                evidence = await asyncio.wait_for(
                    self._measure_and_collect(bundle, binding), self._timeout
                )
            except TimeoutError:
                raise AttestationError(
                    self.provider.name,
                    f"evidence collection took longer than {self._timeout:g} s",
                    code="attestation.timeout",
                    hint="check the TEE device or attestation agent",
                ) from None
        try:
            self._check(evidence, binding)
        except AttestationError as exc:
            if exc.code in INTEGRITY_CODES and self._current is not None:
                self._latch(exc)
            raise
        return BoundEvidence(
            provider=self.provider.name,
            evidence_type=self.provider.evidence_type,
            platform=self.provider.platform,
            evidence=evidence,
            binding=binding,
            nonce=nonce,
            bundle_hash=bundle,
            catalog_hash=catalog,
            jwk=dict(self.identity.jwk),
            key_thumbprint=self.identity.thumbprint,
        )

    async def _measure_and_collect(self, bundle: str, binding: bytes) -> Evidence:
        await self.provider.measure_bundle(bundle)
        return await self.provider.collect(binding)

    def _check(self, evidence: Evidence, binding: bytes) -> None:
        name = self.provider.name
        if not is_digest(evidence.measurement) or evidence.measurement.startswith("sha512:"):
            raise AttestationError(
                name, "returned a malformed measurement", code="attestation.malformed"
            )
        if not _members_ok(evidence.members):
            raise AttestationError(
                name, "returned evidence members that are not bytes", code="attestation.malformed"
            )
        if not evidence_carries_binding(self.provider.evidence_type, evidence.report_data, binding):
            raise AttestationError(
                name,
                "evidence does not carry the binding digest in its report data",
                code="attestation.binding_mismatch",
            )
        pin = self.expected_measurement
        if pin is not None and evidence.measurement != pin:
            raise AttestationError(
                name,
                f"measurement {evidence.measurement} differs from the pinned "
                f"attestation.expected_measurement {pin}",
                code="attestation.measurement_mismatch",
                hint="this is not the approved build or launch configuration; the gateway "
                "refuses to run it",
            )

    def _latch(self, exc: AttestationError) -> None:
        if self.integrity_error is None:
            log.error(
                "attestation no longer binds this gateway; forwarding stopped until restart: %s",
                exc.render(),
                extra={"event": "fail_closed", "reason": exc.code},
            )
            self.integrity_error = exc
            self._notify()

    def _install(self, bound: BoundEvidence) -> None:
        self._current, self._current_at = bound, time.monotonic()
        self._last_error = None
        self._changed.set()
        self._notify()

    def _notify(self) -> None:
        status = self.status()
        for listener in self._listeners:
            listener(status)

    async def _refresh_loop(self) -> None:
        failures = 0
        while True:
            due = self._current_at + self.validity_seconds * self._refresh_fraction
            if failures:
                due = time.monotonic() + self._backoff(failures)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, due - time.monotonic()))
                failures = 0
                continue  # update() installed new evidence: schedule from it
            bundle, catalog = self._bundle, self._catalog
            try:
                bound = await self._collect(b"", bundle, catalog)
            except AttestationError as exc:
                failures += 1
                self._record_failure(exc)
                continue
            if (bundle, catalog) == (self._bundle, self._catalog):
                self._install(bound)
            failures = 0

    def _backoff(self, failures: int) -> float:
        return min(2.0 ** (failures - 1), 60.0, max(self.validity_seconds / 10, 0.1))

    def _record_failure(self, exc: AttestationError) -> None:
        self._last_error = exc
        age = time.monotonic() - self._current_at
        if exc.code in INTEGRITY_CODES:
            pass  # latched and logged by _collect
        elif age >= self.validity_seconds:
            closed = self.staleness_policy == "fail_closed"
            log.error(
                "attestation evidence is stale (%s): %s",
                "forwarding stopped" if closed else "warn_only",
                exc.render(),
                extra={"event": "fail_closed", "reason": "attestation.stale"} if closed else {},
            )
        else:
            log.warning(
                "attestation refresh failed, evidence expires in %.0f s: %s",
                self.validity_seconds - age,
                exc.render(),
            )
        self._notify()
