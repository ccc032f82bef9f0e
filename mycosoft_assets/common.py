"""Small pure helpers every normalizer uses: UTC parsing, typed coercion, QC flags. No I/O here."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")


class RecordRejected(ValueError):
    """A record that cannot become a row (no natural key). The raw response still holds it."""


def parse_utc(value: Any) -> datetime | None:
    """ISO-8601 with offset (``2026-02-20T11:36:34+01:00``, ``...Z``) → aware UTC datetime. Naive → assumed UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: a sentinel, not a time
        return None


def parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            return None
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        return None
    # Parquet int64: anything wider is not an id or a count we can store.
    return number if -(2**63) <= number < 2**63 else None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def valid_coordinates(lat: float | None, lon: float | None) -> bool:
    return lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180


def as_list(value: Any) -> list[Any]:
    """A list field that may arrive as null, a scalar or a string: always a list."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def join_flags(flags: list[str]) -> str | None:
    return ",".join(sorted(set(flags))) if flags else None
