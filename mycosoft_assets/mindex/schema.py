"""MINDEX tables and views (SQLAlchemy Core, dialect-neutral: SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mycosoft_assets.aisstream.normalize import NATURAL_KEY as AIS_NATURAL_KEY
from mycosoft_assets.aisstream.normalize import POSITION_SCHEMA as AIS_POSITION_SCHEMA
from mycosoft_assets.aisstream.normalize import STATIC_SCHEMA as AIS_STATIC_SCHEMA
from mycosoft_assets.opensky.normalize import NATURAL_KEY as OPENSKY_NATURAL_KEY
from mycosoft_assets.opensky.normalize import STATE_SCHEMA as OPENSKY_STATE_SCHEMA

metadata = sa.MetaData()

# One row per source record; natural key (source, source_id). GBIF rows that republish an iNaturalist
# observation carry republished_source/republished_id so the unified view can count it once.
observations = sa.Table(
    "observations", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("taxon_source_id", sa.String(64)),
    sa.Column("scientific_name", sa.Text),
    sa.Column("taxon_rank", sa.String(32)),
    sa.Column("kingdom", sa.String(64)),
    sa.Column("observed_on", sa.Date),
    sa.Column("observed_at", sa.DateTime(timezone=True)),
    sa.Column("latitude", sa.Float),
    sa.Column("longitude", sa.Float),
    sa.Column("coord_status", sa.String(16)),
    sa.Column("coordinate_uncertainty_m", sa.Float),
    sa.Column("quality", sa.String(64)),
    sa.Column("country_code", sa.String(8)),
    sa.Column("locality", sa.Text),
    sa.Column("observer", sa.Text),
    sa.Column("license", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("dataset_key", sa.String(64)),
    sa.Column("republished_source", sa.String(32)),
    sa.Column("republished_id", sa.String(64)),
    sa.Column("source_updated_at", sa.DateTime(timezone=True)),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("qc_flags", sa.Text),
)
sa.Index("ix_observations_republished", observations.c.republished_source, observations.c.republished_id)
sa.Index("ix_observations_name", observations.c.scientific_name)

taxa = sa.Table(
    "taxa", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("rank", sa.String(32)),
    sa.Column("kingdom", sa.String(64)),
    sa.Column("parent_id", sa.String(64)),
    sa.Column("ancestor_ids", sa.Text),
    sa.Column("is_active", sa.Boolean),
    sa.Column("taxonomic_status", sa.String(64)),
    # Case C04: inactive rows stay; resolved_taxon_id points at the current taxon after a swap or merge.
    sa.Column("resolved_taxon_id", sa.String(64)),
    sa.Column("taxon_ambiguous", sa.Boolean),
    sa.Column("common_name", sa.Text),
    sa.Column("qc_flags", sa.Text),
)

# --- NWS alerts: every message, keyed by its opaque id; chains via references ------------------------------
nws_alert_messages = sa.Table(
    "nws_alert_messages", metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("message_type", sa.String(16)),
    sa.Column("status", sa.String(16)),
    sa.Column("event", sa.Text),
    sa.Column("severity", sa.String(16)),
    sa.Column("certainty", sa.String(16)),
    sa.Column("urgency", sa.String(16)),
    sa.Column("category", sa.String(16)),
    sa.Column("headline", sa.Text),
    sa.Column("area_desc", sa.Text),
    sa.Column("sender", sa.Text),
    sa.Column("sender_name", sa.Text),
    sa.Column("sent", sa.DateTime(timezone=True)),
    sa.Column("effective", sa.DateTime(timezone=True)),
    sa.Column("onset", sa.DateTime(timezone=True)),
    sa.Column("expires", sa.DateTime(timezone=True)),
    sa.Column("ends", sa.DateTime(timezone=True)),
    sa.Column("references", sa.Text),
    sa.Column("geometry", sa.Text),
    sa.Column("vtec", sa.Text),
    sa.Column("chain_id", sa.String(200)),
    sa.Column("superseded_by", sa.String(200)),
    sa.Column("chain_cancelled", sa.Boolean),
    # Feed times (the feed's own `updated`), not wall-clock times, so the view is right in replay too.
    sa.Column("first_seen_at", sa.DateTime(timezone=True)),
    sa.Column("last_seen_at", sa.DateTime(timezone=True)),
    # Wall-clock time of the last fetch that contained it: two fetches can carry the same feed `updated`.
    sa.Column("last_fetched_at", sa.DateTime(timezone=True)),
    sa.Column("vanished_at", sa.DateTime(timezone=True)),
    sa.Column("qc_flags", sa.Text),
)
sa.Index("ix_nws_alert_messages_chain", nws_alert_messages.c.chain_id)

nws_alert_zones = sa.Table(
    "nws_alert_zones", metadata,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("code_type", sa.String(8), primary_key=True),  # UGC or SAME
    sa.Column("code", sa.String(16), primary_key=True),
)

nws_alert_fetches = sa.Table(
    "nws_alert_fetches", metadata,
    sa.Column("fetched_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("feed_updated", sa.DateTime(timezone=True)),
    sa.Column("alert_count", sa.Integer),
    sa.Column("filters", sa.Text),
)

# --- weather: one long forecast table for both providers ----------------------------------------------------
weather_forecasts = sa.Table(
    "weather_forecasts", metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("resolution", sa.String(16), primary_key=True),
    sa.Column("variable", sa.String(64), primary_key=True),
    sa.Column("valid_from", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("valid_to", sa.DateTime(timezone=True)),
    sa.Column("value", sa.Float),
    sa.Column("value_text", sa.Text),
    sa.Column("unit", sa.String(16)),
    sa.Column("value_raw", sa.Text),
    sa.Column("unit_raw", sa.String(32)),
    sa.Column("qc_flags", sa.Text),
)

weather_site_status = sa.Table(
    "weather_site_status", metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("checked_at", sa.DateTime(timezone=True)),
    sa.Column("last_success_at", sa.DateTime(timezone=True)),
    sa.Column("last_issued_at", sa.DateTime(timezone=True)),
    sa.Column("stale", sa.Boolean),
    sa.Column("last_error", sa.Text),
)

# --- air quality (OpenAQ v3): values always beside their unit ------------------------------------------------
aq_stations = sa.Table(
    "aq_stations", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text),
    sa.Column("locality", sa.Text),
    sa.Column("timezone", sa.String(64)),
    sa.Column("country_code", sa.String(8)),
    sa.Column("provider", sa.Text),
    sa.Column("owner", sa.Text),
    sa.Column("is_mobile", sa.Boolean),
    sa.Column("is_monitor", sa.Boolean),
    sa.Column("latitude", sa.Float),
    sa.Column("longitude", sa.Float),
    sa.Column("datetime_first", sa.DateTime(timezone=True)),
    sa.Column("datetime_last", sa.DateTime(timezone=True)),
    sa.Column("qc_flags", sa.Text),
)

aq_sensors = sa.Table(
    "aq_sensors", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("station_id", sa.BigInteger),
    sa.Column("name", sa.Text),
    sa.Column("parameter_id", sa.Integer),
    sa.Column("parameter", sa.String(32)),
    sa.Column("unit", sa.String(16)),
)

aq_latest = sa.Table(
    "aq_latest", metadata,
    sa.Column("sensor_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("station_id", sa.BigInteger),
    sa.Column("datetime_utc", sa.DateTime(timezone=True)),
    sa.Column("value", sa.Float),
    sa.Column("value_raw", sa.Float),
    sa.Column("is_missing_sentinel", sa.Boolean),
    sa.Column("qc_flags", sa.Text),
)

aq_measurements = sa.Table(
    "aq_measurements", metadata,
    sa.Column("sensor_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("datetime_from", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("station_id", sa.BigInteger),
    sa.Column("parameter", sa.String(32)),
    sa.Column("unit", sa.String(16)),
    sa.Column("value", sa.Float),
    sa.Column("value_raw", sa.Float),
    sa.Column("is_missing_sentinel", sa.Boolean),
    sa.Column("datetime_to", sa.DateTime(timezone=True)),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("qc_flags", sa.Text),
)

# Rows that failed a row-level rule at the MINDEX load (mycosoft_assets/quality/quarantine.py), never dropped.
quarantine = sa.Table(
    "quarantine", metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("natural_key", sa.String(300), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("record", sa.Text),
)

# --- Streams (OpenSky, AISStream): tables follow the mirrors' Arrow schemas, plus the partition (hour of receipt) --
_ARROW_TO_SQL = [
    (pa.types.is_timestamp, lambda t: sa.DateTime(timezone=True)),
    (pa.types.is_boolean, lambda t: sa.Boolean()),
    (pa.types.is_integer, lambda t: sa.BigInteger()),
    (pa.types.is_floating, lambda t: sa.Float()),
]


def table_from_arrow(name: str, schema: pa.Schema, key: tuple[str, ...]) -> sa.Table:
    """A MINDEX table with the columns of a mirror's Arrow schema, keyed by its natural key, plus
    ``partition_key`` (the hour of receipt), so a stream mirror and its table can never drift apart."""
    columns = []
    for field in schema:
        kind = next((make(field.type) for test, make in _ARROW_TO_SQL if test(field.type)), sa.Text())
        if field.name in key and isinstance(kind, sa.Text):
            kind = sa.String(64)
        columns.append(sa.Column(field.name, kind, primary_key=field.name in key, autoincrement=False))
    columns.append(sa.Column("partition_key", sa.String(32), index=True))
    return sa.Table(name, metadata, *columns)


aircraft_states = table_from_arrow("aircraft_states", OPENSKY_STATE_SCHEMA, OPENSKY_NATURAL_KEY)
vessel_positions = table_from_arrow("vessel_positions", AIS_POSITION_SCHEMA, AIS_NATURAL_KEY)
vessel_static = table_from_arrow("vessel_static", AIS_STATIC_SCHEMA, AIS_NATURAL_KEY)
sa.Index("ix_aircraft_states_received", aircraft_states.c.received_at)
sa.Index("ix_vessel_positions_received", vessel_positions.c.received_at)
sa.Index("ix_vessel_static_received", vessel_static.c.received_at)

# Every disconnect, silence or refused poll of a collector, with when the stream came back (NULL: still open).
stream_gaps = sa.Table(
    "stream_gaps", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("disconnected_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("reconnected_at", sa.DateTime(timezone=True)),
    sa.Column("seconds", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("partition_key", sa.String(32)),
)

# What the rolling-window retention removed, and when: nothing leaves MINDEX without a trace.
retention_log = sa.Table(
    "retention_log", metadata,
    sa.Column("removed_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("partition_key", sa.String(32), primary_key=True),
    sa.Column("rows", sa.BigInteger),
    sa.Column("cutoff", sa.DateTime(timezone=True)),
)

VIEWS = {
    # One row per active alert chain, i.e. per live head message: not superseded by a newer message, not a Cancel
    # and not cancelled, present in the latest successful fetch, and not past its end (`ends`, not `expires`) at
    # that fetch's feed time (the feed's own `updated`, so the view is right in replay too). A product that NWS
    # split by area has one live head, and so one row, per area.
    "nws_active_alerts": """
        SELECT m.*, f.feed_updated AS as_of FROM nws_alert_messages m
        JOIN (SELECT fetched_at, feed_updated FROM nws_alert_fetches
              WHERE fetched_at = (SELECT MAX(fetched_at) FROM nws_alert_fetches)) f
          ON m.last_fetched_at = f.fetched_at
        WHERE m.superseded_by IS NULL
          AND m.message_type <> 'Cancel'
          AND (m.chain_cancelled IS NULL OR m.chain_cancelled = FALSE)
          AND (m.ends IS NULL OR m.ends > f.feed_updated)
    """,
    # The latest issue per site, provider and resolution (NWS issues its period and hourly forecasts separately).
    "weather_latest_forecast": """
        SELECT f.*, s.stale AS site_stale, s.last_error AS site_last_error
        FROM weather_forecasts f
        JOIN (SELECT site, provider, resolution, MAX(issued_at) AS issued_at FROM weather_forecasts
              GROUP BY site, provider, resolution) l
          ON l.site = f.site AND l.provider = f.provider AND l.resolution = f.resolution
         AND l.issued_at = f.issued_at
        LEFT JOIN weather_site_status s ON s.site = f.site AND s.provider = f.provider
    """,
    # The newest real value (sentinels excluded) per station, parameter and unit.
    "aq_latest_values": """
        SELECT station_id, station_name, parameter, unit, value, datetime_utc, sensor_id FROM (
            SELECT st.id AS station_id, st.name AS station_name, se.parameter, se.unit, l.value, l.datetime_utc,
                   l.sensor_id, ROW_NUMBER() OVER (PARTITION BY st.id, se.parameter, se.unit
                                                   ORDER BY l.datetime_utc DESC, l.sensor_id) AS rn
            FROM aq_latest l
            JOIN aq_sensors se ON se.id = l.sensor_id
            JOIN aq_stations st ON st.id = se.station_id
            WHERE l.value IS NOT NULL
        ) ranked WHERE rn = 1
    """,
    # Aggregates read `value`, which is NULL for sentinels, and group by unit: units are never mixed.
    "aq_daily_means": """
        SELECT station_id, parameter, unit, DATE(datetime_from) AS day, AVG(value) AS mean_value,
               COUNT(value) AS n_values, SUM(CASE WHEN is_missing_sentinel THEN 1 ELSE 0 END) AS n_sentinels
        FROM aq_measurements
        GROUP BY station_id, parameter, unit, DATE(datetime_from)
    """,
    # The newest state vector per aircraft and the newest position per vessel in the rolling window.
    "aircraft_latest_states": """
        SELECT s.* FROM aircraft_states s
        JOIN (SELECT icao24, MAX(last_contact) AS last_contact FROM aircraft_states GROUP BY icao24) l
          ON l.icao24 = s.icao24 AND l.last_contact = s.last_contact
    """,
    # NULL times last on every database (PostgreSQL sorts NULLs first in DESC, SQLite last); the table's own
    # columns only, no ranking column.
    "vessel_latest_positions": f"""
        SELECT {", ".join(c.name for c in vessel_positions.columns)} FROM (
            SELECT p.*, ROW_NUMBER() OVER (PARTITION BY p.mmsi ORDER BY CASE WHEN p.time_utc IS NULL THEN 1 ELSE 0 END,
                                           p.time_utc DESC, p.message_type) AS rn
            FROM vessel_positions p
        ) ranked WHERE rn = 1
    """,
    # A GBIF occurrence that republishes an iNaturalist observation we also hold is counted once, as iNat.
    "observations_unified": """
        SELECT o.* FROM observations o
        WHERE NOT (
            o.source = 'gbif' AND o.republished_source = 'inaturalist' AND EXISTS (
                SELECT 1 FROM observations i
                WHERE i.source = 'inaturalist' AND i.source_id = o.republished_id))
    """,
    "species_observation_counts": """
        SELECT scientific_name, kingdom, COUNT(*) AS observations,
               SUM(CASE WHEN source = 'inaturalist' THEN 1 ELSE 0 END) AS from_inaturalist,
               SUM(CASE WHEN source = 'gbif' THEN 1 ELSE 0 END) AS from_gbif
        FROM observations_unified
        WHERE scientific_name IS NOT NULL
        GROUP BY scientific_name, kingdom
    """,
}


_ready: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and views, once per process and database. Never drops anything, so readers
    are not disturbed while a run starts."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _ready:
        return
    metadata.create_all(engine)
    create = "CREATE OR REPLACE VIEW" if engine.dialect.name == "postgresql" else "CREATE VIEW IF NOT EXISTS"
    with engine.begin() as conn:
        for name, body in VIEWS.items():
            conn.execute(sa.text(f"{create} {name} AS {body}"))
    _ready.add(key)
