"""Engine and session factory for the store (SQLite WAL by default, PostgreSQL at scale)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from jitgate.errors import Unavailable
from jitgate.store import closing

#: The PostgreSQL advisory lock (a bigint) held while a process migrates the store, creates
#: the first admin or re-encrypts credentials: gateways starting together take turns.
STARTUP_LOCK_ID = 0x6A69_7467_6174_6501


#: Seconds to wait for a new PostgreSQL connection (unless the URL sets ``connect_timeout``).
CONNECT_TIMEOUT = 5


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        if "connect_timeout" not in make_url(url).query:  # a store that hangs is unavailable
            kwargs.setdefault("connect_args", {"connect_timeout": CONNECT_TIMEOUT})
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, **kwargs)
    return engine


class Store:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: The gateway node this process is (its sessions are stamped with it), once known.
        self.node_id: str | None = None
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        closing.install(self._sessions, self)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(create_store_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            if is_connectivity_error(exc):
                raise Unavailable("the gateway's store is unavailable") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def startup_lock(self, timeout: float = 300.0) -> Iterator[None]:
        """Hold the store-wide start-up lock: a session-level advisory lock on PostgreSQL
        (on its own connection, so the work inside may use any other); SQLite admits one
        writer at a time by itself."""
        if self.dialect != "postgresql":
            yield
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            take = text("SELECT pg_try_advisory_lock(:id)")
            deadline = time.monotonic() + timeout
            while not conn.execute(take, {"id": STARTUP_LOCK_ID}).scalar():
                if time.monotonic() > deadline:
                    raise Unavailable("another gateway has held the store's start-up lock too long")
                time.sleep(0.05)
            try:
                yield
            finally:
                with suppress(SQLAlchemyError):  # a lost connection has released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": STARTUP_LOCK_ID})

    def check(self) -> str | None:
        """``None`` when the store answers a query, else why not (safe to show)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return None
        except SQLAlchemyError as exc:
            return describe_failure(exc)

    def ping(self) -> bool:
        return self.check() is None

    def dispose(self) -> None:
        self.engine.dispose()


def is_connectivity_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the store cannot be reached (as opposed to a bad statement):
    a connection lost or refused. SQLite's own OperationalErrors (a locked or missing
    file) count as well: the store cannot serve either way."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
    )


def describe_failure(exc: BaseException) -> str:
    """A one-line reason for a store failure, without host names or credentials: the last
    part of the driver's first message line ("Connection refused", "timeout expired")."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    reason = first.rsplit(": ", 1)[-1].strip() or type(orig).__name__
    kind = "cannot reach the store" if is_connectivity_error(exc) else "the store failed"
    return f"{kind}: {reason[:200]}"
