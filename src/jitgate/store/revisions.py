"""Monotonic revision counters shared by every gateway node through the store."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jitgate.store.models import RevisionRow, utcnow


def bump(session: Session, name: str) -> int:
    """Increment ``name`` inside the caller's transaction; returns the new value."""
    result = session.execute(
        update(RevisionRow)
        .where(RevisionRow.name == name)
        .values(value=RevisionRow.value + 1, updated_at=utcnow())
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(RevisionRow(name=name, value=1))
        session.flush()
        return 1
    return current(session, name)


def current(session: Session, name: str) -> int:
    value = session.scalar(select(RevisionRow.value).where(RevisionRow.name == name))
    return int(value or 0)
