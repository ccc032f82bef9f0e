"""OpenSky: aircraft state vectors polled by ``mindex collect opensky``, compacted hourly, rolling 24 h."""

from typing import Any

from mycosoft_assets.opensky.normalize import NATURAL_KEY, STATE_SCHEMA, normalize_snapshot
from mycosoft_assets.streams import StreamDataset, build_stream_mindex, build_stream_mirror

SOURCE = "opensky"


def state_rows(line: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One spooled poll (``kind = "states"``: the request params and the raw body) -> state-vector rows."""
    if line.get("kind") != "states":
        return [], []
    return normalize_snapshot(line["record"]["body"], line["received_at"])


def state_records(line: dict[str, Any]) -> list[Any]:
    """The raw snapshot, profiled for schema drift (field names and JSON types of the response)."""
    return [line["record"]["body"]] if line.get("kind") == "states" else []


STATES = StreamDataset(
    name="opensky_state_vectors", source=SOURCE, schema=STATE_SCHEMA, natural_key=NATURAL_KEY, rows_of=state_rows,
    raw_of=state_records,
    description="OpenSky `/api/states/all` state vectors, one partition per hour of receipt, deduplicated across "
                "polls on (icao24, last_contact). Fed by `mindex collect opensky`; rolling 24 h.")

opensky_state_vectors = build_stream_mirror(STATES)
mindex_aircraft_states = build_stream_mindex(
    STATES, "aircraft_states", "mindex_aircraft_states",
    "MINDEX `aircraft_states` (natural key icao24 + last_contact) and view `aircraft_latest_states`; each hour "
    "replaced as a unit, rows older than 24 h removed and logged in `retention_log`.")
