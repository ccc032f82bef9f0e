"""Pure functions from AISStream.io websocket envelopes to typed rows (case C10: "not available" sentinels). No I/O
except ``load_recorded_envelopes``, which only reads the recorded fixture files for the replay server and tests.

An envelope is ``{"MessageType": T, "MetaData": {MMSI, MMSI_String, ShipName, latitude, longitude, time_utc},
"Message": {T: {...}}}``. Position reports become ``POSITION_SCHEMA`` rows, static reports ``STATIC_SCHEMA`` rows,
every other type is skipped (``None``). The natural key of both is ``(mmsi, message_type, time_utc_raw)``:
``time_utc_raw`` is the string exactly as sent, so a message received twice across a reconnect dedupes exactly.

ITU-R M.1371 "not available" values become NULL and leave a flag in ``qc_flags`` (lat 91, lon 181, SOG 102.3,
COG 360, heading 511, rate of turn -128, ETA month 0 / day 0 / hour 24 / minute 60, IMO 0, draught 0, ship type 0,
all-zero dimensions). An exact (0, 0) position is NULL plus ``zero_position`` (aisstream/issues#104). ``Valid: true``
is kept as a column, never trusted to clear a flag.

MMSI is TEXT, zero-padded to 9 characters (a base station such as 2240998 is ``002240998``), never an int.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import UTC_TS, RecordRejected, as_float, as_int, as_str, join_flags, parse_utc

POSITION_TYPES = frozenset({"PositionReport", "StandardClassBPositionReport", "ExtendedClassBPositionReport"})
STATIC_TYPES = frozenset({"ShipStaticData", "StaticDataReport"})
NATURAL_KEY = ("mmsi", "message_type", "time_utc_raw")

LAT_NOT_AVAILABLE = 91.0
LON_NOT_AVAILABLE = 181.0
SOG_NOT_AVAILABLE = 102.3  # knots; 1023 in the 0.1-knot raw field
COG_NOT_AVAILABLE = 360.0  # degrees; 3600 in the 0.1-degree raw field
HEADING_NOT_AVAILABLE = 511
ROT_NOT_AVAILABLE = -128

POSITION_SCHEMA = pa.schema([
    pa.field("mmsi", pa.string(), nullable=False),
    pa.field("message_type", pa.string(), nullable=False),
    pa.field("time_utc", UTC_TS),
    pa.field("time_utc_raw", pa.string()),
    pa.field("ship_name", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("sog", pa.float64()),
    pa.field("cog", pa.float64()),
    pa.field("true_heading", pa.int64()),
    pa.field("rate_of_turn", pa.int64()),
    pa.field("navigational_status", pa.int64()),
    pa.field("position_accuracy", pa.bool_()),
    pa.field("valid", pa.bool_()),
    pa.field("received_at", UTC_TS),
    pa.field("qc_flags", pa.string()),
])

STATIC_SCHEMA = pa.schema([
    pa.field("mmsi", pa.string(), nullable=False),
    pa.field("message_type", pa.string(), nullable=False),
    pa.field("time_utc", UTC_TS),
    pa.field("time_utc_raw", pa.string()),
    pa.field("ship_name", pa.string()),
    pa.field("call_sign", pa.string()),
    pa.field("imo_number", pa.int64()),
    pa.field("ship_type", pa.int64()),
    pa.field("destination", pa.string()),
    pa.field("dim_a", pa.int64()),
    pa.field("dim_b", pa.int64()),
    pa.field("dim_c", pa.int64()),
    pa.field("dim_d", pa.int64()),
    pa.field("eta_month", pa.int64()),
    pa.field("eta_day", pa.int64()),
    pa.field("eta_hour", pa.int64()),
    pa.field("eta_minute", pa.int64()),
    pa.field("maximum_static_draught", pa.float64()),
    pa.field("part_number", pa.int64()),  # StaticDataReport (msg 24): 0 = part A (name), 1 = part B; else null
    pa.field("valid", pa.bool_()),
    pa.field("received_at", UTC_TS),
    pa.field("qc_flags", pa.string()),
])

# Go's time.Time.String(): "2025-06-19 07:34:29.35955696 +0000 UTC", optionally with " m=+0.001" (monotonic).
_GO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))? ([+-])(\d{2})(\d{2})(?: [A-Za-z0-9+-]+)?(?: m=\S+)?$"
)


def parse_go_time(value: Any) -> datetime | None:
    """``2025-06-19 07:34:29.35955696 +0000 UTC`` → aware UTC datetime, nanoseconds truncated to microseconds.
    ISO-8601 is accepted too; anything else is ``None``."""
    if not isinstance(value, str):
        return None
    match = _GO_TIME.match(value.strip())
    if not match:
        return parse_utc(value)
    day, clock, fraction, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        parsed = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S").replace(microsecond=micros,
                                                                                 tzinfo=timezone(offset))
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def go_time_sort_key(value: Any) -> tuple[float, int]:
    """Full nanosecond order of a Go time string (for ordering recordings); unparseable sorts last."""
    parsed = parse_go_time(value)
    if parsed is None:
        return (float("inf"), 0)
    match = _GO_TIME.match(value.strip()) if isinstance(value, str) else None
    nanos = int(match.group(3).ljust(9, "0")) if match and match.group(3) else parsed.microsecond * 1000
    return (float(int(parsed.replace(microsecond=0).timestamp())), nanos)


def mmsi_text(value: Any) -> str | None:
    """An MMSI as 9-character zero-padded text; ``None`` when it is not 1–9 digits."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    text = str(value).strip()
    if not text.isdigit() or len(text) > 9:
        return None
    return text.zfill(9)


def ship_name(value: Any) -> str | None:
    """AIS 6-bit text: space- and ``@``-padded (``"NEREU               "``)."""
    if not isinstance(value, str):
        return None
    return as_str(value.rstrip("@ ").strip())


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _body(envelope: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not isinstance(envelope, dict):
        raise RecordRejected("envelope is not an object")
    message_type = as_str(envelope.get("MessageType"))
    message = envelope.get("Message")
    if message_type is None or not isinstance(message, dict) or not isinstance(message.get(message_type), dict):
        raise RecordRejected("envelope without MessageType or Message.<MessageType> body")
    meta = envelope.get("MetaData") if isinstance(envelope.get("MetaData"), dict) else {}
    return message_type, message[message_type], meta


def _mmsi(meta: dict[str, Any], body: dict[str, Any], flags: list[str]) -> str:
    candidates = [mmsi_text(meta.get("MMSI")), mmsi_text(meta.get("MMSI_String")), mmsi_text(body.get("UserID"))]
    mmsi = next((c for c in candidates if c is not None), None)
    if mmsi is None:
        raise RecordRejected("envelope without a usable MMSI (MetaData.MMSI, MMSI_String, Message.UserID)")
    user_id = candidates[2]
    if user_id is not None and user_id != mmsi:
        flags.append("mmsi_userid_mismatch")
    if mmsi == "000000000":
        flags.append("mmsi_zero")
    return mmsi


def _time(meta: dict[str, Any], flags: list[str]) -> tuple[datetime | None, str | None]:
    raw = meta.get("time_utc")
    raw_text = raw if isinstance(raw, str) and raw.strip() else None
    if raw_text is None:
        flags.append("missing_time_utc")
        return None, None
    parsed = parse_go_time(raw_text)
    if parsed is None:
        flags.append("unparseable_time_utc")
    return parsed, raw_text


def _position(body: dict[str, Any], meta: dict[str, Any], flags: list[str]) -> tuple[float | None, float | None]:
    lat = as_float(body.get("Latitude")) if "Latitude" in body else as_float(meta.get("latitude"))
    lon = as_float(body.get("Longitude")) if "Longitude" in body else as_float(meta.get("longitude"))
    if lat is not None and lon is not None and lat == 0 and lon == 0:
        flags.append("zero_position")
        return None, None
    if lat is not None and lat == LAT_NOT_AVAILABLE:
        flags.append("latitude_not_available")
        lat = None
    elif lat is not None and not -90 <= lat <= 90:
        flags.append("latitude_out_of_range")
        lat = None
    if lon is not None and lon == LON_NOT_AVAILABLE:
        flags.append("longitude_not_available")
        lon = None
    elif lon is not None and not -180 <= lon <= 180:
        flags.append("longitude_out_of_range")
        lon = None
    if (lat is None) != (lon is None):  # half a position is no position
        flags.append("partial_position")
        lat = lon = None
    return lat, lon


def _sog(raw: Any, flags: list[str]) -> float | None:
    sog = as_float(raw)
    if sog is None:
        return None
    if sog >= SOG_NOT_AVAILABLE - 1e-9:
        flags.append("sog_not_available")
        return None
    if sog < 0:
        flags.append("sog_out_of_range")
        return None
    return sog


def _cog(raw: Any, flags: list[str]) -> float | None:
    cog = as_float(raw)
    if cog is None:
        return None
    if cog >= COG_NOT_AVAILABLE:
        flags.append("cog_not_available")
        return None
    if cog < 0:
        flags.append("cog_out_of_range")
        return None
    return cog


def _heading(raw: Any, flags: list[str]) -> int | None:
    heading = as_int(raw)
    if heading is None:
        return None
    if heading == HEADING_NOT_AVAILABLE:
        flags.append("heading_not_available")
        return None
    if not 0 <= heading <= 359:
        flags.append("heading_out_of_range")  # e.g. TrueHeading 456 with Valid true (aisstream/issues#124)
        return None
    return heading


def _rate_of_turn(raw: Any, flags: list[str]) -> int | None:
    rot = as_int(raw)
    if rot is None:
        return None
    if rot == ROT_NOT_AVAILABLE:
        flags.append("rate_of_turn_not_available")
        return None
    if not -127 <= rot <= 127:
        flags.append("rate_of_turn_out_of_range")
        return None
    return rot


def normalize_position(message_type: str, body: dict[str, Any], meta: dict[str, Any],
                       received_at: datetime | None) -> dict[str, Any]:
    flags: list[str] = []
    mmsi = _mmsi(meta, body, flags)
    time_utc, time_raw = _time(meta, flags)
    lat, lon = _position(body, meta, flags)
    return {
        "mmsi": mmsi, "message_type": message_type, "time_utc": time_utc, "time_utc_raw": time_raw,
        "ship_name": ship_name(meta.get("ShipName")) or ship_name(body.get("Name")),
        "latitude": lat, "longitude": lon,
        "sog": _sog(body.get("Sog"), flags), "cog": _cog(body.get("Cog"), flags),
        "true_heading": _heading(body.get("TrueHeading"), flags),
        "rate_of_turn": _rate_of_turn(body.get("RateOfTurn"), flags),
        "navigational_status": as_int(body.get("NavigationalStatus")),
        "position_accuracy": _bool(body.get("PositionAccuracy")), "valid": _bool(body.get("Valid")),
        "received_at": received_at, "qc_flags": join_flags(flags),
    }


def _eta(eta: Any, flags: list[str]) -> dict[str, int | None]:
    eta = eta if isinstance(eta, dict) else {}
    out: dict[str, int | None] = {}
    # (field, AIS key, "not available" value, valid range)
    for column, key, not_available, low, high in (
        ("eta_month", "Month", 0, 1, 12), ("eta_day", "Day", 0, 1, 31),
        ("eta_hour", "Hour", 24, 0, 23), ("eta_minute", "Minute", 60, 0, 59),
    ):
        value = as_int(eta.get(key))
        if value is not None and value == not_available:
            flags.append(f"{column}_not_available")
            value = None
        elif value is not None and not low <= value <= high:
            flags.append(f"{column}_out_of_range")
            value = None
        out[column] = value
    return out


def _dimensions(dimension: Any, flags: list[str]) -> dict[str, int | None]:
    dimension = dimension if isinstance(dimension, dict) else {}
    dims = {f"dim_{k.lower()}": as_int(dimension.get(k)) for k in ("A", "B", "C", "D")}
    if dimension and all(v == 0 for v in dims.values()):
        flags.append("dimensions_not_available")
        return dict.fromkeys(dims)
    return dims


def _positive_or_flag(value: int | float | None, flag: str, flags: list[str]) -> Any:
    if value is not None and value == 0:
        flags.append(flag)
        return None
    return value


def normalize_static(message_type: str, body: dict[str, Any], meta: dict[str, Any],
                     received_at: datetime | None) -> dict[str, Any]:
    flags: list[str] = []
    mmsi = _mmsi(meta, body, flags)
    time_utc, time_raw = _time(meta, flags)
    part_number = None
    if message_type == "StaticDataReport":
        # Message 24: part A carries the name, part B call sign / type / dimensions; each has its own Valid.
        part_b = body.get("PartNumber") is True or as_int(body.get("PartNumber")) == 1
        part_number = 1 if part_b else 0
        report_a = body.get("ReportA") if isinstance(body.get("ReportA"), dict) else {}
        report_b = body.get("ReportB") if isinstance(body.get("ReportB"), dict) else {}
        report_a = report_a if report_a.get("Valid") is not False else {}
        report_b = report_b if report_b.get("Valid") is not False else {}
        name = ship_name(report_a.get("Name"))
        source = {"CallSign": report_b.get("CallSign"), "Type": report_b.get("ShipType"),
                  "Dimension": report_b.get("Dimension")}
    else:
        name = ship_name(body.get("Name"))
        source = body
    eta = _eta(source.get("Eta"), flags) if "Eta" in source else dict.fromkeys(
        ("eta_month", "eta_day", "eta_hour", "eta_minute"))
    dims = _dimensions(source.get("Dimension"), flags)
    destination = body.get("Destination") if message_type == "ShipStaticData" else None
    draught = as_float(body.get("MaximumStaticDraught")) if message_type == "ShipStaticData" else None
    return {
        "mmsi": mmsi, "message_type": message_type, "time_utc": time_utc, "time_utc_raw": time_raw,
        "ship_name": name or ship_name(meta.get("ShipName")),
        "call_sign": ship_name(source.get("CallSign")),
        "imo_number": _positive_or_flag(as_int(source.get("ImoNumber")), "imo_not_available", flags),
        "ship_type": _positive_or_flag(as_int(source.get("Type")), "ship_type_not_available", flags),
        "destination": ship_name(destination),
        **dims, **eta,
        "maximum_static_draught": _positive_or_flag(draught, "draught_not_available", flags),
        "part_number": part_number, "valid": _bool(body.get("Valid")),
        "received_at": received_at, "qc_flags": join_flags(flags),
    }


def normalize_envelope(envelope: dict[str, Any], received_at: str | datetime | None) -> tuple[str, dict] | None:
    """``("position", row)`` / ``("static", row)``; ``None`` for message types we do not keep (e.g.
    DataLinkManagementMessage). Raises ``RecordRejected`` without MessageType, Message body or MMSI."""
    message_type, body, meta = _body(envelope)
    received = parse_utc(received_at)
    if message_type in POSITION_TYPES:
        return "position", normalize_position(message_type, body, meta, received)
    if message_type in STATIC_TYPES:
        return "static", normalize_static(message_type, body, meta, received)
    _mmsi(meta, body, [])  # an unsupported type is skipped, but an envelope without MMSI is still rejected
    return None


# ---- the recorded fixtures (flattened by their recorder) back into the real envelope shape -------------------

def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def unflatten_position(rec: dict[str, Any]) -> dict[str, Any]:
    """A record of ``aisstream_PositionReport_flattened_*.json`` → ``{"MessageType", "MetaData", "Message"}``.
    Mapping from SOURCES.md: timestamp←MetaData.time_utc, MMSI←MetaData.MMSI, ShipName←MetaData.ShipName,
    lat/lon←Latitude/Longitude (also MetaData latitude/longitude), COG/SOG←Cog/Sog, NavigationalStatus, RateOfTurn,
    Spare, UserID. Fields the recorder did not keep (TrueHeading, Valid, ...) are not invented."""
    body = _drop_none({
        "Cog": rec.get("COG"), "Latitude": rec.get("lat"), "Longitude": rec.get("lon"),
        "NavigationalStatus": rec.get("NavigationalStatus"), "RateOfTurn": rec.get("RateOfTurn"),
        "Sog": rec.get("SOG"), "Spare": rec.get("Spare"), "UserID": rec.get("UserID"),
    })
    meta = _drop_none({
        "MMSI": rec.get("MMSI"), "MMSI_String": rec.get("MMSI"), "ShipName": rec.get("ShipName"),
        "latitude": rec.get("lat"), "longitude": rec.get("lon"), "time_utc": rec.get("timestamp"),
    })
    return {"Message": {"PositionReport": body}, "MessageType": "PositionReport", "MetaData": meta}


def unflatten_static(rec: dict[str, Any]) -> dict[str, Any]:
    """A record of ``aisstream_ShipStaticData_flattened_*.json`` → envelope. The recorder kept no ShipName,
    position or UserID for static messages, so MetaData has only MMSI, MMSI_String and time_utc."""
    body = _drop_none({
        "Destination": rec.get("Destination"), "Dimension": rec.get("Dimension"), "Eta": rec.get("Eta"),
        "Type": rec.get("Type"), "UserID": rec.get("MMSI"),
    })
    meta = _drop_none({"MMSI": rec.get("MMSI"), "MMSI_String": rec.get("MMSI"), "time_utc": rec.get("timestamp")})
    return {"Message": {"ShipStaticData": body}, "MessageType": "ShipStaticData", "MetaData": meta}


def parse_concatenated_json(text: str) -> list[Any]:
    """Several JSON documents one after another (no array, no commas) → list of values."""
    decoder = json.JSONDecoder()
    values, index = [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return values
        value, index = decoder.raw_decode(text, index)
        values.append(value)


POSITION_FILE = "aisstream_PositionReport_flattened_2025-06-19.json"
STATIC_FILE = "aisstream_ShipStaticData_flattened_2025-06-19.json"
LEIXOES_FILE = "leixoesbridge_aisstream_concatenated_envelopes_2023-10-22.json"


def load_recorded_envelopes(fixtures_dir: Path | str) -> list[dict[str, Any]]:
    """Every recorded AISStream envelope in time order (stable): the two flattened 2025 files rebuilt into envelopes
    and the 25 raw 2023 Leixões envelopes. ``fixtures_dir`` is the fixtures root or its ``aisstream`` folder."""
    folder = Path(fixtures_dir)
    if not (folder / LEIXOES_FILE).exists() and (folder / "aisstream").is_dir():
        folder = folder / "aisstream"
    envelopes: list[dict[str, Any]] = []
    envelopes += [unflatten_position(r) for r in json.loads((folder / POSITION_FILE).read_text(encoding="utf-8"))]
    envelopes += [unflatten_static(r) for r in json.loads((folder / STATIC_FILE).read_text(encoding="utf-8"))]
    envelopes += parse_concatenated_json((folder / LEIXOES_FILE).read_text(encoding="utf-8"))
    return sorted(envelopes, key=lambda e: go_time_sort_key((e.get("MetaData") or {}).get("time_utc")))


def natural_key(envelope: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(mmsi, message_type, time_utc_raw)`` of a raw envelope, without normalizing it (replay/tests)."""
    meta = envelope.get("MetaData") if isinstance(envelope.get("MetaData"), dict) else {}
    message_type = envelope.get("MessageType")
    body = (envelope.get("Message") or {}).get(message_type) if isinstance(envelope.get("Message"), dict) else None
    body = body if isinstance(body, dict) else {}
    mmsi = mmsi_text(meta.get("MMSI")) or mmsi_text(meta.get("MMSI_String")) or mmsi_text(body.get("UserID"))
    return mmsi, message_type, meta.get("time_utc")
