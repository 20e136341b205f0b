"""Access requests, approvals and grants, with races and clock edges — SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from jitgate.access.events import AccessEvents, GrantsChanged
from jitgate.access.rules import ApprovalRule, Step
from jitgate.access.service import AccessService, statement_key
from jitgate.audit.log import AuditEvent, AuditLog
from jitgate.config import RolesSettings, TokenSettings
from jitgate.connections.registry import ConnectionRegistry
from jitgate.connections.types import ConnectionType
from jitgate.connections.vault import MasterKey, Vault
from jitgate.errors import Conflict, Forbidden, InvalidInput, NotFound
from jitgate.identity.principal import Authenticated, AuthMethod, IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.store.db import Store
from jitgate.store.models import utcnow


class World:
    def __init__(self, store: Store) -> None:
        self.identities = IdentityService(store, RolesSettings(), TokenSettings())
        self.connections = ConnectionRegistry(store, Vault([MasterKey.generate()]))
        self.events = AccessEvents()
        self.access = AccessService(store, self.connections, events=self.events)
        self.connections.create(
            name="prod-db", type=ConnectionType.POSTGRES, host="h", tags={"env": "prod"}
        )
        self.connections.create(name="dev-db", type=ConnectionType.POSTGRES, host="h")
        for name, groups, kind in [
            ("alice", ["dbas"], IdentityKind.USER),
            ("bob", ["approvers"], IdentityKind.USER),
            ("carol", ["approvers", "security"], IdentityKind.USER),
            ("dave", ["security"], IdentityKind.USER),
            ("erin", ["oncall"], IdentityKind.USER),
            ("ci-bot", [], IdentityKind.AGENT),
            ("root", ["admins"], IdentityKind.USER),
        ]:
            self.identities.create_identity(name, groups=groups, kind=kind)

    def who(self, name: str, actor: str | None = None) -> Authenticated:
        return Authenticated(
            principal=self.identities.identity(name),
            method=AuthMethod.API_TOKEN,
            actor=self.identities.identity(actor) if actor else None,
        )


@pytest.fixture
def world(store: Store) -> World:
    return World(store)


def test_request_approve_grant_lifecycle(world: World) -> None:
    seen: list[GrantsChanged] = []
    world.events.on_grants_changed(seen.append)
    request = world.access.create_request(
        world.who("alice"),
        "prod-db",
        reason="fix ticket 42",
        duration=timedelta(minutes=30),
        ticket="OPS-42",
    )
    assert request.status == "pending" and request.rule == "default"
    approved = world.access.approve(world.who("bob"), request.id, comment="ok")
    assert approved.status == "approved" and approved.grant_id
    [grant] = world.access.active_grants(world.who("alice").principal, None, "prod-db")
    assert grant.id == approved.grant_id
    assert abs((grant.ends_at - grant.starts_at) - timedelta(minutes=30)) < timedelta(seconds=1)
    assert seen and seen[-1].connection == "prod-db"
    with world.access.store.session() as session:
        actions = [e.action for e in AuditLog.query(session)]
    assert {"request:create", "request:approve", "grant:create"} <= set(actions)


@pytest.mark.parametrize("approver", ["alice", "dave", "ci-bot"])
def test_who_may_not_approve(world: World, approver: str) -> None:
    request = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    with pytest.raises(Forbidden):
        world.access.approve(world.who(approver), request.id)
    assert world.access.get_request(request.id).status == "pending"


def test_agent_acting_for_a_user_cannot_approve(world: World) -> None:
    request = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    with pytest.raises(Forbidden, match="agents"):
        world.access.approve(world.who("bob", actor="ci-bot"), request.id)


def test_approving_twice_or_after_deny_or_expiry(world: World) -> None:
    request = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    world.access.approve(world.who("bob"), request.id)
    with pytest.raises(Conflict, match="already approved"):
        world.access.approve(world.who("carol"), request.id)
    second = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    world.access.deny(world.who("bob"), second.id, reason="no")
    with pytest.raises(Conflict, match="denied"):
        world.access.approve(world.who("carol"), second.id)
    third = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    later = utcnow() + timedelta(hours=2)
    with pytest.raises(Conflict, match="expired"):
        world.access.approve(world.who("bob"), third.id, now=later)
    _ended, expired = world.access.expire_due(now=later)
    assert third.id in expired
    assert world.access.get_request(third.id).status == "expired"


def test_n_of_m_and_steps(world: World) -> None:
    world.access.put_rule(
        ApprovalRule(
            name="prod-two-step",
            connections=("prod-db",),
            steps=(Step(("approvers",), 2, "peers"), Step(("security",), 1, "security")),
        )
    )
    request = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    assert request.rule == "prod-two-step"
    after_one = world.access.approve(world.who("bob"), request.id)
    assert after_one.status == "pending" and after_one.current_step == 0
    with pytest.raises(Conflict, match="already decided"):
        world.access.approve(world.who("bob"), request.id)
    with pytest.raises(Forbidden):
        world.access.approve(world.who("dave"), request.id)  # security, but step 1 is peers
    after_two = world.access.approve(world.who("carol"), request.id)
    assert after_two.status == "pending" and after_two.current_step == 1
    done = world.access.approve(world.who("dave"), request.id)
    assert done.status == "approved" and len(done.approvals) == 3


def test_concurrent_approve_and_deny_resolve_once(world: World) -> None:
    for _ in range(5):
        request = world.access.create_request(world.who("alice"), "prod-db", reason="race")
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def act(
            fn: object, who: str, request_id: str, barrier: threading.Barrier, outcomes: list[str]
        ) -> None:
            barrier.wait()
            try:
                result = fn(world.who(who), request_id)  # type: ignore[operator]
                outcomes.append(result.status)
            except (Conflict, Forbidden) as exc:
                outcomes.append(f"refused: {type(exc).__name__}")

        threads = [
            threading.Thread(
                target=act, args=(world.access.approve, "bob", request.id, barrier, outcomes)
            ),
            threading.Thread(
                target=act, args=(world.access.deny, "carol", request.id, barrier, outcomes)
            ),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = world.access.get_request(request.id).status
        assert final in ("approved", "denied")
        assert sorted(o for o in outcomes if not o.startswith("refused")) in (
            ["approved"],
            ["denied"],
        )
        grants = world.access.list_grants(identity="alice", active_only=False)
        assert len([g for g in grants if g.request_id == request.id]) == (final == "approved")


def test_concurrent_approvals_of_a_two_of_m_step_both_count(world: World) -> None:
    """Two approvers of a 2-of-M step at the same moment: both approvals count, so the
    request is approved (each seeing only its own uncommitted approval would leave it
    pending for good when nobody else may approve)."""
    world.identities.create_identity("frank", groups=["approvers"])
    world.access.put_rule(
        ApprovalRule(
            name="two-peers", connections=("prod-db",), steps=(Step(("approvers",), 2, "peers"),)
        )
    )
    for _ in range(8):
        request = world.access.create_request(world.who("alice"), "prod-db", reason="race")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def approve(
            who: str, request_id: str, barrier: threading.Barrier, errors: list[BaseException]
        ) -> None:
            barrier.wait()
            try:
                world.access.approve(world.who(who), request_id)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=approve, args=(who, request.id, barrier, errors))
            for who in ("bob", "frank")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        final = world.access.get_request(request.id)
        assert final.status == "approved" and len(final.approvals) == 2
        grants = world.access.list_grants(identity="alice", active_only=False)
        assert len([g for g in grants if g.request_id == request.id]) == 1


def test_limits_from_the_rule(world: World) -> None:
    world.access.put_rule(
        ApprovalRule(name="short", connections=("dev-db",), max_duration_seconds=600, max_uses=3)
    )
    with pytest.raises(InvalidInput, match="maximum of 600"):
        world.access.create_request(
            world.who("alice"), "dev-db", reason="r", duration=timedelta(hours=1)
        )
    with pytest.raises(InvalidInput, match="reason"):
        world.access.create_request(world.who("alice"), "dev-db", reason="  ")
    request = world.access.create_request(
        world.who("alice"), "dev-db", reason="r", duration=timedelta(minutes=5), max_uses=100
    )
    assert request.max_uses == 3


def test_auto_approve_for_oncall(world: World) -> None:
    world.access.put_rule(ApprovalRule(name="oncall", auto_approve_groups=("oncall",)))
    request = world.access.create_request(world.who("erin"), "prod-db", reason="paged")
    assert request.status == "approved" and request.approvals[0].via == "auto"
    other = world.access.create_request(world.who("alice"), "prod-db", reason="r")
    assert other.status == "pending"
    with world.access.store.session() as session:
        events = [
            (e.action, e.actor, e.details) for e in AuditLog.query(session, target_name=request.id)
        ]
        pending_events = [e.action for e in AuditLog.query(session, target_name=other.id)]
    assert [action for action, _, _ in events] == ["request:create", "request:approve"]
    _, by, details = events[1]
    assert by is None  # the gateway approved, by rule: no person
    assert details["via"] == "auto" and details["rule"] == "oncall"
    assert details["matched_groups"] == ["oncall"] and details["requester"] == "erin"
    assert pending_events == ["request:create"]


def test_auto_approve_only_in_business_hours(world: World) -> None:
    """Default business hours: 08:00-18:00 UTC, Monday to Friday (risk settings)."""
    world.access.put_rule(
        ApprovalRule(
            name="oncall-days",
            auto_approve_groups=("oncall",),
            auto_approve_business_hours_only=True,
        )
    )
    tuesday_10 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    tuesday_19 = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
    saturday_10 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    erin = world.who("erin")
    statuses = [
        world.access.create_request(erin, "prod-db", reason="paged", now=at).status
        for at in (tuesday_10, tuesday_19, saturday_10)
    ]
    assert statuses == ["approved", "pending", "pending"]


def test_grant_end_by_time_uses_task_and_revoke(world: World) -> None:
    alice = world.who("alice")

    def granted(**kwargs: object) -> str:
        request = world.access.create_request(alice, "dev-db", reason="r", **kwargs)  # type: ignore[arg-type]
        return str(world.access.approve(world.who("bob"), request.id).grant_id)

    timed = granted(duration=timedelta(minutes=2))
    task = granted(task_id="task-7")
    revoked = granted()
    assert len(world.access.active_grants(alice.principal, None, "dev-db")) == 3
    # Clock edge: one second before the end it is active, at the end it is not.
    grant = world.access.get_grant(timed)
    assert grant.active_at(grant.ends_at - timedelta(seconds=1))
    assert not grant.active_at(grant.ends_at)
    ended, _ = world.access.expire_due(now=grant.ends_at)
    assert [g.id for g in ended] == [timed]
    assert world.access.get_grant(timed).revoke_reason == "expired"
    assert [g.id for g in world.access.complete_task(alice, "task-7").grants] == [task]
    with pytest.raises(Forbidden):
        world.access.revoke_grant(world.who("dave"), revoked)
    world.access.revoke_grant(world.who("bob"), revoked, reason="done early")
    assert world.access.active_grants(alice.principal, None, "dev-db") == []


def test_completing_a_task_ends_its_grants_cancels_its_requests_and_is_final(
    world: World,
) -> None:
    bot = world.who("ci-bot")
    seen: list[GrantsChanged] = []
    world.events.on_grants_changed(seen.append)
    first = world.access.create_request(bot, "dev-db", reason="job", task_id="job-1")
    grant_id = world.access.approve(world.who("bob"), first.id).grant_id
    waiting = world.access.create_request(bot, "prod-db", reason="job", task_id="job-1")
    other_task = world.access.create_request(bot, "prod-db", reason="job", task_id="job-2")
    assert waiting.status == "pending"
    # Neither an approver nor another identity may complete someone's task; unknown: 404.
    for who in ("bob", "alice"):
        with pytest.raises(Forbidden, match="owner or an admin"):
            world.access.complete_task(world.who(who), "job-1")
    with pytest.raises(NotFound, match="no grant or request"):
        world.access.complete_task(bot, "no-such-task")

    done = world.access.complete_task(bot, "job-1")
    assert [g.id for g in done.grants] == [grant_id]
    assert done.cancelled_requests == (waiting.id,)
    assert world.access.active_grants(bot.principal, None, "dev-db") == []
    assert world.access.get_grant(str(grant_id)).revoke_reason == "task completed"
    cancelled = world.access.get_request(waiting.id)
    assert cancelled.status == "cancelled" and cancelled.decision_reason == "task job-1 completed"
    assert world.access.get_request(other_task.id).status == "pending"  # another task
    assert any(grant_id in change.ended for change in seen)
    with pytest.raises(Conflict, match=r"'job-1' was already completed at .* by ci-bot"):
        world.access.complete_task(bot, "job-1")
    with pytest.raises(Conflict, match="already completed"):
        world.access.complete_task(world.who("root"), "job-1")
    with pytest.raises(Conflict, match="task 'job-1' is completed"):
        world.access.create_request(bot, "dev-db", reason="more", task_id="job-1")
    # An admin may complete anyone's task.
    assert world.access.complete_task(world.who("root"), "job-2").cancelled_requests == (
        other_task.id,
    )
    with world.access.store.session() as session:
        events = AuditLog.query(session, action="task:complete", target_name="job-1")
    assert [e.actor for e in events] == ["ci-bot"]
    assert events[0].details["cancelled_requests"] == [waiting.id]


def test_statement_grant_runs_exactly_once(world: World) -> None:
    alice = world.who("alice")
    key = statement_key("DELETE FROM t")
    request = world.access.create_request(
        alice,
        "prod-db",
        reason="cleanup",
        kind="statement",
        statement_text="DELETE FROM t",
        statement_key=key,
    )
    world.access.approve(world.who("bob"), request.id)
    assert (
        world.access.consume_statement_grant(
            alice.principal, None, "prod-db", statement_key("DELETE FROM u")
        )
        is None
    )
    results: list[object] = []
    barrier = threading.Barrier(4)

    def consume() -> None:
        barrier.wait()
        results.append(world.access.consume_statement_grant(alice.principal, None, "prod-db", key))

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in results if r is not None]) == 1
    # Statement grants are not connection grants.
    assert world.access.active_grants(alice.principal, None, "prod-db") == []


def test_break_glass_is_immediate_and_flagged(world: World) -> None:
    with pytest.raises(InvalidInput, match="reason"):
        world.access.break_glass(
            world.who("alice"), "prod-db", reason="x", duration=timedelta(minutes=5)
        )
    grant = world.access.break_glass(
        world.who("alice"),
        "prod-db",
        reason="database down, paging failed",
        duration=timedelta(minutes=5),
    )
    assert grant.kind == "break_glass" and grant.active
    with world.access.store.session() as session:
        [event] = AuditLog.query(session, action="grant:break_glass")
    assert event.details["flagged"] is True


def test_grant_for_agent_acting_for_user_is_bound_to_that_agent(world: World) -> None:
    delegated = world.who("alice", actor="ci-bot")
    request = world.access.create_request(delegated, "dev-db", reason="agent task")
    world.access.approve(world.who("bob"), request.id)
    alice = world.identities.identity("alice")
    bot = world.identities.identity("ci-bot")
    assert world.access.active_grants(alice, bot, "dev-db")
    assert world.access.active_grants(alice, None, "dev-db") == []


def test_access_grant_uses_are_sessions(world: World) -> None:
    """max_uses on an access grant counts sessions: each connect takes one, under races
    no more than there are; sessions that took one keep the grant after the last use."""
    alice = world.who("alice")
    request = world.access.create_request(alice, "dev-db", reason="two sessions", max_uses=2)
    grant_id = world.access.approve(world.who("bob"), request.id).grant_id
    results: list[object] = []
    barrier = threading.Barrier(4)

    def connect() -> None:
        barrier.wait()
        results.append(world.access.use_access_grant(alice.principal, None, "dev-db"))

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [getattr(r, "id", None) for r in results].count(grant_id) == 2
    assert results.count(None) == 2
    assert world.access.get_grant(grant_id).uses == 2
    assert world.access.active_grants(alice.principal, None, "dev-db") == []
    kept = world.access.active_grants(alice.principal, None, "dev-db", used={grant_id})
    assert [g.id for g in kept] == [grant_id]
    # Used up is not ended: housekeeping leaves it to its end time.
    ended, _ = world.access.expire_due()
    assert grant_id not in [g.id for g in ended]
    ended, _ = world.access.expire_due(now=world.access.get_grant(grant_id).ends_at)
    assert grant_id in [g.id for g in ended]


def test_two_completions_of_one_task_at_once_complete_it_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = world.who("ci-bot")
    first = world.access.create_request(bot, "dev-db", reason="job", task_id="job-9")
    world.access.approve(world.who("bob"), first.id)
    world.access.create_request(bot, "prod-db", reason="job", task_id="job-9")
    checked = world.access._task_completed

    def slow_check(session: Session, task_id: str) -> AuditEvent | None:
        found = checked(session, task_id)
        time.sleep(0.3)  # both completions would pass the check before either commits
        return found

    monkeypatch.setattr(world.access, "_task_completed", slow_check)
    outcomes: list[object] = []

    def complete() -> None:
        try:
            outcomes.append(world.access.complete_task(bot, "job-9"))
        except Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=complete) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "TaskCompletion"]
    with world.access.store.session() as session:
        events = AuditLog.query(session, action="task:complete", target_name="job-9")
    assert len(events) == 1
