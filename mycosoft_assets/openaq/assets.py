"""OpenAQ v3: stations with their sensors, the latest value per sensor, and hourly measurements (SLA 1 hour)."""

import json
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

import dagster as dg

from mycosoft_assets import sla
from mycosoft_assets.assetkit import source_asset_args
from mycosoft_assets.mirror import (
    Dataset,
    MirrorStats,
    SyncConfig,
    cursor_before,
    fetch_plan,
    mirror_pages,
    report_materialization,
    run_windows,
    snapshot_window,
)
from mycosoft_assets.openaq.normalize import (
    LATEST_SCHEMA,
    LOCATION_SCHEMA,
    MEASUREMENT_SCHEMA,
    normalize_latest,
    normalize_location,
    normalize_measurement,
)
from resources.openaq import OpenAqClient
from resources.storage import PartitionStore

SOURCE = "openaq"

LOCATIONS = Dataset(name="openaq_locations", schema=LOCATION_SCHEMA, normalize=normalize_location,
                    natural_key="id")
LATEST = Dataset(name="openaq_latest", schema=LATEST_SCHEMA, normalize=normalize_latest, natural_key="sensor_id")
MEASUREMENTS = Dataset(name="openaq_measurements", schema=MEASUREMENT_SCHEMA,
                       normalize=lambda record: normalize_measurement(record, -1, None),
                       natural_key=("sensor_id", "datetime_from"), cursor_column="datetime_from")


class AreaConfig(dg.Config):
    """The area mirrored: a bbox (minLon,minLat,maxLon,maxLat, OpenAQ's order) or ISO country code. The default
    is the Guadalajara metropolitan area, which the recorded responses cover."""

    bbox: str | None = "-103.50,20.50,-103.20,20.80"
    iso: str | None = None

    def params(self) -> dict[str, str]:
        return {k: v for k, v in {"bbox": self.bbox, "iso": self.iso}.items() if v}


def stations(store: PartitionStore) -> list[dict[str, Any]]:
    """The latest locations snapshot: what the latest and measurement mirrors iterate over."""
    if store.manifest(LOCATIONS.name, "snapshot") is None:
        raise FileNotFoundError("openaq_locations has no snapshot yet: materialize it first")
    rows: list[dict[str, Any]] = []
    for batch in store.read_batches(LOCATIONS.name, "snapshot", columns=["id", "datetime_last", "sensors_json"]):
        rows.extend(batch.to_pylist())
    return rows


@dg.asset(**source_asset_args(
    SOURCE, name=LOCATIONS.name, partitioned=False,
    description="Snapshot of the OpenAQ v3 stations in the configured area, with their sensors "
                "(GET /v3/locations?bbox=…, page/limit paging until a short page).",
))
def openaq_locations(context: dg.AssetExecutionContext, config: AreaConfig, openaq: OpenAqClient,
                     mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    with mirror_store.open_run(LOCATIONS.name, LOCATIONS.schema, windows) as writer:
        stats = mirror_pages(writer, openaq.iter_locations(config.params()), LOCATIONS, log=context.log.info)
        counts = writer.commit(area=config.params())
    return report_materialization(context, windows, counts, stats, writer, mirror_store, openaq.base_url)


@dg.asset(**source_asset_args(
    SOURCE, name=LATEST.name, partitioned=False,
    description="The latest value of every sensor of the mirrored stations (GET /v3/locations/{id}/latest).",
), deps=[LOCATIONS.name])
def openaq_latest(context: dg.AssetExecutionContext, openaq: OpenAqClient,
                  mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    with mirror_store.open_run(LATEST.name, LATEST.schema, windows) as writer:
        pages = (openaq.latest(station["id"]) for station in stations(mirror_store))
        stats = mirror_pages(writer, pages, LATEST, log=context.log.info)
        counts = writer.commit()
    return report_materialization(context, windows, counts, stats, writer, mirror_store, openaq.base_url)


@dg.asset(**source_asset_args(
    SOURCE, name=MEASUREMENTS.name,
    description="Hourly measurements of every sensor of the mirrored stations "
                "(GET /v3/sensors/{id}/measurements?datetime_from&datetime_to). An hourly partition holds the "
                "measurements whose period starts in its hour (UTC); the first partition synced also holds what a "
                "first sync reaches: 90 days (SLA table) back from each station's last reading. Refreshes re-read "
                "the last 3 hours, since hours are published late.",
), deps=[LOCATIONS.name])
def openaq_measurements(context: dg.AssetExecutionContext, config: SyncConfig, openaq: OpenAqClient,
                        mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = run_windows(mirror_store, MEASUREMENTS.name, sla.partitions_def(SOURCE), context.partition_keys)
    row = sla.sla(SOURCE)
    plan = fetch_plan(mirror_store, MEASUREMENTS.name, windows, full_refresh=config.full_refresh,
                      event_cursor="datetime_from", late=row.late_arrival or timedelta(0))
    end = windows[-1].end
    lookback = row.initial_lookback
    total = MirrorStats()
    with mirror_store.open_run(MEASUREMENTS.name, MEASUREMENTS.schema, windows, route_column="datetime_from",
                               merge=plan.merge, key_columns=["sensor_id", "datetime_from"],
                               fetch_since=plan.since) as writer:
        for station in stations(mirror_store):
            start = plan.since
            if start is None:
                last = station["datetime_last"] or end
                start = min(last, end) - lookback
            if start >= end:
                continue
            for sensor in json.loads(station["sensors_json"] or "[]"):
                sensor_id = sensor.get("id") if isinstance(sensor, dict) else None
                if not isinstance(sensor_id, int):
                    continue
                dataset = replace(MEASUREMENTS, normalize=partial(normalize_measurement, sensor_id=sensor_id,
                                                                  location_id=station["id"]))
                stats = mirror_pages(writer, openaq.iter_measurements(sensor_id, start, end), dataset,
                                     keep=cursor_before("datetime_from", end, start))
                for field in ("pages", "records_received", "rows_written", "rejected", "duplicates",
                              "outside_window"):
                    setattr(total, field, getattr(total, field) + getattr(stats, field))
        counts = writer.commit(first_sync_lookback_days=lookback.days if plan.since is None else None)
    return report_materialization(context, windows, counts, total, writer, mirror_store, openaq.base_url)


