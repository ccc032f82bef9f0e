"""What "good data" means per mirror dataset: one declaration per dataset, read by the generic checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pyarrow as pa

# Check names are constants: the UI, the per-source READMEs and the tests all use these.
NON_EMPTY = "non_empty"
UNIQUE_KEY = "unique_natural_key"
REQUIRED_FIELDS = "required_fields"
SCHEMA_DRIFT = "schema_drift"
VALUE_RANGES = "value_ranges"
TIMESTAMPS = "timestamps_utc_not_future"
COMPLETENESS = "completeness"
QUARANTINED = "quarantined_rows"
COLLECTOR_GAPS = "collector_gaps"

CHECK_DESCRIPTIONS = {
    NON_EMPTY: "The mirror holds rows (ERROR for sources that are never empty; partitions may be empty).",
    UNIQUE_KEY: "No natural key appears twice in the partition. Blocking: duplicates stop the MINDEX update.",
    REQUIRED_FIELDS: "Required columns are never NULL.",
    SCHEMA_DRIFT: "The partition matches the declared Arrow schema, and no source field the last materialization that "
                  "passed this check had was dropped or changed JSON type. Blocking: a schema break stops the MINDEX "
                  "update. New fields only warn.",
    VALUE_RANGES: "Numeric values are in range (coordinates, measurements); sentinel and flagged values are counted. "
                  "Warns.",
    TIMESTAMPS: "Timestamp columns are UTC and not in the future beyond a small clock skew.",
    COMPLETENESS: "Records fetched vs the total the source reported, where it reports one. Warns.",
    QUARANTINED: "Rows that failed row-level rules at the MINDEX load, kept in `quarantine`. Warns when any.",
    COLLECTOR_GAPS: "Stream collectors: no disconnect, silence or refused poll in the last hour lasted longer than "
                    "the SLA table's `max_gap` (an open gap counts until now). Fails with ERROR; not blocking.",
}

FUTURE_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class Rules:
    dataset: str
    schema: pa.Schema
    key_columns: tuple[str, ...]
    required: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()  # must be UTC and not in the future
    future_ok: tuple[str, ...] = ()  # UTC but may lie ahead (forecast validity, alert ends)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    never_empty: bool = False
    completeness: bool = False


COORDINATES = {"latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0)}
GBIF_COORDINATES = {"decimal_latitude": (-90.0, 90.0), "decimal_longitude": (-180.0, 180.0)}


def rules_for(dataset: str) -> Rules:
    """The declaration for one mirror dataset (schemas are imported lazily to keep this module light)."""
    from mycosoft_assets.aisstream.normalize import NATURAL_KEY as AIS_KEY
    from mycosoft_assets.aisstream.normalize import POSITION_SCHEMA, STATIC_SCHEMA
    from mycosoft_assets.gbif.normalize import OCCURRENCE_SCHEMA, SPECIES_SCHEMA
    from mycosoft_assets.inaturalist.normalize import OBSERVATION_SCHEMA, TAXON_SCHEMA
    from mycosoft_assets.nws_alerts.normalize import ALERT_SCHEMA
    from mycosoft_assets.openaq.normalize import LATEST_SCHEMA, LOCATION_SCHEMA, MEASUREMENT_SCHEMA
    from mycosoft_assets.opensky.normalize import NATURAL_KEY as OPENSKY_KEY
    from mycosoft_assets.opensky.normalize import STATE_SCHEMA
    from mycosoft_assets.weather.normalize import FORECAST_SCHEMA

    table = {
        "inaturalist_observations": Rules(
            "inaturalist_observations", OBSERVATION_SCHEMA, ("id",), required=("id", "updated_at"),
            timestamps=("updated_at", "created_at", "time_observed_at"), ranges=COORDINATES, completeness=True),
        "inaturalist_taxa": Rules("inaturalist_taxa", TAXON_SCHEMA, ("id",), required=("id", "name", "rank"),
                                  never_empty=True),
        "gbif_occurrences": Rules(
            "gbif_occurrences", OCCURRENCE_SCHEMA, ("key",), required=("key", "last_interpreted"),
            timestamps=("last_interpreted", "modified", "event_time"), ranges=GBIF_COORDINATES, completeness=True),
        "gbif_species": Rules("gbif_species", SPECIES_SCHEMA, ("key",), required=("key", "scientific_name"),
                              never_empty=True),
        "nws_alerts": Rules("nws_alerts", ALERT_SCHEMA, ("id",), required=("id", "message_type", "sent"),
                            timestamps=("sent",), future_ok=("effective", "onset", "expires", "ends")),
        "weather_forecasts": Rules(
            "weather_forecasts", FORECAST_SCHEMA,
            ("site", "provider", "issued_at", "resolution", "variable", "valid_from"),
            required=("site", "provider", "issued_at", "valid_from", "variable"), timestamps=("issued_at",),
            future_ok=("valid_from", "valid_to"), never_empty=True),
        "openaq_locations": Rules("openaq_locations", LOCATION_SCHEMA, ("id",), required=("id",),
                                  timestamps=("datetime_first", "datetime_last"), ranges=COORDINATES,
                                  never_empty=True),
        "openaq_latest": Rules("openaq_latest", LATEST_SCHEMA, ("sensor_id",), required=("sensor_id",),
                               timestamps=("datetime_utc",), ranges={**COORDINATES, "value": (-50.0, 50_000.0)}),
        "openaq_measurements": Rules(
            "openaq_measurements", MEASUREMENT_SCHEMA, ("sensor_id", "datetime_from"),
            required=("sensor_id", "datetime_from", "unit"), timestamps=("datetime_from",),
            future_ok=("datetime_to",), ranges={**COORDINATES, "value": (-50.0, 50_000.0)}),
        # Streams: partitions are hours of receipt; an hour with the collector stopped is legitimately empty.
        "opensky_state_vectors": Rules(
            "opensky_state_vectors", STATE_SCHEMA, OPENSKY_KEY, required=("icao24", "received_at"),
            timestamps=("time_position", "last_contact", "snapshot_time", "received_at"),
            ranges={**COORDINATES, "velocity": (0.0, 1_200.0), "baro_altitude": (-500.0, 25_000.0),
                    "geo_altitude": (-500.0, 25_000.0)}),
        "aisstream_vessel_positions": Rules(
            "aisstream_vessel_positions", POSITION_SCHEMA, AIS_KEY, required=("mmsi", "message_type", "received_at"),
            timestamps=("time_utc", "received_at"),
            ranges={**COORDINATES, "sog": (0.0, 102.2), "cog": (0.0, 359.99), "true_heading": (0, 359)}),
        "aisstream_vessel_static": Rules(
            "aisstream_vessel_static", STATIC_SCHEMA, AIS_KEY, required=("mmsi", "message_type", "received_at"),
            timestamps=("time_utc", "received_at")),
    }
    return table[dataset]
