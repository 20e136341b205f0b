"""The order in which sessions close, and which node recorded them: kept by the store.

Theory of operation
-------------------
Whatever closes a session row — the recorder at the end of a session, the recovery of a
session a stopped node left open, a test — sets its ``ended_at``. ``ended_at`` says when
the session's last write happened, which for a recovered session is long before the row
is closed; a reader that walks closed sessions by ``ended_at`` (the audit export, with
its cursor) would pass over it. So every flush that closes sessions also numbers them:
``close_seq`` takes the next values of the ``session_close`` counter (table
``revisions``), incremented in the same transaction.

The increment is an ``INSERT … ON CONFLICT DO UPDATE`` of one row: it holds that row's
lock until the transaction ends, so a second close waits for the first to commit before
it gets its number. Numbers are therefore handed out in commit order: once a reader
sees close ``n`` committed, every close numbered below ``n`` is committed too, and a
cursor "after close ``n``" never skips one (nothing needs to settle first). The lock is
taken after the session rows are written (in ``after_flush``), so a close and a recovery
of the same rows take their locks in the same order.

A session row added to the store gets the store's ``node_id`` (the gateway process that
records it; see :mod:`jitgate.recording.recovery`) unless it names one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from jitgate.store.models import RevisionRow, SessionRow, utcnow

if TYPE_CHECKING:
    from jitgate.store.db import Store

#: The counter (``revisions.name``) that numbers session closes.
CLOSE_COUNTER = "session_close"
_PENDING = "jitgate.closing"


def install(factory: sessionmaker[Session], store: Store) -> None:
    """Number the closes and stamp the node of every session written through ``factory``."""

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        closing: list[SessionRow] = []
        for obj in session.new:
            if isinstance(obj, SessionRow):
                if obj.node_id is None:
                    obj.node_id = store.node_id
                if obj.ended_at is not None:
                    closing.append(obj)
        for obj in session.dirty:
            if isinstance(obj, SessionRow):
                added = inspect(obj).attrs.ended_at.history.added
                if added and added[0] is not None:
                    closing.append(obj)
        if closing:
            session.info.setdefault(_PENDING, []).extend(closing)

    def after_flush(session: Session, _context: Any) -> None:
        closing: list[SessionRow] = session.info.pop(_PENDING, [])
        if closing:
            number_closes(session, closing)

    event.listen(factory, "before_flush", before_flush)
    event.listen(factory, "after_flush", after_flush)


def next_values(session: Session, count: int) -> range:
    """Take ``count`` numbers of the close counter, in this transaction (see above)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    stmt = (
        insert(RevisionRow)
        .values(name=CLOSE_COUNTER, value=count, updated_at=now)
        .on_conflict_do_update(
            index_elements=[RevisionRow.name],
            set_={"value": RevisionRow.value + count, "updated_at": now},
        )
        .returning(RevisionRow.value)
    )
    last = int(session.connection().execute(stmt).scalar_one())
    return range(last - count + 1, last + 1)


def number_closes(session: Session, rows: list[SessionRow]) -> None:
    # One session closed twice in a flush (or twice in a transaction) gets one number.
    unique = list({id(row): row for row in rows}.values())
    unique.sort(key=lambda row: (row.ended_at or utcnow(), row.id))
    connection = session.connection()
    for row, seq in zip(unique, next_values(session, len(unique)), strict=True):
        connection.execute(update(SessionRow).where(SessionRow.id == row.id).values(close_seq=seq))
        set_committed_value(row, "close_seq", seq)
