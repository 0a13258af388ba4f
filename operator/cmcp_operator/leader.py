"""Leader election on a ``coordination.k8s.io/v1`` Lease (for more than one replica).

Only the holder of the Lease runs the controllers; the others wait. Time is judged like
client-go does: a lease is expired when its record has not changed for ``lease_seconds`` as
observed on *this* replica's clock (no clock comparison between replicas). The holder renews
every ``renew_seconds``; if it cannot renew within ``lease_seconds`` it must stop acting (the
CLI exits so the pod restarts as a follower). Updates use ``resourceVersion`` preconditions,
so two replicas can never both take the lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from . import kube, metrics
from .kube import ApiError, Kube

log = logging.getLogger("cmcp.operator.leader")
LEASES = "coordination.k8s.io/v1"


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    record: tuple[Any, ...] = ()
    at: float = 0.0


class LeaseElector:
    """Acquire, hold and release one Lease."""

    def __init__(
        self,
        client: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.lease_seconds, self.renew_seconds, self.retry_seconds = (
            lease_seconds,
            renew_seconds,
            retry_seconds,
        )
        self._seen = _Seen()
        self._last_renewal = 0.0
        self.path = kube.group(LEASES, "leases", namespace, name)

    async def acquire(self) -> None:
        """Return once this replica holds the lease."""
        announced = False
        while True:
            try:
                if await self._try():
                    metrics.LEADER.set(1)
                    log.info(
                        "leading: lease %s/%s held by %s", self.namespace, self.name, self.identity
                    )
                    return
            except ApiError as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            if not announced:
                log.info(
                    "waiting for lease %s/%s (another replica leads)", self.namespace, self.name
                )
                announced = True
            await asyncio.sleep(self.retry_seconds)

    async def hold(self) -> None:
        """Renew until renewing fails for ``lease_seconds``; then return (leadership lost)."""
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                if await self._try():
                    continue
                log.error("lease %s/%s taken by another replica", self.namespace, self.name)
                break
            except ApiError as exc:
                log.warning("renewing lease %s/%s failed: %s", self.namespace, self.name, exc)
            if time.monotonic() - self._last_renewal > self.lease_seconds:
                log.error("could not renew lease %s/%s in time", self.namespace, self.name)
                break
        metrics.LEADER.set(0)

    async def release(self) -> None:
        """Give the lease up (best effort) so a follower takes over at once."""
        try:
            lease = await self.client.get(self.path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self.client.merge_patch(
                    self.path,
                    {
                        "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                        "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
                    },
                )
        except ApiError as exc:
            log.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc)
        metrics.LEADER.set(0)

    async def _try(self) -> bool:
        """One attempt to take or renew; True when held afterwards."""
        lease = await self.client.get(self.path)
        now = time.monotonic()
        spec_new = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro_now(),
        }
        if lease is None:
            body = {
                "apiVersion": LEASES,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_new, "acquireTime": spec_new["renewTime"], "leaseTransitions": 0},
            }
            try:
                await self.client.create(kube.group(LEASES, "leases", self.namespace), body)
            except ApiError as exc:
                if exc.conflict:
                    return False
                raise
            self._last_renewal = now
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"))
        if record != self._seen.record:
            self._seen = _Seen(record, now)
        holder = spec.get("holderIdentity")
        duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
        mine = holder == self.identity
        if holder and not mine and now - self._seen.at < duration:
            return False
        patch_spec = dict(spec_new)
        if not mine:
            patch_spec["acquireTime"] = spec_new["renewTime"]
            patch_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            await self.client.merge_patch(
                self.path,
                {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": patch_spec,
                },
            )
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        self._last_renewal = now
        return True
