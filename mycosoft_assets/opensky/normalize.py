"""Pure functions from an OpenSky ``/states/all`` response body to typed rows (case C11). No I/O.

A state vector is a positional array of 17 fields, or 18 with ``extended=1`` (``category``)::

    0 icao24, 1 callsign, 2 origin_country, 3 time_position, 4 last_contact, 5 longitude, 6 latitude,
    7 baro_altitude, 8 on_ground, 9 velocity, 10 true_track, 11 vertical_rate, 12 sensors, 13 geo_altitude,
    14 squawk, 15 spi, 16 position_source, [17 category]

Natural key: ``(icao24, last_contact)``. OpenSky has no pagination: every poll is a full snapshot, and an aircraft
that sent nothing new since the previous poll comes back with the same ``last_contact``; de-duplicating on this key
across polls keeps one row per update (``deduplicate``). A row without an ``icao24`` or ``last_contact`` cannot be
keyed and is rejected, as is a row with a field count other than 17 or 18; rejects are ``{"reason", "record"}``
with the raw row, and the raw body stays in the spool.

Mapping rules: values are taken by position and kept as sent (nulls stay null, ``0.0`` stays ``0.0``; no
sentinel values exist in this API). ``icao24`` is lowercased; ``callsign`` is stripped of its space padding and an
empty callsign becomes null. Unix seconds become UTC timestamps. ``sensors`` (a list of receiver ids, null unless
requested) is stored as JSON text. ``snapshot_time`` is the response's ``time``; ``received_at`` is when the
collector received the response (partitions use it).

QC flags (comma-joined, sorted): ``no_position`` (lat/lon null: 67 rows in the recorded global snapshot),
``partial_position`` and ``coordinates_out_of_range`` (lat/lon then both set to null), ``negative_velocity``,
``true_track_out_of_range`` (outside 0..360), ``invalid_icao24`` (not 6 hex digits), ``invalid_squawk`` (not 4
octal digits), ``unknown_position_source`` (not 0..3), ``unknown_category`` (not 0..20), ``non_numeric_<field>`` /
``non_boolean_<field>`` (a value of the wrong type, stored as null), ``time_position_after_last_contact``,
``last_contact_after_snapshot``, ``no_snapshot_time``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import UTC_TS, RecordRejected, as_float, as_int, as_str, join_flags, parse_utc

NATURAL_KEY = ("icao24", "last_contact")
FIELD_NAMES = (
    "icao24", "callsign", "origin_country", "time_position", "last_contact", "longitude", "latitude",
    "baro_altitude", "on_ground", "velocity", "true_track", "vertical_rate", "sensors", "geo_altitude", "squawk",
    "spi", "position_source", "category",
)
BASE_FIELDS = 17
EXTENDED_FIELDS = 18
_FLOAT_FIELDS = ("baro_altitude", "velocity", "true_track", "vertical_rate", "geo_altitude")
_ICAO24 = re.compile(r"^[0-9a-f]{6}$")
_SQUAWK = re.compile(r"^[0-7]{4}$")

STATE_SCHEMA = pa.schema([
    pa.field("icao24", pa.string(), nullable=False),
    pa.field("callsign", pa.string()),
    pa.field("origin_country", pa.string()),
    pa.field("time_position", UTC_TS),
    pa.field("last_contact", UTC_TS, nullable=False),
    pa.field("longitude", pa.float64()),
    pa.field("latitude", pa.float64()),
    pa.field("baro_altitude", pa.float64()),
    pa.field("on_ground", pa.bool_()),
    pa.field("velocity", pa.float64()),
    pa.field("true_track", pa.float64()),
    pa.field("vertical_rate", pa.float64()),
    pa.field("sensors", pa.string()),
    pa.field("geo_altitude", pa.float64()),
    pa.field("squawk", pa.string()),
    pa.field("spi", pa.bool_()),
    pa.field("position_source", pa.int64()),
    pa.field("category", pa.int64()),
    pa.field("snapshot_time", UTC_TS),
    pa.field("received_at", UTC_TS),
    pa.field("qc_flags", pa.string()),
])


def unix_to_utc(value: Any) -> datetime | None:
    """Unix seconds (int, or float) -> aware UTC datetime; anything else -> None."""
    number = as_float(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _bool(value: Any, name: str, flags: list[str]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    flags.append(f"non_boolean_{name}")
    return None


def _float(value: Any, name: str, flags: list[str]) -> float | None:
    number = as_float(value)
    if number is None and value is not None:
        flags.append(f"non_numeric_{name}")
    return number


def _int(value: Any, name: str, flags: list[str]) -> int | None:
    number = as_int(value)
    if number is None and value is not None:
        flags.append(f"non_numeric_{name}")
    return number


def normalize_state(raw: Any, snapshot_time: datetime | None, received_at: datetime | None) -> dict[str, Any]:
    """One state vector -> one row of STATE_SCHEMA. Raises ``RecordRejected`` when it cannot be keyed."""
    if not isinstance(raw, list):
        raise RecordRejected("state vector is not an array")
    if len(raw) not in (BASE_FIELDS, EXTENDED_FIELDS):
        raise RecordRejected(f"state vector has {len(raw)} fields, expected {BASE_FIELDS} or {EXTENDED_FIELDS}")
    icao24 = as_str(raw[0])
    if icao24 is None:
        raise RecordRejected("state vector without icao24")
    icao24 = icao24.lower()
    last_contact = unix_to_utc(raw[4])
    if last_contact is None:
        raise RecordRejected("state vector without a valid last_contact")
    flags: list[str] = []
    if not _ICAO24.match(icao24):
        flags.append("invalid_icao24")

    time_position = unix_to_utc(raw[3])
    if time_position is None and raw[3] is not None:
        flags.append("non_numeric_time_position")
    if time_position is not None and time_position > last_contact:
        flags.append("time_position_after_last_contact")
    if snapshot_time is None:
        flags.append("no_snapshot_time")
    elif last_contact > snapshot_time:
        flags.append("last_contact_after_snapshot")

    lon = _float(raw[5], "longitude", flags)
    lat = _float(raw[6], "latitude", flags)
    if lat is None and lon is None:
        flags.append("no_position")
    elif lat is None or lon is None:
        flags.append("partial_position")
        lat = lon = None
    elif not (-90 <= lat <= 90 and -180 <= lon <= 180):
        flags.append("coordinates_out_of_range")
        lat = lon = None

    values = dict(zip(FIELD_NAMES, raw, strict=False))
    floats = {name: _float(values[name], name, flags) for name in _FLOAT_FIELDS}
    if floats["velocity"] is not None and floats["velocity"] < 0:
        flags.append("negative_velocity")
    if floats["true_track"] is not None and not (0 <= floats["true_track"] <= 360):
        flags.append("true_track_out_of_range")

    sensors = raw[12]
    if sensors is not None and not isinstance(sensors, list):
        sensors = [sensors]
    squawk = as_str(raw[14])
    if squawk is not None and not _SQUAWK.match(squawk):
        flags.append("invalid_squawk")
    position_source = _int(raw[16], "position_source", flags)
    if position_source is not None and not (0 <= position_source <= 3):
        flags.append("unknown_position_source")
    category = _int(raw[17], "category", flags) if len(raw) == EXTENDED_FIELDS else None
    if category is not None and not (0 <= category <= 20):
        flags.append("unknown_category")

    return {
        "icao24": icao24,
        "callsign": as_str(raw[1]),
        "origin_country": as_str(raw[2]),
        "time_position": time_position,
        "last_contact": last_contact,
        "longitude": lon,
        "latitude": lat,
        "baro_altitude": floats["baro_altitude"],
        "on_ground": _bool(raw[8], "on_ground", flags),
        "velocity": floats["velocity"],
        "true_track": floats["true_track"],
        "vertical_rate": floats["vertical_rate"],
        "sensors": None if sensors is None else json.dumps(sensors, separators=(",", ":")),
        "geo_altitude": floats["geo_altitude"],
        "squawk": squawk,
        "spi": _bool(raw[15], "spi", flags),
        "position_source": position_source,
        "category": category,
        "snapshot_time": snapshot_time,
        "received_at": received_at,
        "qc_flags": join_flags(flags),
    }


def normalize_snapshot(body: dict[str, Any], received_at: str | datetime | None) -> tuple[list[dict[str, Any]],
                                                                                          list[dict[str, Any]]]:
    """A ``/states/all`` body -> (rows, rejects). ``states: null`` (nothing matched) -> ([], []).

    Raises ``RecordRejected`` when the body itself is not a states response (not an object, or ``states`` is
    neither a list nor null)."""
    if not isinstance(body, dict):
        raise RecordRejected("response body is not an object")
    states = body.get("states")
    if states is None:
        return [], []
    if not isinstance(states, list):
        raise RecordRejected("states is neither a list nor null")
    snapshot_time = unix_to_utc(body.get("time"))
    received = parse_utc(received_at)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for raw in states:
        try:
            rows.append(normalize_state(raw, snapshot_time, received))
        except RecordRejected as exc:
            rejects.append({"reason": str(exc), "record": raw})
    return rows, rejects


def deduplicate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per natural key ``(icao24, last_contact)``, the first seen kept (rows in poll order)."""
    seen: set[tuple[Any, Any]] = set()
    out = []
    for row in rows:
        key = (row["icao24"], row["last_contact"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
