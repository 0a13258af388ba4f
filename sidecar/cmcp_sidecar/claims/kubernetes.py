"""Claims as ConfigMaps in the pod's namespace: the sink a sidecar uses in Kubernetes.

Each claim is written twice: first durably to a local directory (:class:`DirectorySink`, on
the pod's data volume), which is what ``get``/``names`` read, so the sidecar's service account
needs no more than ``create`` on ConfigMaps; then it is *published* as one immutable ConfigMap
(owner: the Pod, so it is garbage-collected with it; labels: component, gateway, pod, session)
by a background task that retries with exponential backoff while the API server is down.

Publishing never duplicates: the ConfigMap's name is derived from the pod and the claim's
name only, so a retry after an ambiguous failure (the create reached the server, the answer
did not) gets 409 AlreadyExists, which counts as done. Claims stored locally but not yet
published (a crash, an outage) are found again by :meth:`start` through a marker directory.

Settings come from the pod's environment (the operator's injection sets them):
``CMCP_POD_NAME``, ``CMCP_POD_NAMESPACE``, ``CMCP_POD_UID`` (downward API),
``CMCP_GATEWAY_NAME``, and the API server from ``KUBERNETES_SERVICE_HOST`` /
``KUBERNETES_SERVICE_PORT`` with the projected token and CA in
``/var/run/secrets/kubernetes.io/serviceaccount`` (``CMCP_SERVICEACCOUNT_DIR`` overrides the
directory, for running a sidecar outside a pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cmcp_verifier.errors import CmcpError

from .sink import ClaimSinkError, DirectorySink, check_name

log = logging.getLogger("cmcp.claims.kubernetes")
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CLAIM_KEY = "claim.json"
MARKERS = ".published"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class PodIdentity:
    """The pod the sidecar runs in, and the McpGateway that injected it."""

    name: str
    namespace: str
    uid: str
    gateway: str


@dataclass(frozen=True)
class ApiTarget:
    """Where the API server is and where the (rotating) token and CA files are."""

    server: str
    token_file: Path
    ca_file: Path | None


@dataclass
class SinkStats:
    published: int = 0
    already_existed: int = 0
    failures: int = 0
    pending: int = 0
    last_error: str = ""


def _env(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "")
    if not value:
        raise CmcpError(
            f"the Kubernetes claim sink needs {key} in the environment",
            code="claims.kubernetes_env",
            hint="the operator's injection sets it from the downward API",
        )
    return value


def from_environment(
    directory: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> KubernetesConfigMapSink:
    """The sink configured from a pod's environment (see the module docs)."""
    env = os.environ if env is None else env
    pod = PodIdentity(
        name=_env(env, "CMCP_POD_NAME"),
        namespace=_env(env, "CMCP_POD_NAMESPACE"),
        uid=_env(env, "CMCP_POD_UID"),
        gateway=_env(env, "CMCP_GATEWAY_NAME"),
    )
    host, port = _env(env, "KUBERNETES_SERVICE_HOST"), _env(env, "KUBERNETES_SERVICE_PORT")
    host = f"[{host}]" if ":" in host else host
    sa_dir = Path(env.get("CMCP_SERVICEACCOUNT_DIR") or SERVICEACCOUNT_DIR)
    ca = sa_dir / "ca.crt"
    target = ApiTarget(f"https://{host}:{port}", sa_dir / "token", ca if ca.exists() else None)
    return KubernetesConfigMapSink(directory, target, pod)


def label_value(text: str) -> str:
    """A valid label value (≤ 63 characters, alphanumeric ends) standing for ``text``."""
    value = _LABEL_BAD.sub("-", text).strip("-_.")
    if len(value) > 63 or value != text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        value = f"{value[:54].strip('-_.')}-{digest}".strip("-")
    return value


def object_name(pod: str, claim: str) -> str:
    """The ConfigMap name of a pod's claim: deterministic, a valid DNS subdomain."""
    name = f"claim-{pod}-{claim}"
    if len(name) <= 253 and _SUBDOMAIN.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^a-z0-9]+', '-', name)[:240].strip('-')}-{digest}"


class KubernetesConfigMapSink:
    """A :class:`~cmcp_sidecar.claims.sink.ClaimSink` publishing claims as ConfigMaps."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        target: ApiTarget,
        pod: PodIdentity,
        *,
        max_backoff: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.local = DirectorySink(directory)
        self.markers = Path(directory) / MARKERS
        self.target, self.pod = target, pod
        self.max_backoff = max_backoff
        self.stats = SinkStats()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=5)
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- the ClaimSink protocol ----------------------------------------------------------------

    async def put(self, name: str, data: bytes) -> None:
        """Store locally (durable before returning), then publish in the background."""
        await self.local.put(name, data)
        self._queue(name)

    async def get(self, name: str) -> bytes | None:
        return await self.local.get(name)

    async def names(self) -> list[str]:
        return await self.local.names()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> int:
        """Queue every local claim not yet published; returns how many."""
        published = await asyncio.to_thread(self._published)
        pending = [n for n in await self.local.names() if n not in published]
        for name in pending:
            self._queue(name)
        return len(pending)

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending (True) or ``timeout`` passes (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._pending

    async def aclose(self, timeout: float = 5.0) -> None:
        """Try to publish what is pending for up to ``timeout`` seconds, then stop."""
        if self._pending:
            await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- publishing ----------------------------------------------------------------------------

    def _queue(self, name: str) -> None:
        self._pending[check_name(name)] = None
        self.stats.pending = len(self._pending)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._publisher(), name="cmcp-claims-publisher")

    async def _publisher(self) -> None:
        delay = 0.5
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            name = next(iter(self._pending))
            try:
                await self._publish(name)
            except Exception as exc:  # one bad claim must not stop the publisher
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                log.warning("claim %s not published yet (retry in %.1fs): %s", name, delay, exc)
                # To the back of the queue: a claim the API refuses for good (too large,
                # invalid) must not hold up the others; it stays stored locally.
                del self._pending[name]
                self._pending[name] = None
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)  # nosec B311
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = 0.5
            self._pending.pop(name, None)
            self.stats.pending = len(self._pending)

    async def _publish(self, name: str) -> None:
        data = await self.local.get(name)
        if data is None:  # removed locally: nothing to publish
            return
        body = self.configmap(name, data)
        status, text = await self._post(body)
        if status == 409:
            self.stats.already_existed += 1
        elif status >= 300:
            raise ClaimSinkError(
                f"creating ConfigMap {body['metadata']['name']}: HTTP {status}: {text[:300]}"
            )
        else:
            self.stats.published += 1
        await asyncio.to_thread(self._mark, name)

    def configmap(self, name: str, data: bytes) -> dict[str, Any]:
        """The ConfigMap object for one claim."""
        session = _session_of(data)
        pod = self.pod
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": object_name(pod.name, name),
                "namespace": pod.namespace,
                "labels": {
                    "cmcp.dev/component": "claim",
                    "cmcp.dev/gateway": label_value(pod.gateway),
                    "cmcp.dev/pod": label_value(pod.name),
                    "cmcp.dev/session": label_value(session or "none"),
                },
                "annotations": {
                    "cmcp.dev/claim-name": name,
                    "cmcp.dev/pod": pod.name,
                    "cmcp.dev/session": session,
                },
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
                ],
            },
            "immutable": True,
            "data": {CLAIM_KEY: data.decode("utf-8")},
        }

    async def _post(self, body: dict[str, Any]) -> tuple[int, str]:
        path = f"/api/v1/namespaces/{self.pod.namespace}/configmaps"
        try:
            token = (await asyncio.to_thread(self.target.token_file.read_text)).strip()
        except OSError as exc:
            raise ClaimSinkError(f"cannot read the service account token: {exc}") from None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._client().post(
                self.target.server + path, data=json.dumps(body), headers=headers
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ClaimSinkError(
                f"API server {self.target.server} unreachable: {exc or type(exc).__name__}"
            ) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ctx = ssl.create_default_context(
                cafile=str(self.target.ca_file) if self.target.ca_file else None
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=2), timeout=self._timeout
            )
        return self._session

    def _published(self) -> set[str]:
        if not self.markers.is_dir():
            return set()
        return {p.name for p in self.markers.iterdir()}

    def _mark(self, name: str) -> None:
        self.markers.mkdir(mode=0o700, exist_ok=True)
        (self.markers / name).touch()


def _session_of(data: bytes) -> str:
    try:
        session = json.loads(data)["gateway"]["session_id"]
    except (ValueError, KeyError, TypeError):
        return ""
    return session if isinstance(session, str) else ""
