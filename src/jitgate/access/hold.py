"""Resolving a *review* decision for one statement or command, for any protocol.

When policy says review, the session that holds the statement calls
:func:`resolve_review`:

1. an approved, unused one-time grant for exactly this statement (same text and
   parameters) is consumed — it runs, once;
2. otherwise a statement access request is created (it may be auto-approved);
3. in *non-blocking* mode (agents, by default) the statement fails at once with the
   request id; after approval the same statement may be sent again and runs once;
4. in *blocking* mode the caller is told where to approve (a NoticeResponse, a line on
   stderr…: the CLI command and, when ``api.public_url`` is set, the approval link) and
   the statement waits, bounded by ``timeout``: approved → it runs; denied or timed out
   → it is refused with the reason. Only this session waits. If the session
   ends while it waits (client gone, gateway shutdown), the request is withdrawn; if the
   gateway dies (SIGKILL, power), the restarted gateway withdraws it, and in any case it
   expires shortly after the wait would have ended: nobody can approve a statement whose
   session is gone.

The wait listens to in-process events and also polls the store every ``poll_interval``,
so an approval given on another node releases the statement too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from jitgate.access.notify import request_links
from jitgate.access.service import AccessService
from jitgate.errors import JitgateError
from jitgate.identity.principal import Authenticated
from jitgate.policy.types import Decision

log = logging.getLogger("jitgate.access")

#: How much longer than its wait a held statement's request may stay pending.
HOLD_GRACE_SECONDS = 10.0


async def resolve_review(
    access: AccessService,
    who: Authenticated,
    *,
    connection: str,
    text: str,
    key: str,
    decision: Decision,
    session_id: str | None,
    wait: bool,
    timeout: float,
    poll_interval: float,
    tell: Callable[[str], None],
    public_url: str | None = None,
) -> Decision:
    grant = await asyncio.to_thread(
        access.consume_statement_grant, who.principal, who.actor, connection, key
    )
    if grant is not None:
        return await _approved(access, grant.request_id)
    reason = decision.reason or "this statement needs approval"
    try:
        request = await asyncio.to_thread(
            access.create_request,
            who,
            connection,
            reason=reason,
            kind="statement",
            duration=timedelta(seconds=max(60, int(timeout) + 60)),
            statement_text=text,
            statement_key=key,
            session_id=session_id,
            # A held statement is decided while it waits or never (see the module doc).
            # (a little longer than the wait, so that the wait's own end withdraws it)
            pending_for=timedelta(seconds=timeout + HOLD_GRACE_SECONDS) if wait else None,
        )
    except JitgateError as exc:
        return Decision.deny(
            f"{reason}; the approval request failed: {exc.message}", *decision.policies
        )
    link = request_links(public_url, request.id).get("approve")
    where = f"`jitgate requests approve {request.id}`" + (f" or POST {link}" if link else "")
    if request.status != "approved" and not wait:
        return Decision.deny(
            f"{reason}. Approval requested as request {request.id} (approve with {where}); "
            "run the same statement again once it is approved.",
            *decision.policies,
        )
    if request.status != "approved":
        tell(
            f"jitgate: {reason}. Statement held for approval as request {request.id} "
            f"(approve with {where}); waiting up to {int(timeout)} s."
        )
        try:
            status = await _wait(access, request.id, timeout, poll_interval)
        except asyncio.CancelledError:
            # The session ended while its statement was held (the client left, the gateway
            # is shutting down): withdraw the request, so that nobody approves a statement
            # that can no longer run. Nothing is left to run twice after a restart.
            try:
                access.cancel(who, request.id)
            except Exception as exc:  # already decided, or the store is gone
                log.info("held request %s not withdrawn: %s", request.id, exc)
            raise
        if status != "approved":
            info = await asyncio.to_thread(access.get_request, request.id)
            if status in ("timeout", "expired"):
                with contextlib.suppress(JitgateError):
                    await asyncio.to_thread(access.cancel, who, request.id)
                return Decision.deny(
                    f"{reason}; nobody approved request {request.id} within {int(timeout)} s",
                    *decision.policies,
                )
            why = f": {info.decision_reason}" if info.decision_reason else ""
            by = f" by {info.decided_by}" if info.decided_by else ""
            return Decision.deny(
                f"request {request.id} was {info.status}{by}{why}", *decision.policies
            )
    grant = await asyncio.to_thread(
        access.consume_statement_grant, who.principal, who.actor, connection, key
    )
    if grant is None:
        return Decision.deny(
            f"request {request.id} was approved but its grant is already used", *decision.policies
        )
    return await _approved(access, request.id)


async def _approved(access: AccessService, request_id: str | None) -> Decision:
    """An approved request's decision: the request and who approved it
    (``approved-by:NAME``, or ``auto-approved:RULE`` when a rule approved it), so the
    recording's review event says who let the statement run."""
    if request_id is None:
        return Decision.allow("approved-request:unknown")
    by = [f"approved-request:{request_id}"]
    try:
        info = await asyncio.to_thread(access.get_request, request_id)
    except JitgateError as exc:  # the grant was consumed: run it, say the names are unknown
        log.warning("approvers of request %s not found: %s", request_id, exc)
        return Decision.allow(*by)
    for approval in info.approvals:
        if approval.decision != "approve":
            continue
        if approval.via == "auto":
            by.append(f"auto-approved:{info.rule or approval.approver}")
        else:
            by.append(f"approved-by:{approval.approver}")
    return Decision.allow(*dict.fromkeys(by))


async def _wait(
    access: AccessService, request_id: str, timeout: float, poll_interval: float
) -> str:
    events = access.events
    waiter = events.waiter(request_id)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            try:
                return await asyncio.wait_for(asyncio.shield(waiter), min(poll_interval, remaining))
            except TimeoutError:
                info = await asyncio.to_thread(access.get_request, request_id)
                if info.status != "pending":
                    return info.status
    finally:
        events.forget(request_id, waiter)
        if not waiter.done():
            waiter.cancel()
