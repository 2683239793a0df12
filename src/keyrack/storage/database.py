"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from keyrack.errors import InvalidInput, Unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _many: bool
) -> None:
    """Refuse text with a NUL character on every backend, before it reaches the driver.

    PostgreSQL cannot store NUL in text (the driver raises, a 500) while SQLite
    would keep it; any input, from any adapter, gets the same 400 instead.
    """
    if parameters and _has_nul(parameters):
        raise InvalidInput("text must not contain NUL (\\u0000) characters")


def _unreachable(error: Exception) -> bool:
    """Whether ``error`` says the database could not be reached, rather than refused a statement.

    Connecting failed (the error carries no statement: a closed port, a file that
    cannot be opened, a refused login), the connection broke (SQLAlchemy invalidated
    it), or no pooled connection came free in time.
    """
    if isinstance(error, PoolTimeout):
        return True
    return isinstance(error, OperationalError | InterfaceError) and (
        error.connection_invalidated or error.statement is None
    )


@contextmanager
def database_errors() -> Iterator[None]:
    """What the database says, in Keyrack's terms, wherever the call came from.

    A value it cannot hold is bad input (400), never a 500: PostgreSQL refuses e.g.
    an id beyond its column's range (``DataError``), SQLite an integer beyond 64 bits
    (``OverflowError``). A database it cannot reach is ``Unavailable`` (503 for the
    API and the console, one line and exit 1 for the CLI), never a stack trace.
    """
    try:
        yield
    except (DataError, OverflowError):
        raise InvalidInput("a value is out of range for what it names") from None
    except (DBAPIError, PoolTimeout) as error:
        if not _unreachable(error):
            raise
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise Unavailable("the database is unreachable", reason=reason) from None


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        if "poolclass" not in kwargs:
            kwargs = {"pool_size": 10, "max_overflow": 20, **kwargs}
        # Whatever the server's default: a writer let past the organization's change clock
        # (``records.stamp``) must see what the one before it committed, not be refused.
        kwargs = {"isolation_level": "READ COMMITTED", **kwargs}
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


def insert_for(session: Session) -> Any:
    """The ``insert`` of the session's dialect: one that can say ``ON CONFLICT`` (an upsert)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class Database:
    """An engine plus a session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with database_errors(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no implicit commit)."""
        with database_errors(), self._sessions() as session:
            yield session

    @contextmanager
    def single_reads(self) -> Iterator[Connection]:
        """A connection for single-statement reads in autocommit: no BEGIN, no ROLLBACK
        around them (one round trip a statement; the hot path's cache misses)."""
        with database_errors(), self._autocommit.connect() as connection:
            yield connection

    def is_migrated(self) -> bool:
        with database_errors():
            return inspect(self.engine).has_table("alembic_version")

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
