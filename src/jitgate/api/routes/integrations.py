"""Inbound approvals: Slack interactive buttons and signed decisions from trusted systems."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from jitgate.access.notify import verify_jitgate_signature, verify_slack_signature
from jitgate.errors import Forbidden, InvalidInput, JitgateError, NotFound, Unauthenticated
from jitgate.identity.principal import Authenticated, AuthMethod
from jitgate.server.gateway import Gateway

router = APIRouter(prefix="/api/v1/integrations", tags=["integrations"])


def _approver(gw: Gateway, name: str) -> Authenticated:
    try:
        info = gw.identities.get(name)
        identity = gw.identities.identity(name)
    except NotFound:
        raise Forbidden(f"{name!r} is not a jitgate identity") from None
    if info.disabled:  # a disabled identity decides nothing, whichever way it comes in
        raise Forbidden(f"identity {name!r} is disabled")
    return Authenticated(principal=identity, method=AuthMethod.API_TOKEN)


def _decide(
    gw: Gateway, who: Authenticated, request_id: str, decision: str, comment: str | None, via: str
) -> Any:
    if decision == "approve":
        return gw.access.approve(who, request_id, comment=comment, via=via)
    if decision == "deny":
        return gw.access.deny(who, request_id, reason=comment, via=via)
    raise InvalidInput("decision must be approve or deny")


@router.post("/slack/interactions")
async def slack_interactions(request: Request) -> JSONResponse:
    gw: Gateway = request.app.state.gateway
    slack = gw.settings.notifications.slack
    if slack is None or slack.signing_secret is None:
        raise NotFound("Slack is not configured")
    body = await request.body()
    if not verify_slack_signature(
        slack.signing_secret.get_secret_value(),
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
        body,
    ):
        raise Unauthenticated("bad Slack signature")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        slack_user = payload["user"]["id"]
    except (KeyError, IndexError, ValueError, UnicodeDecodeError):
        raise InvalidInput("not a Slack interaction payload") from None
    name = slack.users.get(slack_user)
    if name is None:
        return JSONResponse(
            {
                "response_type": "ephemeral",
                "replace_original": False,
                "text": "Your Slack account is not linked to a jitgate identity.",
            }
        )
    who = _approver(gw, name)
    try:
        info = await run_in_threadpool(
            _decide,
            gw,
            who,
            str(action.get("value", "")),
            str(action.get("action_id", "")),
            "via Slack",
            "slack",
        )
    except JitgateError as exc:
        return JSONResponse(
            {
                "response_type": "ephemeral",
                "replace_original": False,
                "text": f"jitgate: {exc.message}",
            }
        )
    return JSONResponse(
        {
            "replace_original": True,
            "text": f"Request {info.id} is {info.status} ({name} via Slack).",
        }
    )


@router.post("/webhook/decisions")
async def webhook_decision(request: Request) -> dict[str, Any]:
    """A trusted system (ticketing, chat-ops) posts ``{request_id, decision, approver,
    comment}`` signed like jitgate's own webhooks with ``notifications.inbound_secret``."""
    gw: Gateway = request.app.state.gateway
    secret = gw.settings.notifications.inbound_secret
    if secret is None:
        raise NotFound("inbound webhook decisions are not configured")
    body = await request.body()
    if not verify_jitgate_signature(
        secret.get_secret_value(),
        request.headers.get("x-jitgate-timestamp"),
        request.headers.get("x-jitgate-signature"),
        body,
    ):
        raise Unauthenticated("bad webhook signature")
    try:
        data = json.loads(body)
        request_id, decision, approver = data["request_id"], data["decision"], data["approver"]
    except (KeyError, ValueError, TypeError):
        raise InvalidInput("expected request_id, decision and approver") from None
    who = _approver(gw, str(approver))
    info = await run_in_threadpool(
        _decide, gw, who, str(request_id), str(decision), data.get("comment"), "webhook"
    )
    return {"id": info.id, "status": info.status}
