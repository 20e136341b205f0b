"""Policies, access requests, grants and approver notifications over the real HTTP API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from jitgate.access.notify import sign
from jitgate.api.app import create_app
from jitgate.server.gateway import Gateway
from tests.fixtures.gateway import API, make_settings, serve_app


class Receiver:
    """A real HTTP server on loopback that records what webhooks deliver."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def notified_api(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[API, Gateway]]:
    settings = make_settings(
        tmp_path / "data",
        notifications={
            "webhooks": [{"url": receiver.url + "/hook", "secret": "hook-secret"}],
            "slack": {
                "webhook_url": receiver.url + "/slack",
                "signing_secret": "slack-secret",
                "users": {"U123": "bob"},
            },
            "inbound_secret": "inbound-secret",
        },
    )
    gateway = Gateway.open(settings)
    token = gateway.paths.admin_token.read_text().strip()
    try:
        with (
            serve_app(create_app(gateway)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield API(client, token), gateway
    finally:
        gateway.close()


def _setup(api: API) -> dict[str, API]:
    api.post(
        "/api/v1/connections",
        json={"name": "prod-db", "type": "postgres", "host": "h", "tags": {"env": "prod"}},
    )
    people: dict[str, API] = {}
    for name, groups in (("alice", ["dbas"]), ("bob", ["approvers"]), ("carol", [])):
        assert api.post("/api/v1/users", json={"name": name, "groups": groups}).status_code == 201
        token = api.post("/api/v1/tokens", json={"user": name, "name": "t"}).json()["token"]
        people[name] = api.as_(token)
    return people


def test_policies_crud_validate_and_test(api: API) -> None:
    listed = api.get("/api/v1/policies").json()["items"]
    assert [p["name"] for p in listed] == ["default"]
    bad = api.post("/api/v1/policies", json={"name": "bad", "text": "permit(principal,"})
    assert bad.status_code == 400 and "not valid Cedar" in bad.json()["error"]["message"]
    assert [p["name"] for p in api.get("/api/v1/policies").json()["items"]] == ["default"]
    ok = api.post(
        "/api/v1/policies",
        json={
            "name": "agents",
            "text": (
                '@id("agents-no-ddl") @reason("agents may not run DDL on prod")\n'
                'forbid (principal, action in Action::"sql:admin", resource)\n'
                'when { context.is_agent && resource.tags has env && resource.tags.env == "prod" };'
            ),
        },
    )
    assert ok.status_code == 201 and ok.json()["policies"] == ["agents-no-ddl"]
    valid = api.post(
        "/api/v1/policies/validate", json={"text": "permit(principal, action, resource);"}
    )
    assert valid.json()["valid"] is True
    api.post(
        "/api/v1/connections",
        json={"name": "prod-db", "type": "postgres", "host": "h", "tags": {"env": "prod"}},
    )
    api.post("/api/v1/tokens", json={"agent": "bot", "name": "t", "create_agent": True})
    tested = api.post(
        "/api/v1/policies/test",
        json={"user": "admin", "actor": "bot", "connection": "prod-db", "sql": "DROP TABLE t"},
    ).json()
    assert tested["outcome"] == "deny"
    assert set(tested["decided_by"]) == {"agents-no-ddl", "deny-drop-truncate-on-prod"}
    review = api.post(
        "/api/v1/policies/test",
        json={"user": "admin", "connection": "prod-db", "sql": "DELETE FROM t"},
    ).json()
    assert review["outcome"] == "review"
    assert {m["name"] for m in review["matched"]} == {"default-allow", "review-unbounded-writes"}
    assert api.delete("/api/v1/policies/agents").status_code == 204


def test_request_approval_flow_over_http(
    notified_api: tuple[API, Gateway], receiver: Receiver
) -> None:
    api, _gateway = notified_api
    people = _setup(api)
    created = people["alice"].post(
        "/api/v1/requests",
        json={
            "connection": "prod-db",
            "reason": "investigate INC-7",
            "duration_seconds": 600,
            "ticket": "INC-7",
        },
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    # alice sees her own request; carol (no role) sees nothing of it; bob can list it.
    assert people["carol"].get(f"/api/v1/requests/{request_id}").status_code == 403
    assert [
        r["id"]
        for r in people["bob"].get("/api/v1/requests", params={"status": "pending"}).json()["items"]
    ] == [request_id]
    self_approve = people["alice"].post(f"/api/v1/requests/{request_id}/approve", json={})
    assert self_approve.status_code == 403
    non_approver = people["carol"].post(f"/api/v1/requests/{request_id}/approve", json={})
    assert non_approver.status_code == 403
    approved = people["bob"].post(f"/api/v1/requests/{request_id}/approve", json={"comment": "go"})
    assert approved.json()["status"] == "approved"
    again = people["bob"].post(f"/api/v1/requests/{request_id}/approve", json={})
    assert again.status_code == 409
    grants = people["alice"].get("/api/v1/grants").json()["items"]
    assert [g["id"] for g in grants] == [approved.json()["grant_id"]]
    revoked = people["bob"].post(
        f"/api/v1/grants/{grants[0]['id']}/revoke", json={"reason": "done"}
    )
    assert revoked.json()["active"] is False

    # The approvers were told, with a signature they can check.
    receiver.wait_for(4)  # webhook + slack for created, webhook + slack for decided
    hooks = [(h, b) for h, b in receiver.received if h.get("x-jitgate-event")]
    created_hook = next(b for h, b in hooks if h["x-jitgate-event"] == "request.created")
    headers = next(h for h, b in hooks if b is created_hook)
    assert headers["x-jitgate-signature"] == sign(
        "hook-secret", headers["x-jitgate-timestamp"], created_hook
    )
    assert json.loads(created_hook)["request"]["id"] == request_id
    slack = [json.loads(b) for h, b in receiver.received if not h.get("x-jitgate-event")]
    assert any("blocks" in m for m in slack)


def _slack_post(
    api: API, payload: dict[str, Any], secret: str = "slack-secret", skew: int = 0
) -> httpx.Response:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) - skew)
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return api.as_(None).post(
        "/api/v1/integrations/slack/interactions",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": "v0=" + mac.hexdigest(),
        },
    )


def test_slack_buttons_approve_with_signature_checks(notified_api: tuple[API, Gateway]) -> None:
    api, gateway = notified_api
    people = _setup(api)
    request_id = (
        people["alice"]
        .post("/api/v1/requests", json={"connection": "prod-db", "reason": "r"})
        .json()["id"]
    )
    payload = {
        "type": "block_actions",
        "user": {"id": "U123"},
        "actions": [{"action_id": "approve", "value": request_id}],
    }
    assert _slack_post(api, payload, secret="wrong").status_code == 401
    assert _slack_post(api, payload, skew=3600).status_code == 401
    unknown = _slack_post(api, {**payload, "user": {"id": "U999"}})
    assert "not linked" in unknown.json()["text"]
    assert gateway.access.get_request(request_id).status == "pending"
    ok = _slack_post(api, payload)
    assert ok.status_code == 200 and "approved" in ok.json()["text"]
    info = gateway.access.get_request(request_id)
    assert info.status == "approved" and info.approvals[0].via == "slack"


def test_signed_inbound_webhook_decision(notified_api: tuple[API, Gateway]) -> None:
    api, gateway = notified_api
    people = _setup(api)
    request_id = (
        people["alice"]
        .post("/api/v1/requests", json={"connection": "prod-db", "reason": "r"})
        .json()["id"]
    )
    body = json.dumps(
        {"request_id": request_id, "decision": "deny", "approver": "bob", "comment": "not now"}
    ).encode()
    ts = str(int(time.time()))
    bad = api.as_(None).post(
        "/api/v1/integrations/webhook/decisions",
        content=body,
        headers={"X-Jitgate-Timestamp": ts, "X-Jitgate-Signature": "sha256=00"},
    )
    assert bad.status_code == 401
    good = api.as_(None).post(
        "/api/v1/integrations/webhook/decisions",
        content=body,
        headers={
            "X-Jitgate-Timestamp": ts,
            "X-Jitgate-Signature": sign("inbound-secret", ts, body),
        },
    )
    assert good.json() == {"id": request_id, "status": "denied"}
    assert gateway.access.get_request(request_id).decision_reason == "not now"
    # A disabled approver decides nothing through the webhook (nor through Slack).
    second = (
        people["alice"]
        .post("/api/v1/requests", json={"connection": "prod-db", "reason": "r2"})
        .json()["id"]
    )
    gateway.identities.update("bob", disabled=True)
    body = json.dumps({"request_id": second, "decision": "approve", "approver": "bob"}).encode()
    refused = api.as_(None).post(
        "/api/v1/integrations/webhook/decisions",
        content=body,
        headers={
            "X-Jitgate-Timestamp": ts,
            "X-Jitgate-Signature": sign("inbound-secret", ts, body),
        },
    )
    assert refused.status_code == 403 and "disabled" in refused.json()["error"]["message"]
    assert gateway.access.get_request(second).status == "pending"


def test_break_glass_and_task_completion(api: API) -> None:
    people = _setup(api)
    short = people["alice"].post(
        "/api/v1/break-glass",
        json={"connection": "prod-db", "reason": "short", "duration_seconds": 600},
    )
    assert short.status_code == 422
    grant = people["alice"].post(
        "/api/v1/break-glass",
        json={
            "connection": "prod-db",
            "reason": "primary is down, pager silent",
            "duration_seconds": 600,
        },
    )
    assert grant.status_code == 201 and grant.json()["kind"] == "break_glass"
    flagged = api.get("/api/v1/audit", params={"action": "grant:break_glass"}).json()["items"]
    assert flagged[0]["details"]["flagged"] is True
    task = (
        people["alice"]
        .post(
            "/api/v1/requests",
            json={"connection": "prod-db", "reason": "agent job", "task_id": "job-9"},
        )
        .json()
    )
    people["bob"].post(f"/api/v1/requests/{task['id']}/approve", json={})
    assert people["bob"].post("/api/v1/tasks/job-9/complete").status_code == 403
    done = people["alice"].post("/api/v1/tasks/job-9/complete").json()["items"]
    assert len(done) == 1 and done[0]["revoke_reason"] == "task completed"
    again = api.post("/api/v1/tasks/job-9/complete")
    assert again.status_code == 409 and "already completed" in again.json()["error"]["message"]


def test_requests_and_grants_are_paged(api: API) -> None:
    people = _setup(api)
    made = []
    for i in range(7):
        request = (
            people["alice"]
            .post("/api/v1/requests", json={"connection": "prod-db", "reason": f"r{i}"})
            .json()
        )
        made.append(request["id"])
        people["bob"].post(f"/api/v1/requests/{request['id']}/approve", json={})

    def all_pages(path: str, **params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query: dict[str, Any] = {"limit": 3, **params}
            if cursor:
                query["cursor"] = cursor
            page = api.get(path, params=query).json()
            assert len(page["items"]) <= 3
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return seen

    assert all_pages("/api/v1/requests") == made[::-1]  # newest first, each once
    grants = all_pages("/api/v1/grants", identity="alice")
    assert len(grants) == len(set(grants)) == 7
    assert api.get("/api/v1/requests", params={"cursor": "nope"}).status_code == 400


def test_break_glass_is_notified(notified_api: tuple[API, Gateway], receiver: Receiver) -> None:
    """Break-glass reaches the approvers' channels: a signed webhook and a Slack message."""
    api, _gateway = notified_api
    people = _setup(api)
    grant = (
        people["alice"]
        .post(
            "/api/v1/break-glass",
            json={
                "connection": "prod-db",
                "reason": "primary down, pager silent",
                "duration_seconds": 600,
            },
        )
        .json()
    )
    hooks: list[tuple[dict[str, str], bytes]] = []
    slack: list[bytes] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (hooks and slack):
        hooks = [
            (h, b) for h, b in receiver.received if h.get("x-jitgate-event") == "grant.break_glass"
        ]
        slack = [b for h, b in receiver.received if b"BREAK-GLASS" in b]
        time.sleep(0.05)
    assert hooks and slack, receiver.received
    headers, raw = hooks[0]
    assert headers["x-jitgate-signature"] == sign(
        "hook-secret", headers["x-jitgate-timestamp"], raw
    )
    body = json.loads(raw)
    assert body["grant"]["id"] == grant["id"] and body["reason"] == "primary down, pager silent"
    assert b"alice" in slack[0] and b"prod-db" in slack[0]
