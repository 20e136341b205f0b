"""Policies stored in the database: managed by API and CLI, compiled into one engine.

Every change validates the document against the Cedar schema (:mod:`.schema`) and the
*whole* resulting policy set with Cedar before it commits, in
one transaction with its audit event and a bump of the ``policies`` revision — an invalid
policy is rejected with Cedar's message and never half-applied. :meth:`engine` returns
the compiled :class:`CedarEngine` for the current revision; it re-reads the revision from
the store at most every ``reload_interval`` seconds, so a change made on another node is
picked up within that time (and at once on this node). When the store cannot be read it
raises :class:`PolicyStoreUnavailable` (fail closed; the gate turns it into a refusal of
the one statement) and tries again on the next call.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from jitgate.audit.log import AuditLog
from jitgate.errors import Conflict, InvalidInput, NotFound, Unavailable
from jitgate.identity.names import check_simple_name
from jitgate.identity.principal import Authenticated
from jitgate.masking.names import check_profile_names, policy_mask_names
from jitgate.policy import schema
from jitgate.policy.cedar import CedarEngine, Explanation, PolicyDocument, parse_document
from jitgate.policy.risk import RiskSettings
from jitgate.policy.types import Decision, Request
from jitgate.store import revisions
from jitgate.store.db import Store
from jitgate.store.models import PolicyRow

REVISION = "policies"
MAX_POLICY_BYTES = 256 * 1024


def default_pack() -> str:
    return resources.files("jitgate.policy").joinpath("packs/default.cedar").read_text("utf-8")


class PolicyStoreUnavailable(Unavailable):
    """The policies cannot be read from the store (it is down or unreachable)."""


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    name: str
    text: str
    description: str | None
    enabled: bool
    policies: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class PolicyService:
    def __init__(
        self, store: Store, *, risk: RiskSettings | None = None, reload_interval: float = 1.0
    ) -> None:
        self.store = store
        self.risk = risk or RiskSettings()
        self.reload_interval = reload_interval
        self._engine: CedarEngine | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ engine

    def engine(self) -> CedarEngine:
        now = time.monotonic()
        engine = self._engine
        if engine is not None and now - self._checked < self.reload_interval:
            return engine
        with self._lock:
            try:
                with self.store.session() as session:
                    revision = revisions.current(session, REVISION)
                    if self._engine is None or self._engine.version != revision:
                        docs = self._documents(session)
                        self._engine = CedarEngine(docs, version=revision, risk=self.risk)
            except (SQLAlchemyError, OSError, Unavailable) as exc:
                # Fail closed: no decision from policies that may be out of date. The next
                # call tries the store again, so decisions resume as soon as it is back.
                raise PolicyStoreUnavailable(
                    "the policy store cannot be read, so nothing can be allowed; "
                    "try again once it is back"
                ) from exc
            self._checked = time.monotonic()
            return self._engine

    def invalidate(self) -> None:
        self._checked = 0.0

    @staticmethod
    def _documents(
        session: Session, *, replace: PolicyDocument | None = None, drop: str | None = None
    ) -> list[PolicyDocument]:
        rows = session.scalars(
            select(PolicyRow).where(PolicyRow.enabled.is_(True)).order_by(PolicyRow.name)
        )
        docs = [PolicyDocument(r.name, r.text) for r in rows if r.name not in (drop,)]
        if replace is not None:
            docs = [d for d in docs if d.name != replace.name] + [replace]
        return docs

    # ----------------------------------------------------------------- records

    @staticmethod
    def _record(row: PolicyRow) -> PolicyRecord:
        try:
            names = tuple(
                a.get("id") or f"{row.name}#{i}"
                for i, (_e, a) in enumerate(parse_document(PolicyDocument(row.name, row.text)))
            )
        except InvalidInput:
            names = ()
        return PolicyRecord(
            row.name,
            row.text,
            row.description,
            row.enabled,
            names,
            row.created_at,
            row.updated_at,
            row.created_by,
        )

    def ensure_default_pack(self) -> bool:
        """On an empty store, install the default pack; returns whether it did."""
        with self.store.session() as session:
            if session.scalar(select(PolicyRow.id).limit(1)) is not None:
                return False
            session.add(
                PolicyRow(
                    id=str(uuid.uuid4()),
                    name="default",
                    text=default_pack(),
                    description="jitgate default policy pack",
                    created_by="jitgate",
                )
            )
            revisions.bump(session, REVISION)
        self.invalidate()
        return True

    def list(self) -> Sequence[PolicyRecord]:
        with self.store.session() as session:
            return [
                self._record(r) for r in session.scalars(select(PolicyRow).order_by(PolicyRow.name))
            ]

    def get(self, name: str) -> PolicyRecord:
        with self.store.session() as session:
            return self._record(self._row(session, name))

    @staticmethod
    def _row(session: Session, name: str) -> PolicyRow:
        row = session.scalar(select(PolicyRow).where(PolicyRow.name == name))
        if row is None:
            raise NotFound(f"no policy named {name[:128]!r}")
        return row

    def validate(self, name: str, text: str) -> CedarEngine:
        """Check a document alone and together with every other enabled one."""
        check_simple_name(name, "policy name")
        if len(text.encode()) > MAX_POLICY_BYTES:
            raise InvalidInput(f"policy {name!r} exceeds {MAX_POLICY_BYTES} bytes")
        document = PolicyDocument(name, text)
        parse_document(document)
        schema.check(document)
        with self.store.session() as session:
            docs = self._documents(session, replace=document)
        try:
            return CedarEngine(docs, risk=self.risk)
        except ValueError as exc:
            raise InvalidInput(f"the policy set would not be valid Cedar: {exc}") from None

    def put(
        self,
        name: str,
        text: str,
        *,
        description: str | None = None,
        enabled: bool = True,
        create_only: bool = False,
        caller: Authenticated | None = None,
        client_addr: str | None = None,
    ) -> PolicyRecord:
        check_simple_name(name, "policy name")
        if len(text.encode()) > MAX_POLICY_BYTES:
            raise InvalidInput(f"policy {name!r} exceeds {MAX_POLICY_BYTES} bytes")
        document = PolicyDocument(name, text)
        annotations = parse_document(document)
        schema.check(document)
        with self.store.session() as session:
            row = session.scalar(select(PolicyRow).where(PolicyRow.name == name))
            if row is not None and create_only:
                raise Conflict(f"a policy named {name!r} already exists")
            check_profile_names(session, policy_mask_names(annotations))
            docs = self._documents(
                session, replace=document if enabled else None, drop=None if enabled else name
            )
            try:
                CedarEngine(docs, risk=self.risk)
            except ValueError as exc:
                raise InvalidInput(f"the policy set would not be valid Cedar: {exc}") from None
            action = "policy:create" if row is None else "policy:update"
            if row is None:
                row = PolicyRow(
                    id=str(uuid.uuid4()),
                    name=name,
                    text=text,
                    description=description,
                    enabled=enabled,
                    created_by=caller.principal.name if caller else None,
                )
                session.add(row)
            else:
                row.text, row.enabled = text, enabled
                if description is not None:
                    row.description = description
            revision = revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                action,
                caller=caller,
                target_type="policy",
                target_name=name,
                details={"revision": revision, "enabled": enabled},
                client_addr=client_addr,
            )
            session.flush()
            record = self._record(row)
        self.invalidate()
        return record

    def delete(
        self, name: str, *, caller: Authenticated | None = None, client_addr: str | None = None
    ) -> None:
        with self.store.session() as session:
            row = self._row(session, name)
            session.delete(row)
            revision = revisions.bump(session, REVISION)
            AuditLog.record(
                session,
                "policy:delete",
                caller=caller,
                target_type="policy",
                target_name=name,
                details={"revision": revision},
                client_addr=client_addr,
            )
        self.invalidate()

    def test(self, request: Request, *, engine: CedarEngine | None = None) -> Explanation:
        return (engine or self.engine()).explain(request)


class LiveEngine:
    """The current engine of a :class:`PolicyService`, as a ``PolicyEngine``: sessions hold
    this, so a policy change reaches open sessions with their next statement."""

    def __init__(self, service: PolicyService) -> None:
        self.service = service

    @property
    def version(self) -> int:
        return self.service.engine().version

    @property
    def reads_text(self) -> bool:
        return self.service.engine().reads_text

    def reads_text_for(self, action: str) -> bool:
        return self.service.engine().reads_text_for(action)

    def decide(self, request: Request) -> Decision:
        return self.service.engine().decide(request)
