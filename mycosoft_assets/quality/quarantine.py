"""Row-level rules applied while loading MINDEX: a row that breaks one goes to the `quarantine` table with the rule
and the full record, instead of the MINDEX table. Nothing is dropped silently; a fixed record that passes later is
loaded and its quarantine entry removed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mycosoft_assets.mindex.schema import quarantine

Rule = tuple[str, Callable[[dict[str, Any], datetime], bool]]  # (name, violated(row, now))


def _after(value: Any, limit: datetime) -> bool:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware > limit
    if isinstance(value, date):
        return value > limit.date()
    return False


def _outside(value: Any, low: float, high: float) -> bool:
    return value is not None and not (low <= value <= high)


ROW_RULES: dict[str, list[Rule]] = {
    "observations": [
        ("missing_update_time", lambda r, now: r.get("source_updated_at") is None),
        ("observed_in_future", lambda r, now: _after(r.get("observed_at"), now + timedelta(days=1))
         or _after(r.get("observed_on"), now + timedelta(days=1))),
        ("coordinates_out_of_range", lambda r, now: _outside(r.get("latitude"), -90, 90)
         or _outside(r.get("longitude"), -180, 180)),
    ],
    "aq_measurements": [
        ("measurement_in_future", lambda r, now: _after(r.get("datetime_from"), now + timedelta(hours=2))),
        ("missing_unit", lambda r, now: r.get("unit") is None),
    ],
    "nws_alert_messages": [
        ("missing_sent", lambda r, now: r.get("sent") is None),
    ],
    # Stream rows are deduplicated on a natural key that includes the source's own time: without it a record
    # cannot be told apart from its replays after a reconnect (and a NULL key column breaks the upsert).
    "aircraft_states": [
        ("missing_last_contact", lambda r, now: r.get("last_contact") is None),
    ],
    "vessel_positions": [
        ("missing_time_utc", lambda r, now: r.get("time_utc_raw") is None),
    ],
    "vessel_static": [
        ("missing_time_utc", lambda r, now: r.get("time_utc_raw") is None),
    ],
    "weather_forecasts": [
        ("temperature_out_of_range", lambda r, now: r.get("unit") == "°C" and _outside(r.get("value"), -90, 60)),
    ],
}


def split(table: str, rows: Sequence[dict[str, Any]], now: datetime | None = None
          ) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """(rows that pass, [(rule, row)] that break a rule; a row is quarantined for the first rule it breaks)."""
    now = now or datetime.now(UTC)
    good, bad = [], []
    for row in rows:
        broken = next((name for name, violated in ROW_RULES.get(table, []) if violated(row, now)), None)
        if broken is None:
            good.append(row)
        else:
            bad.append((broken, row))
    return good, bad


def store(conn: sa.Connection, dataset: str, partition_key: str, key_columns: Sequence[str],
          bad: list[tuple[str, dict[str, Any]]], good: Sequence[dict[str, Any]]) -> int:
    """Upsert quarantined rows; forget entries of keys that have now loaded cleanly."""
    from resources.mindex_db import upsert

    def key_of(row: dict[str, Any]) -> str:
        return "|".join(str(row[c]) for c in key_columns)

    entries = [{"dataset": dataset, "natural_key": key_of(row), "rule": rule, "partition_key": partition_key,
                "record": json.dumps(row, default=str, ensure_ascii=False)} for rule, row in bad]
    upsert(conn, quarantine, entries, ["dataset", "natural_key", "rule"])
    cleared = [key_of(row) for row in good]
    for start in range(0, len(cleared), 500):
        conn.execute(quarantine.delete().where(quarantine.c.dataset == dataset,
                                               quarantine.c.natural_key.in_(cleared[start:start + 500])))
    return len(entries)


def count(conn: sa.Connection, dataset: str, partition_key: str | None = None) -> dict[str, int]:
    query = sa.select(quarantine.c.rule, sa.func.count()).where(quarantine.c.dataset == dataset)
    if partition_key is not None:
        query = query.where(quarantine.c.partition_key == partition_key)
    return {rule: int(n) for rule, n in conn.execute(query.group_by(quarantine.c.rule)).all()}
