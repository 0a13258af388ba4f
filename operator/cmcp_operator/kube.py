"""A small asynchronous Kubernetes API client (aiohttp) for the operator's own requests.

Credentials come from the ``kubernetes`` package's loaders (in-cluster service account, else
a kubeconfig), the same source kopf's login uses, so both talk to the API as one identity.
Objects are plain dicts. Transient failures (connection errors, 429, 5xx) are retried with
exponential backoff before :class:`ApiError` is raised; every request is counted in
``cmcp_operator_api_requests_total``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from cmcp_verifier.errors import CmcpError

from . import metrics
from .api import FIELD_MANAGER

log = logging.getLogger("cmcp.operator.kube")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_TRANSIENT = {429, 500, 502, 503, 504}


class ApiError(CmcpError):
    """The API server refused a request (``status``: HTTP status, 0 when unreachable)."""

    code = "k8s.api"

    def __init__(self, status: int, reason: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status, self.reason, self.detail = status, reason, message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status in _TRANSIENT


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to authenticate (token read through ``token()``)."""

    server: str
    ca_file: str | None
    verify: bool
    cert_file: str | None
    key_file: str | None
    token: Callable[[], str | None]


def load_credentials(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """In-cluster credentials when running in a pod (and no kubeconfig is given), else the
    kubeconfig (``$KUBECONFIG`` or ``~/.kube/config`` when ``kubeconfig`` is None)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(context=context, client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
    except (config.ConfigException, OSError) as exc:
        raise CmcpError(
            f"no usable Kubernetes credentials: {exc}",
            code="operator.credentials",
            hint="run in a pod with a service account, or pass --kubeconfig",
        ) from None

    def token() -> str | None:
        hook = getattr(cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(cfg)  # in-cluster: re-reads the rotated token file when due
        header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        if not header:
            return None
        return header.split(" ", 1)[1] if " " in header else header

    return Credentials(
        server=cfg.host.rstrip("/"),
        ca_file=cfg.ssl_ca_cert,
        verify=bool(cfg.verify_ssl),
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        token=token,
    )


def _resource_of(path: str) -> str:
    """``/apis/apps/v1/namespaces/x/deployments/y`` → ``deployments`` (for metrics)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces")
        parts = parts[i + 2 :] if len(parts) > i + 2 else ["namespaces"]
    else:
        parts = parts[2:] if parts and parts[0] == "api" else parts[3:]
    if not parts:
        return "unknown"
    return parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")


class Kube:
    """Async API client; create it inside the running event loop's lifetime."""

    def __init__(
        self, creds: Credentials, *, limit: int = 16, attempts: int = 6, timeout: float = 30.0
    ) -> None:
        self.creds = creds
        self.attempts = attempts
        self._limit = limit
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=5)
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.creds.verify:
            return False
        ctx = ssl.create_default_context(cafile=self.creds.ca_file)
        if self.creds.cert_file and self.creds.key_file:
            ctx.load_cert_chain(self.creds.cert_file, self.creds.key_file)
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"Accept": JSON}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        retry: bool = True,
    ) -> Any:
        """One API call with retries for transient failures; the decoded JSON reply."""
        delay = 0.2
        attempts = self.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(method, path, query, body, content_type)
            except ApiError as exc:
                if not exc.transient or attempt == attempts:
                    raise
                log.debug("%s %s: %s (attempt %d, retrying)", method, path, exc, attempt)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)  # nosec B311
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, query: dict[str, str] | None, body: Any, content_type: str
    ) -> Any:
        headers = {}
        token = self.creds.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, separators=(",", ":"))
        if method in ("POST", "PATCH", "PUT"):
            query = {**(query or {}), "fieldManager": FIELD_MANAGER}
        metrics.API_REQUESTS.labels(method, _resource_of(path)).inc()
        try:
            async with self.session.request(
                method, self.creds.server + path, params=query, data=data, headers=headers
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(
                0, "Unavailable", str(exc) or type(exc).__name__, method=method, path=path
            ) from None
        if status >= 400:
            reason, message = _status_of(text, status)
            raise ApiError(status, reason, message, method=method, path=path)
        return json.loads(text) if text else None

    # -- conveniences --------------------------------------------------------------------

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self.request("GET", path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return obj

    async def list(
        self, path: str, *, label_selector: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Every item of a collection (paginated)."""
        return [item async for item in self.iterate(path, label_selector=label_selector)]

    async def iterate(
        self, path: str, *, label_selector: str | None = None, page: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        query = {"limit": str(page)}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            reply = await self.request("GET", path, query=query)
            for item in reply.get("items") or []:
                yield item
            token = (reply.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.request("POST", path, body=body)
        return obj

    async def json_patch(self, path: str, ops: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)
        return obj

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)
        return obj

    async def patch_status(self, path: str, status: dict[str, Any]) -> bool:
        """Merge-patch ``status`` into the object's status subresource; False when it is
        gone (a deleted object needs no status)."""
        try:
            await self.merge_patch(path + "/status", {"status": status})
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def delete(self, path: str, *, preconditions: dict[str, str] | None = None) -> bool:
        """Delete; False when it was already gone. ``preconditions`` (``uid``,
        ``resourceVersion``) make it fail with 409 Conflict when the object changed."""
        body = None
        if preconditions:
            body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True


def _status_of(text: str, status: int) -> tuple[str, str]:
    try:
        doc = json.loads(text)
    except ValueError:
        return str(status), text[:300]
    if isinstance(doc, dict):
        return str(doc.get("reason") or status), str(doc.get("message") or "")[:1000]
    return str(status), text[:300]


# -- paths -------------------------------------------------------------------------------------


def core(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """Path of a core (v1) resource."""
    return _path("/api/v1", plural, namespace, name)


def apps(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    return _path("/apis/apps/v1", plural, namespace, name)


def group(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """Path of a resource of ``group/version``."""
    return _path(f"/apis/{api_version}", plural, namespace, name)


def _path(prefix: str, plural: str, namespace: str | None, name: str | None) -> str:
    out = prefix
    if namespace is not None:
        out += f"/namespaces/{quote(namespace, safe='')}"
    out += f"/{plural}"
    if name is not None:
        out += f"/{quote(name, safe='')}"
    return out
