"""AISStream: vessel positions and static data from the websocket (``mindex collect aisstream``), hourly, 24 h."""

from typing import Any

from mycosoft_assets.aisstream.normalize import (
    NATURAL_KEY,
    POSITION_SCHEMA,
    STATIC_SCHEMA,
    normalize_envelope,
)
from mycosoft_assets.common import RecordRejected
from mycosoft_assets.streams import StreamDataset, build_stream_mindex, build_stream_mirror

SOURCE = "aisstream"


def _rows_of(wanted: str):
    def rows(line: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        kind = line.get("kind")
        if kind == "malformed":
            # A frame that was not JSON: kept in the spool, counted once (by the positions dataset).
            return [], [{"reason": "malformed frame", "record": line["record"]}] if wanted == "position" else []
        if kind != "message":
            return [], []
        try:
            normalized = normalize_envelope(line["record"], line["received_at"])
        except RecordRejected as exc:
            return [], [{"reason": str(exc), "record": line["record"]}] if wanted == "position" else []
        if normalized is None or normalized[0] != wanted:
            return [], []
        return [normalized[1]], []

    return rows


def _messages(line: dict[str, Any]) -> list[Any]:
    return [line["record"]] if line.get("kind") == "message" else []


POSITIONS = StreamDataset(
    name="aisstream_vessel_positions", source=SOURCE, schema=POSITION_SCHEMA, natural_key=NATURAL_KEY,
    rows_of=_rows_of("position"), raw_of=_messages,
    description="AISStream position reports (Class A and B), one partition per hour of receipt, deduplicated "
                "across reconnects on (MMSI, message type, time_utc). Fed by `mindex collect aisstream`; 24 h.")
STATIC = StreamDataset(
    name="aisstream_vessel_static", source=SOURCE, schema=STATIC_SCHEMA, natural_key=NATURAL_KEY,
    rows_of=_rows_of("static"), raw_of=_messages,
    description="AISStream ship static data (name, call sign, type, dimensions, destination, ETA), hourly; 24 h.")

aisstream_vessel_positions = build_stream_mirror(POSITIONS)
aisstream_vessel_static = build_stream_mirror(STATIC)
mindex_vessel_positions = build_stream_mindex(
    POSITIONS, "vessel_positions", "mindex_vessel_positions",
    "MINDEX `vessel_positions` (MMSI as 9-character text) and view `vessel_latest_positions`; gaps of the stream "
    "in `stream_gaps`; rows older than 24 h removed and logged in `retention_log`.")
mindex_vessel_static = build_stream_mindex(
    STATIC, "vessel_static", "mindex_vessel_static",
    "MINDEX `vessel_static`: ship static reports; rows older than 24 h removed and logged in `retention_log`.")
