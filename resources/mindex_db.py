"""The MINDEX database: SQLite by default (nothing to install), any SQLAlchemy URL via ``MINDEX_DATABASE_URL``.

Upserts are written once here, dialect-neutral: SQLite and PostgreSQL share SQLAlchemy's
``insert(...).on_conflict_do_update`` shape; any other dialect gets delete-then-insert inside the same
transaction. Table definitions live with the MINDEX assets; this module knows no table names.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the UI, `mindex status`) read while a run writes; busy_timeout waits out other writers.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_for(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = sa.create_engine(url, connect_args={"timeout": 30})
                sa.event.listen(engine, "connect", _on_sqlite_connect)
            else:
                # Case C18: survive a restarted server or a closed idle connection. Sessions run in UTC, so
                # DATE(), comparisons and returned datetimes never depend on the server's zone.
                connect_args = {"options": "-c timezone=UTC"} if url.startswith("postgresql") else {}
                engine = sa.create_engine(url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


class MindexDatabase(dg.ConfigurableResource):
    """Connection to MINDEX. ``url`` wins; otherwise a SQLite file ``mindex.sqlite`` in ``data_dir``."""

    url: str | None = None
    data_dir: str = "data"

    @property
    def resolved_url(self) -> str:
        if self.url:
            return self.url
        path = Path(self.data_dir).resolve() / "mindex.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    @property
    def engine(self) -> Engine:
        return engine_for(self.resolved_url)

    def describe(self) -> str:
        """The URL without any password, for metadata and logs."""
        return self.engine.url.render_as_string(hide_password=True)


def upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], key_columns: Sequence[str],
           newer_column: str | None = None, missing_flag: str | None = None,
           keep_known: Sequence[str] = ()) -> int:
    """Insert or update ``rows`` by natural key; returns rows sent. Unknown never overwrites known:

    * ``newer_column``: an existing row is only replaced by one at least as new, so replaying an older partition
      never overwrites newer data;
    * ``missing_flag``: a boolean column saying the source sent a "missing" sentinel; such a row never replaces a
      stored row that has a real value (it is kept in the mirror and the raw archive);
    * ``keep_known``: columns where an incoming NULL keeps the stored value (a position the source stopped
      knowing, such as a station reported at 0,0).
    """
    if not rows:
        return 0
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
        update_cols = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in key_columns}
        for name in keep_known:
            update_cols[name] = sa.func.coalesce(insert.excluded[name], table.c[name])
        conditions = []
        if newer_column is not None:
            current = table.c[newer_column]
            incoming = insert.excluded[newer_column]
            conditions.append(sa.or_(current.is_(None), incoming >= current))
        if missing_flag is not None:
            conditions.append(sa.or_(sa.func.coalesce(insert.excluded[missing_flag], sa.false()) == sa.false(),
                                     sa.func.coalesce(table.c[missing_flag], sa.false()) == sa.true()))
        where = sa.and_(*conditions) if conditions else None
        statement = insert.on_conflict_do_update(index_elements=list(key_columns), set_=update_cols, where=where)
        conn.execute(statement, list(rows))
        return len(rows)
    # Generic fallback: same effect, statements inside the caller's transaction.
    for row in rows:
        match = sa.and_(*(table.c[k] == row[k] for k in key_columns))
        existing = conn.execute(sa.select(table).where(match)).mappings().first()
        if existing is not None:
            if (newer_column is not None and existing[newer_column] is not None and row[newer_column] is not None
                    and _as_utc(row[newer_column]) < _as_utc(existing[newer_column])):
                continue
            if missing_flag is not None and row.get(missing_flag) and not existing[missing_flag]:
                continue
            row = {**row, **{name: existing[name] for name in keep_known if row.get(name) is None}}
        conn.execute(table.delete().where(match))
        conn.execute(table.insert().values(**row))
    return len(rows)


def _as_utc(value: Any) -> Any:
    """Times inside MINDEX are UTC; some databases hand them back without a zone."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
