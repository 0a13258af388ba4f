"""The enforcement implementation of the seam: policy, catalog guard, audit, claims, attestation.

:class:`Enforcement` implements :class:`~cmcp_sidecar.mcp.intercept.Interceptor` (what the
proxy asks before anything crosses it) and :class:`~cmcp_sidecar.gateway.Services` (what the
operational endpoints delegate to). For every operation:

1. **admit** — nothing is forwarded while a fail-closed condition holds (attestation stale
   under ``fail_closed`` or no longer binding the gateway, audit storage failed or full:
   :mod:`.failclosed`);
   ``tools/call`` targets must be approved by the catalog guard (unchanged pinned definition);
   Cedar decides (``PolicyEngine.decide`` with the contract's request: principal, action,
   resource and its server, arguments, catalog facts, session facts, gateway facts); the mode
   says what to do with the decision (``apply_mode``). A request that is not forwarded is
   audited (durably) before the agent gets the JSON-RPC error; redacted arguments replace the
   forwarded ones; and a request is forwarded only when the audit log can still take its
   entry (:meth:`~cmcp_sidecar.audit.AuditLog.check_writable`).
2. **complete** — result redaction, then one durable audit entry (digests of arguments and of
   the result as returned, the decision, the determining policies, the bundle hash) before the
   reply is written; the session's ``data_classes_seen`` grows by the tool's labels.
3. **fault** / **rejected** — a durable audit entry with the stable error code.

Lists are filtered per item (catalog for tools, then ``list_*`` decisions). Claims are issued
by :class:`~cmcp_sidecar.claims.ClaimIssuer` from the audit log; the stateless era's claim
session ids come from it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.canonical import canonical_bytes, parse_json
from cmcp_verifier.catalog import Catalog, catalog_document, load_catalog
from cmcp_verifier.cedar_bundle import LoadedBundle, load_bundle
from cmcp_verifier.digests import sha256_digest
from cmcp_verifier.errors import CmcpError, InputError

from .attest import AttestationProvider, Attestor, SigningIdentity
from .attest.selfmeasure import self_measurement
from .audit import AuditLog
from .audit.entries import CallEntry, FaultEntry, LifecycleEntry, OperationEntry, json_digest
from .audit.entries import Decision as Verdict
from .audit.entries import OperationKind as EntryKind
from .audit.errors import AuditUnavailable
from .audit.log import Appended
from .claims.builder import ClaimSettings, ModelInfo, PolicyStatus, default_subject
from .claims.issuer import ClaimIssuer
from .claims.kubernetes import KubernetesConfigMapSink
from .claims.kubernetes import from_environment as kubernetes_sink
from .claims.sink import ClaimSink, DirectorySink
from .config import LoadedConfig
from .failclosed import FailClosed
from .gateway import Gateway
from .mcp import directory
from .mcp.intercept import (
    Admission,
    CallContext,
    Fault,
    Operation,
    OpKind,
    Rejection,
    Reply,
    SessionEnd,
)
from .mcp.jsonrpc import GATEWAY_NOT_READY, POLICY_DENIED, UPSTREAM_INVALID
from .policy.catalog_guard import CatalogGuard, Review
from .policy.decision import Decision
from .policy.engine import PolicyEngine
from .policy.modes import Enforcement as ModeOutcome
from .policy.modes import Mode, apply_mode
from .policy.redact import redact_arguments, redact_result
from .policy.request import NO_SESSION_FACTS, NO_TOOL_FACTS, GatewayFacts, PolicyRequest, ToolFacts
from .policy.session_facts import SessionFacts
from .policy.shadow import (
    CATALOG_DENY,
    ShadowEvaluator,
    list_key,
    outcome_label,
    visibility,
)

log = logging.getLogger("cmcp.enforce")
decisions_log = logging.getLogger("cmcp.decision")

# OpKind → (Cedar action, resource type); None: no Cedar action (allowed, audited).
_ACTIONS: dict[OpKind, tuple[str, str] | None] = {
    OpKind.CALL_TOOL: ("call_tool", "Tool"),
    OpKind.READ_RESOURCE: ("read_resource", "Resource"),
    OpKind.SUBSCRIBE_RESOURCE: ("subscribe_resource", "Resource"),
    OpKind.UNSUBSCRIBE_RESOURCE: None,  # always allowed: it only stops a flow
    OpKind.GET_PROMPT: ("get_prompt", "Prompt"),
}
_LIST_ACTIONS = {
    OpKind.LIST_TOOLS: ("list_tools", "Tool"),
    OpKind.LIST_PROMPTS: ("list_prompts", "Prompt"),
    OpKind.LIST_RESOURCES: ("list_resources", "Resource"),
}
_LIST_METHODS = {
    OpKind.LIST_TOOLS: "tools/list",
    OpKind.LIST_PROMPTS: "prompts/list",
    OpKind.LIST_RESOURCES: "resources/list",
}
_ENTRY_KINDS: dict[OpKind, EntryKind] = {
    OpKind.READ_RESOURCE: "resource",
    OpKind.SUBSCRIBE_RESOURCE: "resource",
    OpKind.UNSUBSCRIBE_RESOURCE: "resource",
    OpKind.GET_PROMPT: "prompt",
    OpKind.LIST_TOOLS: "list",
    OpKind.LIST_PROMPTS: "list",
    OpKind.LIST_RESOURCES: "list",
    OpKind.LIST_RESOURCE_TEMPLATES: "list",
}
REVIEW_RETRY_SECONDS = 30.0


@dataclass(slots=True)
class _Ticket:
    """What admit() decided, carried to complete()/fault() in Admission.state."""

    decision: Decision
    outcome: ModeOutcome
    arguments: str | None  # digest of the arguments (or params) as received
    facts: ToolFacts
    shadow: str | None = None  # the candidate bundle's outcome, when it differs
    # List items the candidate would show differently: (key, active, candidate).
    shadow_list: list[tuple[str, str, str]] | None = None


class _Metrics(Collector):
    """Audit and claim counters read from the trail's own counters at scrape time."""

    def __init__(self, enforcement: Enforcement) -> None:
        self._e = enforcement

    def collect(self) -> Any:
        stats = self._e.issuer.stats
        issued = CounterMetricFamily(
            "cmcp_claims_issued", "TRACE claims issued, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.issued.items()):
            issued.add_metric([reason], count)
        yield issued
        failed = CounterMetricFamily(
            "cmcp_claim_failures", "claims that could not be built or written"
        )
        failed.add_metric([], stats.failed + stats.write_failures)
        yield failed
        length = GaugeMetricFamily(
            "cmcp_audit_chain_length", "entries in this gateway's audit chain"
        )
        length.add_metric([], self._e.audit.length)
        yield length
        syncs = CounterMetricFamily(
            "cmcp_audit_syncs",
            "write+fdatasync rounds that made audit entries durable (entries share one in a "
            "group commit), by where they ran: the event loop or the writer thread",
            labels=["where"],
        )
        for where, count in self._e.audit.syncs_by_place().items():
            syncs.add_metric([where], count)
        yield syncs
        fresh = GaugeMetricFamily(
            "cmcp_attestation_fresh", "1 when the attestation evidence is fresh"
        )
        fresh.add_metric([], 1 if self._e.attestor.fresh else 0)
        yield fresh
        if self._e.shadow is not None:
            totals = self._e.shadow.totals()
            shadow = CounterMetricFamily(
                "cmcp_shadow_evaluations",
                "decisions (requests, list items) the candidate bundle also took, by agreement "
                "with the active one",
                labels=["agreement"],
            )
            shadow.add_metric(["agree"], totals.evaluated - totals.disagreeing)
            shadow.add_metric(["disagree"], totals.disagreeing)
            yield shadow
        checks = self._e.readiness()
        ready = GaugeMetricFamily("cmcp_ready", "1 when /readyz says ready")
        ready.add_metric([], 1 if all(v == "ok" for v in checks.values()) else 0)
        yield ready
        reasons = GaugeMetricFamily(
            "cmcp_not_ready_reason",
            "1 for each reason the gateway is not ready (fail-closed conditions among them)",
            labels=["reason"],
        )
        for reason in sorted(_reasons(checks)):
            reasons.add_metric([reason], 1)
        yield reasons
        refused = CounterMetricFamily(
            "cmcp_fail_closed",
            "requests refused instead of forwarded because of a fail-closed condition or error",
            labels=["reason"],
        )
        for reason, count in sorted(self._e.fail_closed.refused.items()):
            refused.add_metric([reason], count)
        yield refused


def _claim_sink(loaded: LoadedConfig) -> ClaimSink:
    """``claims.sink``: files in ``claims.dir``, or ConfigMaps in the pod's namespace (with
    ``claims.dir`` as the local durable copy); a missing pod environment refuses to start."""
    directory = loaded.path(loaded.config.claims.dir)
    if loaded.config.claims.sink == "kubernetes":
        return kubernetes_sink(directory, loaded.env)
    return DirectorySink(directory)


class Enforcement:
    """Policy, catalog, audit, claims and attestation behind the proxy's seam."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        bundle: LoadedBundle,
        guard: CatalogGuard,
        audit: AuditLog,
        attestor: Attestor,
        issuer: ClaimIssuer,
        shadow: ShadowEvaluator | None = None,
    ) -> None:
        config = loaded.config
        self.loaded = loaded
        self.bundle = bundle
        self.engine = PolicyEngine(bundle)
        self.shadow = shadow
        self.catalog = guard.catalog
        self.guard = guard
        self.mode = Mode(config.attestation.enforcement_mode)
        self.audit = audit
        self.attestor = attestor
        self.issuer = issuer
        self.gateway_facts = GatewayFacts(self.mode.value, attestor.current.platform)
        self._sessions: dict[str, SessionFacts] = {}
        self._gateway: Gateway | None = None
        self._reviewed: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.fail_closed = FailClosed()
        self.issuer.policy_status = self._policy_status()
        # A stateless interval's data labels matter only while it lasts (it ends without a
        # session_ended).
        self.issuer.stateless_ended = self._forget_session
        if shadow is not None:
            self.issuer.shadow_summary = shadow.summary

    # -- assembly ------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, loaded: LoadedConfig, provider: AttestationProvider
    ) -> AsyncIterator[Enforcement]:
        """Load the bundle and catalog, open the audit log, attest, start claims (in order);
        close everything in reverse. Any failure means the gateway does not start."""
        config = loaded.config
        sink = _claim_sink(loaded)
        bundle = load_bundle(loaded.path(config.policy_bundle_path))
        if config.policy_bundle_expected_hash is not None:
            bundle.check_hash(config.policy_bundle_expected_hash)
        catalog = (
            load_catalog(loaded.path(config.catalog_path))
            if config.catalog_path
            else empty_catalog()
        )
        guard = CatalogGuard(catalog)
        shadow = _shadow(loaded, guard)
        audit = await AuditLog.open(
            loaded.path(config.audit.path),
            instance_id=loaded.instance_id,
            fsync=config.audit.fsync,
            batch_max_delay_ms=config.audit.batch_max_delay_ms,
            batch_max_entries=config.audit.batch_max_entries,
            reserve_bytes=config.audit.reserve_bytes,
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(audit.close)
            if isinstance(sink, KubernetesConfigMapSink):
                await sink.start()  # publishes claims a previous run stored but did not publish
                stack.push_async_callback(sink.aclose)  # after the issuer's final claims
            attestor = Attestor(
                provider,
                SigningIdentity.generate(),
                bundle_hash=bundle.hash,
                catalog_hash=catalog.hash,
                validity_seconds=config.attestation.validity_seconds,
                staleness_policy=config.attestation.staleness_policy,
                expected_measurement=config.attestation.expected_measurement,
            )
            stack.push_async_callback(attestor.close)
            await attestor.start()
            measurement = await asyncio.to_thread(self_measurement)
            claims = config.claims
            settings = ClaimSettings(
                instance_id=loaded.instance_id,
                subject=claims.subject
                or default_subject(
                    claims.trust_domain,
                    instance_id=loaded.instance_id,
                    namespace=loaded.namespace,
                    service_account=loaded.service_account,
                ),
                build_digest=measurement.digest,
                model=ModelInfo(claims.model.provider, claims.model.model_id, claims.model.version),
            )
            issuer = ClaimIssuer(
                audit=audit,
                attestor=attestor,
                settings=settings,
                sink=sink,
                mode=claims.mode,
                interval_seconds=claims.interval_seconds,
                idle_timeout_seconds=claims.idle_timeout_seconds,
                data_class_order=tuple(claims.data_classes),
            )
            await issuer.start()
            stack.push_async_callback(issuer.close)
            await audit.append(
                LifecycleEntry(
                    event="start",
                    details={
                        "bundle": bundle.hash,
                        "catalog": catalog.hash,
                        "mode": config.attestation.enforcement_mode,
                        "platform": attestor.current.platform,
                    },
                )
            )
            enforcement = cls(
                loaded,
                bundle=bundle,
                guard=guard,
                audit=audit,
                attestor=attestor,
                issuer=issuer,
                shadow=shadow,
            )
            try:
                yield enforcement
            finally:
                await enforcement.shutdown()

    def gateway(self) -> Gateway:
        """The gateway this enforcement guards (built once)."""
        if self._gateway is None:
            gw = Gateway(self.loaded, interceptor=self, services=self)
            gw.windows.id_source = lambda principal: (
                self.issuer.claim_session_id(mcp_session_id=None, principal=principal) or ""
            )
            gw.on_started.append(self._review_all)
            gw.on_started.append(self._start_reloading)
            gw.metrics.registry.register(_Metrics(self))
            # One agent calling at a time: its entry is synced on the loop (no thread hand-offs).
            hub = gw.hub
            self.audit.sync_here_when(lambda entries: hub.posts_in_flight <= entries)
            self._gateway = gw
        return self._gateway

    async def shutdown(self) -> None:
        """Stop background work and record the stop (the trail closes after this)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(CmcpError):
            await self.audit.append(
                LifecycleEntry(event="stop", details={"chain_length": self.audit.length})
            )

    # -- policy reload ------------------------------------------------------------------------

    async def _start_reloading(self) -> None:
        interval = self.loaded.config.policy_reload_interval_seconds
        if interval > 0:
            self._spawn(self._reload_loop(interval))

    async def _reload_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reload()

    async def reload(self) -> bool:
        """Re-read the bundle; a changed, valid one replaces the running one (re-attested).

        An invalid bundle keeps the previous one, says why (log, audit, metrics) and returns
        False; an unchanged one returns False without doing anything.
        """
        path = self.loaded.path(self.loaded.config.policy_bundle_path)
        metrics = self._gateway.metrics if self._gateway is not None else None
        try:
            if read_bundle_dir(path).hash == self.bundle.hash:
                return False
            bundle = load_bundle(path)
            pin = self.loaded.config.policy_bundle_expected_hash
            if pin is not None:
                bundle.check_hash(pin)
            engine = PolicyEngine(bundle)
        except CmcpError as exc:
            log.error(
                "policy reload rejected; keeping bundle %s: %s", self.bundle.hash, exc.message
            )
            await self._append(
                LifecycleEntry(
                    event="bundle_rejected", details={"code": exc.code, "kept": self.bundle.hash}
                )
            )
            if metrics is not None:
                metrics.policy_reloads.labels("rejected").inc()
            return False
        await self.attestor.update(bundle_hash=bundle.hash)  # evidence now binds the new bundle
        self.bundle, self.engine = bundle, engine
        await self._append(LifecycleEntry(event="bundle_loaded", details={"bundle": bundle.hash}))
        if metrics is not None:
            metrics.policy_reloads.labels("loaded").inc()
        log.info("policy bundle reloaded: %s", bundle.hash)
        return True

    # -- the catalog ---------------------------------------------------------------------------

    async def _review_all(self) -> None:
        gw = self.gateway()
        await asyncio.gather(*(self._review(up.name) for up in gw.upstreams))
        missing = [up.name for up in gw.upstreams if up.name not in self._reviewed]
        if missing:
            self._spawn(self._retry_reviews())

    async def _retry_reviews(self) -> None:
        gw = self.gateway()
        while any(up.name not in self._reviewed for up in gw.upstreams):
            await asyncio.sleep(REVIEW_RETRY_SECONDS)
            await asyncio.gather(
                *(self._review(up.name) for up in gw.upstreams if up.name not in self._reviewed)
            )

    async def _review(self, upstream: str) -> None:
        """List an upstream's tools (the gateway's own listing) and review them."""
        gw = self.gateway()
        up = gw.router.by_name[upstream]
        tools = await directory.refresh_tools(gw.hub, up)
        if not tools and up.name not in self._reviewed:
            return  # unreachable (or it offers nothing): nothing of it is callable yet
        review = self._review_tools(upstream, tools, complete=True)
        self._reviewed.add(upstream)
        for drift in review.drift:
            log.warning("catalog drift: %s/%s %s", drift.upstream, drift.name, drift.reason)
        self._update_policy_status()

    def _review_tools(
        self, upstream: str, tools: list[dict[str, Any]], *, complete: bool
    ) -> Review:
        """Review a live tool list against the catalog, and against the candidate's own
        catalog too when it carries one (its guard then follows the same lists)."""
        review = self.guard.review(upstream, tools, complete=complete)
        if self.shadow is not None and self.shadow.guard is not self.guard:
            self.shadow.guard.review(upstream, tools, complete=complete)
        return review

    def _update_policy_status(self) -> None:
        drift = tuple(sorted(f"{d.upstream}/{d.name}" for d in self.guard.drift()))
        self.issuer.policy_status = self._policy_status(drift)

    def _policy_status(self, drift: tuple[str, ...] = ()) -> PolicyStatus:
        return PolicyStatus(
            enforcement_mode=self.mode.value,
            candidate_hash=self.shadow.bundle_hash if self.shadow is not None else None,
            catalog_drift=drift,
        )

    # -- the seam ---------------------------------------------------------------------------

    async def admit(self, op: Operation) -> Admission:
        blocked = self._condition()
        if blocked is not None:
            return await self._fail_closed(op, *blocked)
        facts: ToolFacts | None = NO_TOOL_FACTS
        if op.kind is OpKind.CALL_TOOL:
            assert op.upstream_name is not None
            facts = self.guard.facts(op.upstream, op.upstream_name)  # None: unapproved or changed
        arguments = (
            op.params.get("arguments") if op.kind in (OpKind.CALL_TOOL, OpKind.GET_PROMPT) else None
        )
        try:
            digest = json_digest(arguments if arguments is not None else op.params)
        except InputError:  # what cannot be audited is never forwarded, whatever the mode
            decision = Decision.gateway_deny("uncanonical_arguments")
            return await self._refuse(
                op, _Ticket(decision, apply_mode(decision, Mode.ENFORCING), None, NO_TOOL_FACTS)
            )
        decision, shadow = self._decide(op, facts)
        ticket = self._ticket(decision, digest, facts or NO_TOOL_FACTS)
        ticket.shadow = shadow
        if ticket.outcome.log:
            self._log_decision(op, ticket)
        if not ticket.outcome.forward:
            return await self._refuse(op, ticket)
        try:
            self.audit.check_writable()  # what cannot be audited is not forwarded
        except AuditUnavailable as exc:
            return await self._fail_closed(op, exc.code, exc.message)
        params = op.params
        plan = ticket.decision.obligations
        if ticket.outcome.redact and plan.arguments and isinstance(arguments, dict):
            params = {**op.params, "arguments": redact_arguments(arguments, plan).value}
        label = "would_block" if ticket.outcome.would_block else ticket.decision.outcome
        return Admission(op=op, params=params, decision=label, state=ticket)

    def _ticket(
        self, decision: Decision, digest: str | None, facts: ToolFacts = NO_TOOL_FACTS
    ) -> _Ticket:
        return _Ticket(decision, apply_mode(decision, self.mode), digest, facts)

    def _decide(self, op: Operation, facts: ToolFacts | None) -> tuple[Decision, str | None]:
        """The active bundle's decision, and the candidate's outcome when it differs
        (``facts`` None: the catalog guard does not approve the tool)."""
        action = _ACTIONS.get(op.kind)
        arguments = op.params.get("arguments")
        if op.kind is OpKind.COMPLETE:
            ref = op.params.get("ref") or {}
            action = ("complete", "Prompt" if ref.get("type") == "ref/prompt" else "Resource")
            arguments = op.params.get("argument")
        if action is None:
            if op.kind is OpKind.OTHER:  # a method the contract does not know: fail closed
                return Decision.gateway_deny("unknown_method", self.bundle.hash), None
            return Decision("allow", "not_evaluated", bundle_hash=self.bundle.hash), None
        request = PolicyRequest(
            principal=op.ctx.principal,
            action=action[0],
            resource_type=action[1],
            resource_id=op.name or "",
            server=op.upstream,
            arguments=arguments if isinstance(arguments, dict) else {},
            tool=facts or NO_TOOL_FACTS,
            session=self._sessions.get(op.ctx.claim_session, NO_SESSION_FACTS),
            gateway=self.gateway_facts,
        )
        if facts is None:  # not in the catalog, or its definition changed since pinning
            decision = Decision.gateway_deny(CATALOG_DENY)
        else:
            decision = self.engine.decide(request)
        if self.shadow is None:
            return decision, None
        tool = None
        if op.kind is OpKind.CALL_TOOL and op.upstream_name is not None:
            tool = (op.upstream, op.upstream_name)
        return decision, self.shadow.compare(request, decision, op.ctx.claim_session, tool)

    async def _refuse(self, op: Operation, ticket: _Ticket) -> Admission:
        """Audit a request that is not forwarded, then answer it with a policy error."""
        decision = ticket.decision
        code = _FAILED_DECISIONS.get(decision.reason, "policy.denied")
        if code != "policy.denied":
            self.fail_closed.refuse(code)
        try:
            await self._audit(op, ticket, forwarded=False, error=code)
        except AuditUnavailable as exc:
            return await self._fail_closed(op, exc.code, exc.message)
        error = _error(
            POLICY_DENIED,
            f"denied by policy ({decision.reason})",
            code,
            reason=decision.reason,
        )
        if decision.policy_ids:
            error["data"]["policies"] = list(decision.policy_ids)
        return Admission(op=op, params=None, error=error, decision="deny")

    async def complete(self, admission: Admission, reply: Reply) -> Reply:
        ticket: _Ticket = admission.state
        plan = ticket.decision.obligations
        if reply.result is not None and ticket.outcome.redact and plan.result:
            reply = Reply(result=dict(redact_result(reply.result, plan).value))
        try:
            result = json_digest(reply.result if reply.error is None else {"error": reply.error})
        except InputError:  # what cannot be audited does not reach the agent
            await self._audit(admission.op, ticket, forwarded=True, error="upstream.uncanonical")
            return Reply(
                error=_error(
                    UPSTREAM_INVALID,
                    "the upstream's reply has no canonical form",
                    "upstream.uncanonical",
                )
            )
        if admission.op.kind is OpKind.CALL_TOOL and ticket.facts.labels:
            # Before the wait, so that an agent gone meanwhile cannot skip it; should the
            # entry not become durable the reply is withheld, and the session is only the
            # more restricted for it.
            sid = admission.op.ctx.claim_session
            self._sessions[sid] = self._sessions.get(sid, NO_SESSION_FACTS).after_result(
                ticket.facts.labels
            )
        try:
            await self._audit(
                admission.op,
                ticket,
                forwarded=True,
                result=result,
                error="upstream.error" if reply.error is not None else None,
            )
        except AuditUnavailable as exc:  # not durable: the agent must not see the reply
            self.fail_closed.refuse(exc.code)
            return Reply(
                error=_error(
                    GATEWAY_NOT_READY, f"the audit log is unavailable: {exc.message}", exc.code
                )
            )
        return reply

    async def fault(self, admission: Admission, fault: Fault) -> None:
        with contextlib.suppress(AuditUnavailable):
            await self._audit(admission.op, admission.state, forwarded=True, error=fault.code)

    async def rejected(self, rejection: Rejection) -> None:
        with contextlib.suppress(AuditUnavailable):
            await self._append(
                FaultEntry(
                    session=rejection.claim_session,
                    error=rejection.code,
                    forwarded=False,
                    principal=rejection.principal,
                    method=rejection.method,
                    tool=rejection.name,
                    upstream=rejection.upstream,
                    bundle=self.bundle.hash,
                )
            )

    async def review_list(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        items: list[dict[str, Any]],
        admission: Admission,
    ) -> list[dict[str, Any]]:
        kept = items
        if kind is OpKind.LIST_TOOLS:
            review = self._review_tools(upstream, items, complete=False)
            self._reviewed.add(upstream)
            if review.drift:
                self._update_policy_status()
            approved = {t.get("name") for t in review.approved}
            kept = [t for t in items if t.get("name") in approved]
            if len(kept) < len(items) and self.mode is not Mode.ENFORCING:
                kept = items  # advisory/silent change nothing the agent sees
        action = _LIST_ACTIONS.get(kind)
        if action is None:
            return items if len(kept) == len(items) else kept
        if self.shadow is not None:
            self._shadow_list(ctx, upstream, kind, action, items, admission)
        out = []
        for item, name, request in self._list_requests(ctx, upstream, kind, action, kept):
            if kind is OpKind.LIST_TOOLS:
                request = replace(request, tool=self.guard.facts(upstream, name) or NO_TOOL_FACTS)
            if apply_mode(self.engine.decide(request), self.mode).forward:
                out.append(item)
        return items if len(out) == len(items) else out

    def _list_requests(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        action: tuple[str, str],
        items: list[dict[str, Any]],
    ) -> Iterator[tuple[dict[str, Any], str, PolicyRequest]]:
        """Each named item of a list page, its upstream name and the ``list_*`` request
        deciding whether the agent sees it (without tool facts: the caller's catalog adds
        them)."""
        router = self.gateway().router
        up = router.by_name[upstream]
        key = "uri" if kind is OpKind.LIST_RESOURCES else "name"
        session = self._sessions.get(ctx.claim_session, NO_SESSION_FACTS)
        for item in items:
            name = item.get(key)
            if not isinstance(name, str):
                continue
            yield (
                item,
                name,
                PolicyRequest(
                    principal=ctx.principal,
                    action=action[0],
                    resource_type=action[1],
                    resource_id=name if kind is OpKind.LIST_RESOURCES else router.visible(up, name),
                    server=upstream,
                    session=session,
                    gateway=self.gateway_facts,
                ),
            )

    def _shadow_list(
        self,
        ctx: CallContext,
        upstream: str,
        kind: OpKind,
        action: tuple[str, str],
        items: list[dict[str, Any]],
        admission: Admission,
    ) -> None:
        """Compare what the page would show when enforced under each bundle (whatever the
        mode); the differing items go to the list operation's audit entry (``_audit``)."""
        shadow = self.shadow
        assert shadow is not None
        method = _LIST_METHODS[kind]
        rows = []
        for _, name, request in self._list_requests(ctx, upstream, kind, action, items):
            tool = (upstream, name) if kind is OpKind.LIST_TOOLS else None
            rows.append(
                (
                    list_key(method, request.resource_id),
                    visibility(self.engine, self.guard, request, tool),
                    visibility(shadow.engine, shadow.guard, request, tool),
                )
            )
        differing = shadow.compare_list(ctx.claim_session, rows)
        if differing:
            ticket: _Ticket = admission.state
            ticket.shadow_list = (ticket.shadow_list or []) + differing

    async def upstream_changed(self, upstream: str, method: str) -> None:
        if method == "notifications/tools/list_changed":
            self._spawn(self._review(upstream))

    def _forget_session(self, claim_session: str) -> None:
        self._sessions.pop(claim_session, None)

    async def session_ended(self, end: SessionEnd) -> None:
        self._forget_session(end.ctx.claim_session)
        reason = {"delete": "close", "closed": "close"}.get(end.reason, end.reason)
        await self.issuer.close_session(end.ctx.claim_session, reason)

    # -- services (operational endpoints) ----------------------------------------------------

    def readiness(self) -> dict[str, str]:
        blocked = self._conditions()
        checks = {"bundle": "ok", "attestation": "ok", "audit": "ok"}
        for check, (code, message) in blocked.items():
            checks[check] = f"{code}: {message}"
        if self._gateway is not None:
            missing = [up.name for up in self._gateway.upstreams if up.name not in self._reviewed]
            if missing:
                checks["catalog"] = f"catalog.unreviewed: {', '.join(missing)} not yet listed"
            else:
                checks["catalog"] = "ok"
        self.fail_closed.observe(dict(blocked.values()))
        return checks

    def fail_closed_report(self) -> dict[str, Any]:
        return {
            "reasons": sorted(_reasons(self.readiness())),
            "refused": dict(sorted(self.fail_closed.refused.items())),
        }

    async def attestation(self, nonce: bytes) -> dict[str, Any]:
        bound = await self.attestor.evidence_for_nonce(nonce)
        return bound.to_json(stale=not self.attestor.fresh)

    async def claim(self, claim_session: str) -> dict[str, Any] | None:
        data = await self.issuer.latest(claim_session)
        if data is None and claim_session in self.issuer.open_sessions():
            data = await self.issuer.claim_now(claim_session)
        return parse_json(data, allow_floats=False) if data is not None else None

    async def close(self, claim_session: str) -> dict[str, Any] | None:
        data = await self.issuer.close_session(claim_session, "close")
        return parse_json(data, allow_floats=False) if data is not None else None

    async def audit_export(self, claim_session: str | None) -> bytes:
        return b"".join([line async for line in self.audit.export(claim_session)])

    # -- fail closed -----------------------------------------------------------------------

    def _conditions(self) -> dict[str, tuple[str, str]]:
        """Gateway-wide conditions that stop forwarding: check name → (code, message)."""
        out: dict[str, tuple[str, str]] = {}
        audit = self.audit.failure or self.audit.low_space
        if audit is not None:
            out["audit"] = (audit.code, audit.message)
        attestor = self.attestor
        if not attestor.may_forward():
            if attestor.integrity_error is not None:
                error = attestor.integrity_error
                out["attestation"] = (error.code, error.message)
            else:
                status = attestor.status()
                last = f"; last refresh: {status.last_error}" if status.last_error else ""
                out["attestation"] = (
                    f"attestation.{status.state}",
                    f"evidence collected at {status.collected_at} expired at "
                    f"{status.expires_at}{last}",
                )
        return out

    def _condition(self) -> tuple[str, str] | None:
        """The first condition that stops forwarding now (cheap: called for every request)."""
        if self.attestor.may_forward() and self.audit.accepting:
            return None
        return next(iter(self._conditions().values()), None)

    async def _fail_closed(self, op: Operation, code: str, message: str) -> Admission:
        """Refuse ``op`` because of a fail-closed condition: counted, audited if possible."""
        self.fail_closed.refuse(code)
        self.readiness()  # logs the condition the first time it is seen
        with contextlib.suppress(AuditUnavailable):
            await self._append(
                FaultEntry(
                    session=op.ctx.claim_session,
                    error=code,
                    forwarded=False,
                    principal=op.ctx.principal,
                    method=op.method,
                    tool=op.name,
                    upstream=op.upstream,
                    bundle=self.bundle.hash,
                )
            )
        error = _error(GATEWAY_NOT_READY, f"nothing is forwarded: {message}", code)
        return Admission(op=op, params=None, error=error, decision="error")

    # -- helpers ---------------------------------------------------------------------------------

    async def _audit(
        self,
        op: Operation,
        ticket: _Ticket,
        *,
        forwarded: bool,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """One entry for one operation: a CallEntry for tools/call, an OperationEntry otherwise."""
        decision = ticket.decision
        verdict: Verdict = "error" if decision.reason == "error" else decision.outcome
        common: dict[str, Any] = {
            "session": op.ctx.claim_session,
            "principal": op.ctx.principal,
            "decision": verdict,
            "mode": self.mode.value,
            "forwarded": forwarded,
            "bundle": self.bundle.hash,
            "policies": decision.policy_ids,
            "result": result,
            "error": error,
            "labels": tuple(sorted(ticket.facts.labels)),
        }
        entry: CallEntry | OperationEntry
        if op.kind is OpKind.CALL_TOOL:
            entry = CallEntry(
                tool=op.name or "", upstream=op.upstream, arguments=ticket.arguments, **common
            )
        else:
            entry = OperationEntry(
                kind=_ENTRY_KINDS.get(op.kind, "operation"),
                method=op.method,
                target=op.name,
                upstream=op.upstream,
                params=ticket.arguments,
                **common,
            )
        shadow, then = self.shadow, None
        if shadow is not None and (ticket.shadow is not None or ticket.shadow_list):
            rows = list(ticket.shadow_list or ())
            if ticket.shadow is not None:
                rows.append((op.name or op.method, outcome_label(decision), ticket.shadow))

            def then(appended: Appended) -> None:
                self._appended(appended)
                for row in rows:
                    shadow.record(op.ctx.claim_session, *row, appended.hash)

        await self._append(entry, then)

    async def _append(self, entry: Any, then: Callable[[Appended], None] | None = None) -> Appended:
        """Append durably. ``then`` (by default: count the entry) runs once the entry is
        durable, also when the caller was cancelled while waiting: no caller needs shielding."""
        return await self.audit.append(entry, then=self._appended if then is None else then)

    def _appended(self, appended: Appended) -> None:
        if self._gateway is not None:
            self._gateway.metrics.audit_entries.inc()

    def _log_decision(self, op: Operation, ticket: _Ticket) -> None:
        decision = ticket.decision
        decisions_log.info(
            "%s %s %s",
            decision.outcome,
            op.method,
            op.name or "",
            extra={
                "decision": decision.outcome,
                "reason": decision.reason,
                "tool": op.name,
                "upstream": op.upstream,
                "principal": op.ctx.principal,
                "session": op.ctx.claim_session,
                "policies": ",".join(decision.policy_ids),
                "mode": self.mode.value,
                "would_block": ticket.outcome.would_block,
            },
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# Decision reasons that are failures (fail closed), not policy outcomes: their stable codes.
_FAILED_DECISIONS = {"error": "policy.error", "uncanonical_arguments": "arguments.uncanonical"}


def _reasons(checks: dict[str, str]) -> list[str]:
    """The stable codes of failing readiness checks (``"<code>: <detail>"``)."""
    return [v.partition(": ")[0] if ": " in v else k for k, v in checks.items() if v != "ok"]


def _error(code: int, message: str, cmcp_code: str, **data: Any) -> dict[str, Any]:
    """A JSON-RPC error object of the gateway's, with its stable code in ``data``."""
    return {"code": code, "message": message, "data": {"cmcp_code": cmcp_code, **data}}


def _shadow(loaded: LoadedConfig, guard: CatalogGuard) -> ShadowEvaluator | None:
    """The candidate bundle evaluated in shadow (``shadow_bundle_path``), behind a guard of
    its own catalog (``shadow_catalog_path``), else of the empty catalog
    (``shadow_catalog_fallback: empty``), else the active ``guard``."""
    config = loaded.config
    if not config.shadow_bundle_path:
        return None
    bundle = load_bundle(loaded.path(config.shadow_bundle_path))
    if config.shadow_catalog_path:
        guard = CatalogGuard(load_catalog(loaded.path(config.shadow_catalog_path)))
    elif config.shadow_catalog_fallback == "empty":
        guard = CatalogGuard(empty_catalog())
    return ShadowEvaluator(bundle, guard)


def empty_catalog() -> Catalog:
    """The catalog of a gateway configured without one: nothing is approved."""
    document = catalog_document([])
    return Catalog(entries={}, hash=sha256_digest(canonical_bytes(document)))


__all__ = ["Enforcement", "empty_catalog"]
