"""Telling approvers: signed generic webhooks and Slack, plus the inbound halves.

Outbound, every event is a JSON document POSTed to each configured webhook with::

    X-Jitgate-Event:      request.created | request.decided | grant.break_glass
    X-Jitgate-Timestamp:  <unix seconds>
    X-Jitgate-Signature:  sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

and, for Slack, a message with Approve / Deny buttons to an incoming-webhook URL.
Deliveries run on one background thread with a bounded queue and retries with backoff,
so a slow receiver never delays a request or an approval.

Inbound, :func:`verify_jitgate_signature` checks a decision posted back by a trusted
system, and :func:`verify_slack_signature` checks Slack's interactive callbacks (``v0``
scheme, timestamp within five minutes) before any approval is acted on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from dataclasses import asdict, is_dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = logging.getLogger("jitgate.notify")

MAX_SKEW_SECONDS = 300


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: SecretStr
    events: list[str] = Field(
        default_factory=lambda: ["request.created", "request.decided", "grant.break_glass"]
    )


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: str | None = None
    signing_secret: SecretStr | None = None
    users: dict[str, str] = Field(default_factory=dict)  # Slack user id → jitgate identity


class NotificationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[WebhookSettings] = Field(default_factory=list)
    slack: SlackSettings | None = None
    inbound_secret: SecretStr | None = None  # for decisions posted back by a trusted system
    timeout_seconds: float = 5.0
    retries: int = 3


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_jitgate_signature(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None = None
) -> bool:
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def verify_slack_signature(
    signing_secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
) -> bool:
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def request_links(public_url: str | None, request_id: str) -> dict[str, str]:
    """Where a request is seen, approved and denied, from ``api.public_url`` (if set)."""
    base_url = (public_url or "").rstrip("/")
    if not base_url:
        return {}
    base = f"{base_url}/api/v1/requests/{request_id}"
    return {"request": base, "approve": f"{base}/approve", "deny": f"{base}/deny"}


class Notifier:
    def __init__(self, settings: NotificationSettings, *, public_url: str | None = None) -> None:
        self.settings = settings
        self.public_url = (public_url or "").rstrip("/")
        self._queue: queue.Queue[tuple[str, str, bytes, dict[str, str]] | None] = queue.Queue(
            maxsize=10_000
        )
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None and (self.settings.webhooks or self.settings.slack):
            self._thread = threading.Thread(target=self._run, name="jitgate-notify", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until queued deliveries are done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    # ---------------------------------------------------------------- events

    def request_created(self, info: Any) -> None:
        self._emit("request.created", {"request": _plain(info), "links": self._links(info.id)})
        self._slack_request(info)

    def request_decided(self, info: Any) -> None:
        self._emit("request.decided", {"request": _plain(info)})
        if self.settings.slack and self.settings.slack.webhook_url:
            text = (
                f"Request `{info.id}` by *{info.requester}* for `{info.connection}` is "
                f"*{info.status}*" + (f" by {info.decided_by}" if info.decided_by else "")
            )
            self._enqueue_slack({"text": text})

    def break_glass(self, grant: Any, reason: str) -> None:
        self._emit("grant.break_glass", {"grant": _plain(grant), "reason": reason})
        if self.settings.slack and self.settings.slack.webhook_url:
            self._enqueue_slack(
                {
                    "text": f":rotating_light: BREAK-GLASS: *{grant.identity}* took "
                    f"access to `{grant.connection}` until "
                    f"{grant.ends_at.isoformat()}: {reason}"
                }
            )

    def _links(self, request_id: str) -> dict[str, str]:
        return request_links(self.public_url, request_id)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"type": event, **payload}, sort_keys=True).encode()
        for hook in self.settings.webhooks:
            if event not in hook.events:
                continue
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Jitgate-Event": event,
                "X-Jitgate-Timestamp": ts,
                "X-Jitgate-Signature": sign(hook.secret.get_secret_value(), ts, body),
            }
            self._put(("webhook", hook.url, body, headers))

    def _slack_request(self, info: Any) -> None:
        slack = self.settings.slack
        if slack is None or not slack.webhook_url:
            return
        statement = f"\n```{info.statement[:500]}```" if info.statement else ""
        message = {
            "text": f"Access request {info.id} by {info.requester} for {info.connection}",
            "blocks": [
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": (
                            f"*{info.requester}*"
                            + (f" (agent {info.actor})" if info.actor else "")
                            + f" asks for *{info.kind}* access to `{info.connection}` for "
                            f"{info.duration_seconds // 60} min: {info.reason}{statement}"
                        ),
                    },
                },
                {
                    "type": "actions",
                    "block_id": f"jitgate:{info.id}",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "approve",
                            "style": "primary",
                            "value": info.id,
                            "text": {"type": "plain_text", "text": "Approve"},
                        },
                        {
                            "type": "button",
                            "action_id": "deny",
                            "style": "danger",
                            "value": info.id,
                            "text": {"type": "plain_text", "text": "Deny"},
                        },
                    ],
                },
            ],
        }
        self._enqueue_slack(message)

    def _enqueue_slack(self, message: dict[str, Any]) -> None:
        slack = self.settings.slack
        if slack is None or not slack.webhook_url:
            return
        body = json.dumps(message).encode()
        self._put(("slack", slack.webhook_url, body, {"Content-Type": "application/json"}))

    def _put(self, item: tuple[str, str, bytes, dict[str, str]]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.failed += 1
            log.error("notification queue full; dropping a %s delivery", item[0])

    # -------------------------------------------------------------- delivery

    def _run(self) -> None:
        with httpx.Client(timeout=self.settings.timeout_seconds) as http:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    self._deliver(http, *item)
                finally:
                    self._queue.task_done()

    def _deliver(
        self, http: httpx.Client, kind: str, url: str, body: bytes, headers: dict[str, str]
    ) -> None:
        delay = 0.2
        for attempt in range(1, self.settings.retries + 1):
            try:
                response = http.post(url, content=body, headers=headers)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning(
                "%s delivery to %s failed (attempt %d): %s", kind, _host(url), attempt, problem
            )
            time.sleep(delay)
            delay *= 4
        self.failed += 1


def _host(url: str) -> str:
    return httpx.URL(url).host or "?"
