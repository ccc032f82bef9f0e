"""Pure functions from NWS gridpoint forecasts and Open-Meteo responses to one long forecast format.

Both providers land in the same rows (site, provider, issued_at, valid_from, valid_to, variable, value, unit) so
they can be compared. Variables share names across providers, and each variable has one canonical unit:
temperatures in °C and wind speeds in km/h (NWS ``units=us`` answers are converted: F→°C exactly,
mph→km/h × 1.609344); the value and unit as sent are kept in ``value_raw``/``unit_raw``. Times are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import UTC_TS, RecordRejected, as_float, as_str, join_flags, parse_utc

FORECAST_SCHEMA = pa.schema([
    pa.field("site", pa.string(), nullable=False),
    pa.field("provider", pa.string(), nullable=False),
    pa.field("issued_at", UTC_TS, nullable=False),
    pa.field("valid_from", UTC_TS, nullable=False),
    pa.field("valid_to", UTC_TS),
    pa.field("resolution", pa.string()),
    pa.field("variable", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("value_text", pa.string()),
    pa.field("unit", pa.string()),
    pa.field("value_raw", pa.string()),
    pa.field("unit_raw", pa.string()),
    pa.field("qc_flags", pa.string()),
])

WMO_UNITS = {"wmoUnit:degC": "°C", "wmoUnit:degF": "°F", "wmoUnit:percent": "%", "wmoUnit:km_h-1": "km/h",
             "wmoUnit:m_s-1": "m/s", "wmoUnit:mm": "mm"}
OPEN_METEO_VARIABLES = {
    "temperature_2m": "temperature", "apparent_temperature": "apparent_temperature",
    "relative_humidity_2m": "relative_humidity", "precipitation_probability": "precipitation_probability",
    "precipitation": "precipitation", "wind_speed_10m": "wind_speed", "weather_code": "weather_code",
    "temperature_2m_max": "temperature_max", "temperature_2m_min": "temperature_min",
    "precipitation_sum": "precipitation",
}
SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*(?:to\s*(\d+(?:\.\d+)?))?\s*(mph|km/h|kt|m/s)?", re.IGNORECASE)


def canonical(value: float | None, unit: str | None) -> tuple[float | None, str | None]:
    """One unit per variable: °C for temperatures, km/h for speeds. Other units pass through."""
    if value is None or unit is None:
        return value, unit
    if unit in ("F", "°F", "degF"):
        return round((value - 32.0) * 5.0 / 9.0, 6), "°C"
    if unit in ("C", "degC"):
        return value, "°C"
    if unit == "mph":
        return round(value * 1.609344, 6), "km/h"
    if unit == "kt":
        return round(value * 1.852, 6), "km/h"
    if unit == "m/s":
        return round(value * 3.6, 6), "km/h"
    return value, unit


def _row(site: str, provider: str, issued_at: datetime, valid_from: datetime, valid_to: datetime | None,
         resolution: str, variable: str, raw_value: Any, raw_unit: str | None, text: str | None = None,
         flags: list[str] | None = None) -> dict[str, Any]:
    number = as_float(raw_value)
    value, unit = canonical(number, raw_unit)
    return {
        "site": site, "provider": provider, "issued_at": issued_at, "valid_from": valid_from, "valid_to": valid_to,
        "resolution": resolution, "variable": variable, "value": value, "value_text": text, "unit": unit,
        "value_raw": None if raw_value is None else str(raw_value), "unit_raw": raw_unit,
        "qc_flags": join_flags(flags or []),
    }


def nws_forecast_rows(site: str, payload: Any, resolution: str) -> list[dict[str, Any]]:
    """A /gridpoints/{wfo}/{x},{y}/forecast or /forecast/hourly body → rows. ``issued_at`` is ``updateTime``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        raise RecordRejected("NWS forecast without properties")
    props = payload["properties"]
    issued_at = parse_utc(props.get("updateTime")) or parse_utc(props.get("generatedAt"))
    if issued_at is None:
        raise RecordRejected("NWS forecast without updateTime")
    rows = []
    for period in props.get("periods") or []:
        if not isinstance(period, dict):
            continue
        start, end = parse_utc(period.get("startTime")), parse_utc(period.get("endTime"))
        if start is None:
            continue
        unit = as_str(period.get("temperatureUnit"))
        rows.append(_row(site, "nws", issued_at, start, end, resolution, "temperature", period.get("temperature"),
                         unit))
        speed = SPEED.match(str(period.get("windSpeed") or ""))
        if speed:
            top = speed.group(2) or speed.group(1)  # "5 to 10 mph": the upper bound, as forecasters read it
            rows.append(_row(site, "nws", issued_at, start, end, resolution, "wind_speed", top,
                             speed.group(3) or "mph", text=as_str(period.get("windDirection"))))
        for key, variable in (("probabilityOfPrecipitation", "precipitation_probability"),
                              ("relativeHumidity", "relative_humidity"), ("dewpoint", "dewpoint")):
            quantity = period.get(key)
            if isinstance(quantity, dict) and "value" in quantity:
                unit_code = as_str(quantity.get("unitCode"))
                rows.append(_row(site, "nws", issued_at, start, end, resolution, variable, quantity.get("value"),
                                 WMO_UNITS.get(unit_code or "", unit_code)))
        rows.append(_row(site, "nws", issued_at, start, end, resolution, "weather_summary", None, None,
                         text=as_str(period.get("shortForecast"))))
    return rows


def open_meteo_rows(site: str, payload: Any) -> list[dict[str, Any]]:
    """An Open-Meteo /v1/forecast body → rows. Its times are local without offset: ``utc_offset_seconds`` turns
    them into UTC (we ask for GMT, and apply the offset anyway). Open-Meteo has no issue time; ``issued_at`` is
    the time of its ``current`` block (the model state the forecast starts from), else the first hour."""
    if not isinstance(payload, dict):
        raise RecordRejected("Open-Meteo answer is not an object")
    offset = timedelta(seconds=as_float(payload.get("utc_offset_seconds")) or 0)

    def utc(text: Any) -> datetime | None:
        if not isinstance(text, str):
            return None
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            return None
        return (local - offset).replace(tzinfo=UTC) if local.tzinfo is None else local.astimezone(UTC)

    current = payload.get("current") if isinstance(payload.get("current"), dict) else {}
    hourly = payload.get("hourly") if isinstance(payload.get("hourly"), dict) else {}
    daily = payload.get("daily") if isinstance(payload.get("daily"), dict) else {}
    issued_at = utc(current.get("time")) or utc((hourly.get("time") or [None])[0]) or utc(
        (daily.get("time") or [None])[0])
    if issued_at is None:
        raise RecordRejected("Open-Meteo answer without any time")
    rows = []
    if current:
        start = utc(current.get("time"))
        interval = timedelta(seconds=as_float(current.get("interval")) or 900)
        units = payload.get("current_units") or {}
        for key, value in current.items():
            if key in OPEN_METEO_VARIABLES and start is not None:
                rows.append(_row(site, "open_meteo", issued_at, start, start + interval, "current",
                                 OPEN_METEO_VARIABLES[key], value, units.get(key)))
    for block, units_key, step, resolution in ((hourly, "hourly_units", timedelta(hours=1), "hourly"),
                                               (daily, "daily_units", timedelta(days=1), "daily")):
        times = block.get("time") or []
        units = payload.get(units_key) or {}
        for key, values in block.items():
            if key not in OPEN_METEO_VARIABLES or not isinstance(values, list):
                continue
            for text, value in zip(times, values, strict=False):
                start = utc(text)
                if start is None:
                    continue
                # Null inside an array stays null: the model has no value for that step.
                rows.append(_row(site, "open_meteo", issued_at, start, start + step, resolution,
                                 OPEN_METEO_VARIABLES[key], value, units.get(key),
                                 flags=["null_value"] if value is None else None))
    return rows
