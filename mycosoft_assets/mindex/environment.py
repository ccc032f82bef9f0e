"""Derived MINDEX tables for the environmental mirrors: NWS alerts, weather forecasts, air quality."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from mycosoft_assets import sla
from mycosoft_assets.mindex.schema import (
    aq_latest,
    aq_measurements,
    aq_sensors,
    aq_stations,
    ensure_schema,
    nws_alert_fetches,
    nws_alert_messages,
    nws_alert_zones,
    weather_forecasts,
    weather_site_status,
)
from mycosoft_assets.nws_alerts.assets import ALERTS
from mycosoft_assets.nws_alerts.normalize import chain_states
from mycosoft_assets.openaq.assets import LATEST, LOCATIONS, MEASUREMENTS
from mycosoft_assets.quality import quarantine
from mycosoft_assets.serving import refuse_partitions_that_failed_checks, served_from, serving_metadata
from mycosoft_assets.weather.assets import DATASET as WEATHER_DATASET
from resources.mindex_db import MindexDatabase, upsert
from resources.storage import PartitionStore

GROUP = "mindex"
STALE_FORECAST_AGE = timedelta(hours=24)


def _args(source: str, name: str, deps: list[str], description: str, partitioned: bool = False) -> dict[str, Any]:
    args: dict[str, Any] = {"name": name, "group_name": GROUP, "deps": deps, "description": description,
                            "freshness_policy": sla.freshness_policy(source), "kinds": {"sql"},
                            "tags": {"source": source}}
    if partitioned:
        args["partitions_def"] = sla.partitions_def(source)
        args["backfill_policy"] = dg.BackfillPolicy.single_run()
    return args


def _snapshot_rows(store: PartitionStore, dataset: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in store.read_batches(dataset, "snapshot"):
        rows.extend(batch.to_pylist())
    return rows


def _count(conn: sa.Connection, sql: str) -> int:
    return int(conn.execute(sa.text(sql)).scalar() or 0)


# --- NWS alerts ---------------------------------------------------------------------------------------------
ALERT_COLUMNS = [c.name for c in nws_alert_messages.columns if c.name not in (
    "chain_id", "superseded_by", "chain_cancelled", "first_seen_at", "last_seen_at", "last_fetched_at", "vanished_at")]


def as_utc(value: datetime | None) -> datetime | None:
    """Database datetimes: SQLite returns naive UTC, PostgreSQL aware values in the session's zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def load_alert_snapshot(conn: sa.Connection, rows: list[dict[str, Any]], feed_updated: datetime,
                        fetched_at: datetime, filters: str, retention: Any) -> dict[str, int]:
    """Upsert the fetched messages, then recompute chains, vanished alerts and the 24 h retention."""
    existing = {r.id: r for r in conn.execute(sa.select(
        nws_alert_messages.c.id, nws_alert_messages.c.first_seen_at, nws_alert_messages.c.last_seen_at))}
    latest_before = as_utc(conn.execute(sa.select(sa.func.max(nws_alert_fetches.c.feed_updated))).scalar())
    if latest_before is not None and latest_before > feed_updated:
        # Case C06: an edge served an older feed than one we already have. Keep the newer state.
        raise ValueError(f"feed updated {feed_updated.isoformat()} is older than the stored "
                         f"{latest_before.isoformat()}; refusing to move MINDEX backwards")
    rows, bad = quarantine.split("nws_alert_messages", rows)
    quarantine.store(conn, "nws_alerts", "snapshot", ["id"], bad, rows)
    messages = []
    for row in rows:
        message = {k: row[k] for k in ALERT_COLUMNS}
        previous = existing.get(row["id"])
        message["first_seen_at"] = previous.first_seen_at if previous is not None and previous.first_seen_at \
            else feed_updated
        message["last_seen_at"] = feed_updated
        message["last_fetched_at"] = fetched_at
        message["vanished_at"] = None
        messages.append(message)
    upsert(conn, nws_alert_messages, messages, ["id"])
    ids = [m["id"] for m in messages]
    for start in range(0, len(ids), 500):
        conn.execute(nws_alert_zones.delete().where(nws_alert_zones.c.alert_id.in_(ids[start:start + 500])))
    zones = [{"alert_id": r["id"], "code_type": kind, "code": code}
             for r in rows for kind, column in (("UGC", "ugc_codes"), ("SAME", "same_codes"))
             for code in sorted(set((r[column] or "").split(","))) if code]
    if zones:
        conn.execute(nws_alert_zones.insert(), zones)
    upsert(conn, nws_alert_fetches, [{"feed_updated": feed_updated, "fetched_at": fetched_at,
                                      "alert_count": len(rows), "filters": filters}], ["fetched_at"])

    # Chains over everything still cached, so a Cancel arriving later closes a chain we saw before.
    m = nws_alert_messages.c
    cached = conn.execute(sa.select(m.id, m.message_type, m.sent, m.references, m.chain_id, m.superseded_by,
                                    m.chain_cancelled)).all()
    states = chain_states((r.id, r.message_type, as_utc(r.sent), r.references) for r in cached)
    for r in cached:
        state = states[r.id]
        if (r.chain_id, r.superseded_by, r.chain_cancelled) != (state.chain_id, state.superseded_by,
                                                                  state.cancelled):
            conn.execute(nws_alert_messages.update().where(m.id == r.id).values(
                chain_id=state.chain_id, superseded_by=state.superseded_by, chain_cancelled=state.cancelled))
    # An alert whose chain just left the feed without a Cancel: mark it vanished (never delete, never "cancelled").
    vanished = conn.execute(
        nws_alert_messages.update()
        .where(nws_alert_messages.c.last_fetched_at < fetched_at, nws_alert_messages.c.vanished_at.is_(None),
               nws_alert_messages.c.superseded_by.is_(None), nws_alert_messages.c.message_type != "Cancel",
               sa.or_(nws_alert_messages.c.chain_cancelled.is_(None), nws_alert_messages.c.chain_cancelled.is_(False)))
        .values(vanished_at=feed_updated)).rowcount
    removed = 0
    if retention is not None:
        cutoff = feed_updated - retention
        old = [r.id for r in conn.execute(sa.select(nws_alert_messages.c.id).where(
            nws_alert_messages.c.last_seen_at < cutoff))]
        for start in range(0, len(old), 500):
            chunk = old[start:start + 500]
            conn.execute(nws_alert_zones.delete().where(nws_alert_zones.c.alert_id.in_(chunk)))
            conn.execute(nws_alert_messages.delete().where(nws_alert_messages.c.id.in_(chunk)))
        removed = len(old)
        conn.execute(nws_alert_fetches.delete().where(nws_alert_fetches.c.feed_updated < cutoff,
                                                      nws_alert_fetches.c.fetched_at < fetched_at))
    return {"messages": len(messages), "zones": len(zones), "vanished": vanished, "expired_by_retention": removed,
            "quarantined": len(bad)}


@dg.asset(**_args("nws_alerts", "mindex_nws_alerts", [ALERTS.name],
                  "NWS alert messages in MINDEX `nws_alert_messages` (+ `nws_alert_zones`, `nws_alert_fetches`), "
                  "chained by references; view `nws_active_alerts` has one row per active chain as of the latest "
                  "fetch. Messages are kept 24 h after they were last seen."))
def mindex_nws_alerts(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                      mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, ALERTS.name)
    ensure_schema(mindex_db.engine)
    manifest = mirror_store.manifest(ALERTS.name, "snapshot") or {}
    feed_updated = datetime.fromisoformat(manifest.get("feed_updated") or manifest["fetched_at"]).astimezone(UTC)
    rows = _snapshot_rows(mirror_store, ALERTS.name)
    with mindex_db.engine.begin() as conn:
        counts = load_alert_snapshot(conn, rows, feed_updated,
                                     datetime.fromisoformat(manifest["fetched_at"]).astimezone(UTC),
                                     json.dumps(manifest.get("filters") or {}), sla.retention("nws_alerts"))
    with mindex_db.engine.connect() as conn:
        active = _count(conn, "SELECT COUNT(*) FROM nws_active_alerts")
        cached = _count(conn, "SELECT COUNT(*) FROM nws_alert_messages")
    return dg.MaterializeResult(metadata={
        **serving_metadata(context, mirror_store, ALERTS.name),
        "dagster/row_count": counts["messages"], "active_alert_chains": active, "cached_messages": cached,
        "zones": counts["zones"], "vanished_without_cancel": counts["vanished"],
        "removed_by_retention": counts["expired_by_retention"], "feed_updated": feed_updated.isoformat(),
        "quarantined": counts["quarantined"],
        "database": mindex_db.describe(),
    })


# --- weather ------------------------------------------------------------------------------------------------
@dg.asset(**_args("weather", "mindex_weather_forecasts", [WEATHER_DATASET],
                  "Forecasts in MINDEX `weather_forecasts` (long format, both providers) and per site/provider "
                  "status in `weather_site_status`; view `weather_latest_forecast`. A failed site keeps its last "
                  "good forecast, marked stale; forecasts are kept 48 h except each site's latest."))
def mindex_weather_forecasts(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                             mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, WEATHER_DATASET)
    ensure_schema(mindex_db.engine)
    manifest = mirror_store.manifest(WEATHER_DATASET, "snapshot") or {}
    rows = _snapshot_rows(mirror_store, WEATHER_DATASET)
    checked_at = datetime.fromisoformat(manifest["fetched_at"]).astimezone(UTC)
    keys = ["site", "provider", "issued_at", "resolution", "variable", "valid_from"]
    issued: dict[tuple[str, str], datetime] = {}
    for row in rows:
        pair = (row["site"], row["provider"])
        issued[pair] = max(issued.get(pair, row["issued_at"]), row["issued_at"])
    # Case C06: an edge can serve a days-old forecast with a 200. Compare the issue time with the fetch time and
    # call an old forecast stale instead of fresh.
    # Served from the cache during an outage, a forecast's age counts until now, not until the last fetch.
    as_of = datetime.now(UTC) if served_from(context) == "cache" else checked_at
    status = [{"site": site, "provider": provider, "checked_at": checked_at, "last_success_at": checked_at,
               "last_issued_at": when, "stale": as_of - when > STALE_FORECAST_AGE,
               "last_error": f"forecast issued {when.isoformat()}, more than {STALE_FORECAST_AGE} before "
                             f"{'now (served from cache)' if as_of != checked_at else 'the fetch'}"
               if as_of - when > STALE_FORECAST_AGE else None}
              for (site, provider), when in issued.items()]
    failures = []
    for label, error in (manifest.get("site_errors") or {}).items():
        site, provider = label.split("/", 1)
        failures.append({"site": site, "provider": provider, "checked_at": checked_at, "stale": True,
                         "last_error": json.dumps(error)})
    retention = sla.retention("weather")
    rows, bad = quarantine.split("weather_forecasts", rows)
    with mindex_db.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            upsert(conn, weather_forecasts, rows[start:start + 5000], keys)
        quarantine.store(conn, WEATHER_DATASET, "snapshot", keys, bad, rows)
        upsert(conn, weather_site_status, status, ["site", "provider"])
        for failure in failures:  # keep last_success_at / last_issued_at: the last good forecast stays
            updated = conn.execute(weather_site_status.update().where(
                weather_site_status.c.site == failure["site"], weather_site_status.c.provider == failure["provider"]
            ).values(checked_at=checked_at, stale=True, last_error=failure["last_error"])).rowcount
            if not updated:
                conn.execute(weather_site_status.insert().values(**failure))
        removed = 0
        if retention is not None:
            w = weather_forecasts.c
            latest = sa.select(w.site, w.provider, w.resolution, sa.func.max(w.issued_at).label("issued_at")).group_by(
                w.site, w.provider, w.resolution).subquery()
            keep_latest = sa.exists().where(latest.c.site == w.site, latest.c.provider == w.provider,
                                            latest.c.resolution == w.resolution, latest.c.issued_at == w.issued_at)
            removed = conn.execute(weather_forecasts.delete().where(
                weather_forecasts.c.issued_at < checked_at - retention, ~keep_latest)).rowcount
    with mindex_db.engine.connect() as conn:
        latest_rows = _count(conn, "SELECT COUNT(*) FROM weather_latest_forecast")
        stale = _count(conn, "SELECT COUNT(*) FROM weather_site_status WHERE stale")
    return dg.MaterializeResult(metadata={
        **serving_metadata(context, mirror_store, WEATHER_DATASET),
        "dagster/row_count": len(rows), "latest_forecast_rows": latest_rows, "stale_site_providers": stale,
        "quarantined": len(bad),
        "removed_by_retention": removed, "database": mindex_db.describe(),
    })


# --- air quality --------------------------------------------------------------------------------------------
@dg.asset(**_args("openaq", "mindex_air_quality", [LOCATIONS.name, LATEST.name],
                  "OpenAQ stations, sensors and the latest value per sensor in MINDEX (`aq_stations`, "
                  "`aq_sensors`, `aq_latest`); view `aq_latest_values` gives the newest real value per station, "
                  "parameter and unit (sentinels excluded)."))
def mindex_air_quality(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                       mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, LOCATIONS.name)
    refuse_partitions_that_failed_checks(context, LATEST.name)
    ensure_schema(mindex_db.engine)
    locations = _snapshot_rows(mirror_store, LOCATIONS.name)
    stations = [{c.name: row[c.name] for c in aq_stations.columns} for row in locations]
    sensors = []
    for row in locations:
        for sensor in json.loads(row["sensors_json"] or "[]"):
            parameter = sensor.get("parameter") or {}
            if isinstance(sensor.get("id"), int):
                sensors.append({"id": sensor["id"], "station_id": row["id"], "name": sensor.get("name"),
                                "parameter_id": parameter.get("id"), "parameter": parameter.get("name"),
                                "unit": parameter.get("units")})
    # A sentinel as the latest reading does not replace the newest real value (it stays in the mirror).
    latest = [{"sensor_id": r["sensor_id"], "station_id": r["location_id"], "datetime_utc": r["datetime_utc"],
               "value": r["value"], "value_raw": r["value_raw"], "is_missing_sentinel": r["is_missing_sentinel"],
               "qc_flags": r["qc_flags"]} for r in _snapshot_rows(mirror_store, LATEST.name)
              if not r["is_missing_sentinel"]]
    with mindex_db.engine.begin() as conn:
        upsert(conn, aq_stations, stations, ["id"], keep_known=["latitude", "longitude"])  # 0,0 is not a move
        upsert(conn, aq_sensors, sensors, ["id"])
        upsert(conn, aq_latest, latest, ["sensor_id"], newer_column="datetime_utc")
    with mindex_db.engine.connect() as conn:
        values = _count(conn, "SELECT COUNT(*) FROM aq_latest_values")
    return dg.MaterializeResult(metadata={
        **serving_metadata(context, mirror_store, LOCATIONS.name),
        "dagster/row_count": len(stations) + len(sensors) + len(latest), "stations": len(stations),
        "sensors": len(sensors), "latest_values": len(latest), "latest_values_view_rows": values,
        "database": mindex_db.describe(),
    })


@dg.asset(**_args("openaq", "mindex_air_quality_measurements", [MEASUREMENTS.name],
                  "OpenAQ hourly measurements in MINDEX `aq_measurements` (natural key sensor + period start); "
                  "view `aq_daily_means` averages real values only, per unit.", partitioned=True))
def mindex_air_quality_measurements(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                                    mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, MEASUREMENTS.name, list(context.partition_keys))
    ensure_schema(mindex_db.engine)
    columns = [c.name for c in aq_measurements.columns if c.name not in ("station_id", "partition_key")]
    counts = {}
    for key in context.partition_keys:
        sent = 0
        with mindex_db.engine.begin() as conn:
            for batch in mirror_store.read_batches(MEASUREMENTS.name, key):
                rows = [{**{c: r[c] for c in columns}, "station_id": r["location_id"], "partition_key": key}
                        for r in batch.to_pylist()]
                good, bad = quarantine.split("aq_measurements", rows)
                sent += upsert(conn, aq_measurements, good, ["sensor_id", "datetime_from"],
                               missing_flag="is_missing_sentinel")  # a later -999 never erases a real value
                quarantine.store(conn, MEASUREMENTS.name, key, ["sensor_id", "datetime_from"], bad, good)
        counts[key] = sent
        window = mirror_store.stored_window(MEASUREMENTS.name, key)
        context.add_asset_metadata({"dagster/row_count": sent,
                                    "source_window": window.describe() if window else "unknown"}, partition_key=key)
    return dg.MaterializeResult(metadata={
        **serving_metadata(context, mirror_store, MEASUREMENTS.name, list(context.partition_keys)),
        "run_row_count": sum(counts.values()), "database": mindex_db.describe()})
