"""Pure functions from OpenAQ v3 records to typed rows (case C09: sentinels, 0,0, units). No I/O.

Values keep their unit: every value column has a unit column beside it, and nothing is converted. ``-999`` and
lower are "missing" sentinels: ``value`` becomes NULL, ``value_raw`` keeps what was sent, and the row is flagged, so
aggregates (which read ``value``) exclude them. Small negatives are kept and flagged. Coordinates 0,0 become NULL.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import (
    UTC_TS,
    RecordRejected,
    as_float,
    as_int,
    as_str,
    join_flags,
    parse_utc,
    valid_coordinates,
)

SENTINEL_AT_OR_BELOW = -999.0

LOCATION_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("locality", pa.string()),
    pa.field("timezone", pa.string()),
    pa.field("country_code", pa.string()),
    pa.field("provider", pa.string()),
    pa.field("owner", pa.string()),
    pa.field("is_mobile", pa.bool_()),
    pa.field("is_monitor", pa.bool_()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("datetime_first", UTC_TS),
    pa.field("datetime_last", UTC_TS),
    pa.field("sensors_json", pa.string()),
    pa.field("qc_flags", pa.string()),
])

LATEST_SCHEMA = pa.schema([
    pa.field("sensor_id", pa.int64(), nullable=False),
    pa.field("location_id", pa.int64()),
    pa.field("datetime_utc", UTC_TS),
    pa.field("datetime_local", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("value_raw", pa.float64()),
    pa.field("is_missing_sentinel", pa.bool_()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("qc_flags", pa.string()),
])

MEASUREMENT_SCHEMA = pa.schema([
    pa.field("sensor_id", pa.int64(), nullable=False),
    pa.field("location_id", pa.int64()),
    pa.field("parameter_id", pa.int64()),
    pa.field("parameter", pa.string()),
    pa.field("unit", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("value_raw", pa.float64()),
    pa.field("is_missing_sentinel", pa.bool_()),
    pa.field("datetime_from", UTC_TS, nullable=False),
    pa.field("datetime_to", UTC_TS),
    pa.field("datetime_from_local", pa.string()),
    pa.field("period_label", pa.string()),
    pa.field("interval", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("qc_flags", pa.string()),
])


def value_and_flags(raw: Any) -> tuple[float | None, float | None, bool, list[str]]:
    """(value for aggregates, value as sent, is sentinel, flags)."""
    number = as_float(raw)
    flags: list[str] = []
    if number is None:
        if raw is not None:
            flags.append("non_numeric_value")
        return None, None, False, flags
    if number <= SENTINEL_AT_OR_BELOW:
        return None, number, True, ["missing_sentinel"]
    if number < 0:
        flags.append("negative_value")
    return number, number, False, flags


def coordinates(raw: Any) -> tuple[float | None, float | None, list[str]]:
    if not isinstance(raw, dict):
        return None, None, []
    lat, lon = as_float(raw.get("latitude")), as_float(raw.get("longitude"))
    if lat is None or lon is None:
        return None, None, []
    if lat == 0 and lon == 0:
        return None, None, ["zero_coordinates"]  # AirNow sends 0,0 when it does not know (openaq-fetch#169)
    if not valid_coordinates(lat, lon):
        return None, None, ["coordinates_out_of_range"]
    return lat, lon, []


def _name(value: Any) -> str | None:
    return as_str(value.get("name")) if isinstance(value, dict) else None


def normalize_location(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict) or as_int(record.get("id")) is None:
        raise RecordRejected("location without an integer id")
    lat, lon, flags = coordinates(record.get("coordinates"))
    country = record.get("country") if isinstance(record.get("country"), dict) else {}
    sensors = record.get("sensors") if isinstance(record.get("sensors"), list) else []
    return {
        "id": as_int(record["id"]), "name": as_str(record.get("name")), "locality": as_str(record.get("locality")),
        "timezone": as_str(record.get("timezone")), "country_code": as_str(country.get("code")),
        "provider": _name(record.get("provider")), "owner": _name(record.get("owner")),
        "is_mobile": record.get("isMobile") if isinstance(record.get("isMobile"), bool) else None,
        "is_monitor": record.get("isMonitor") if isinstance(record.get("isMonitor"), bool) else None,
        "latitude": lat, "longitude": lon,
        "datetime_first": parse_utc((record.get("datetimeFirst") or {}).get("utc")),
        "datetime_last": parse_utc((record.get("datetimeLast") or {}).get("utc")),
        "sensors_json": json.dumps(sensors, ensure_ascii=False, separators=(",", ":")),
        "qc_flags": join_flags(flags),
    }


def normalize_latest(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict) or as_int(record.get("sensorsId")) is None:
        raise RecordRejected("latest value without an integer sensorsId")
    value, raw, sentinel, flags = value_and_flags(record.get("value"))
    lat, lon, coord_flags = coordinates(record.get("coordinates"))
    when = record.get("datetime") if isinstance(record.get("datetime"), dict) else {}
    return {
        "sensor_id": as_int(record["sensorsId"]), "location_id": as_int(record.get("locationsId")),
        "datetime_utc": parse_utc(when.get("utc")), "datetime_local": as_str(when.get("local")),
        "value": value, "value_raw": raw, "is_missing_sentinel": sentinel, "latitude": lat, "longitude": lon,
        "qc_flags": join_flags(flags + coord_flags),
    }


def normalize_measurement(record: Any, sensor_id: int, location_id: int | None) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordRejected("measurement is not an object")
    period = record.get("period") if isinstance(record.get("period"), dict) else {}
    start = parse_utc((period.get("datetimeFrom") or {}).get("utc"))
    if start is None:
        raise RecordRejected("measurement without period.datetimeFrom.utc")
    value, raw, sentinel, flags = value_and_flags(record.get("value"))
    lat, lon, coord_flags = coordinates(record.get("coordinates"))
    parameter = record.get("parameter") if isinstance(record.get("parameter"), dict) else {}
    unit = as_str(parameter.get("units"))
    if unit is None:
        flags.append("missing_unit")
    return {
        "sensor_id": sensor_id, "location_id": location_id, "parameter_id": as_int(parameter.get("id")),
        "parameter": as_str(parameter.get("name")), "unit": unit, "value": value, "value_raw": raw,
        "is_missing_sentinel": sentinel, "datetime_from": start,
        "datetime_to": parse_utc((period.get("datetimeTo") or {}).get("utc")),
        "datetime_from_local": as_str((period.get("datetimeFrom") or {}).get("local")),
        "period_label": as_str(period.get("label")), "interval": as_str(period.get("interval")),
        "latitude": lat, "longitude": lon, "qc_flags": join_flags(flags + coord_flags),
    }
