"""Jobs and their schedules, derived from the SLA table.

Each source has a refresh job (its mirror asset and MINDEX table) on the SLA row's ``refresh_cron``, and may have
a snapshot job (reference data: taxa, species, stations) refreshed once per SLA period. For a partitioned source a
tick requests one run over the open partition (today, this week, this hour), so data stays inside the SLA, and,
when it was synced while open, the one before it, so it is closed with the updates that arrived after its last
refresh. The run key carries the tick time, so every tick is a new run (case C14: a plain partition key as run
key would dedupe forever).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from mycosoft_assets import sla

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# source -> assets refreshed on the SLA cadence (the first one is the mirror whose partitions are tracked)
REFRESH_ASSETS: dict[str, tuple[str, ...]] = {
    "inaturalist": ("inaturalist_observations", "mindex_inaturalist_observations"),
    "gbif": ("gbif_occurrences", "mindex_gbif_occurrences"),
    "nws_alerts": ("nws_alerts", "mindex_nws_alerts"),
    "weather": ("weather_forecasts", "mindex_weather_forecasts"),
    "openaq": ("openaq_measurements", "mindex_air_quality_measurements"),
    "opensky": ("opensky_state_vectors", "mindex_aircraft_states"),
    "aisstream": ("aisstream_vessel_positions", "aisstream_vessel_static", "mindex_vessel_positions",
                  "mindex_vessel_static"),
}
# source -> unpartitioned reference snapshots; they run before the refresh job in the main job
SNAPSHOT_ASSETS: dict[str, tuple[str, ...]] = {
    "inaturalist": ("inaturalist_taxa",),
    "gbif": ("gbif_species",),
    "openaq": ("openaq_locations", "openaq_latest", "mindex_air_quality"),
}
DERIVED_JOB = "mindex_derived"


def refresh_partition_keys(source: str, now: datetime, materialized: set[str]) -> list[str]:
    """The partitions one refresh syncs: the open one (computed from ``now``, never assumed: case C15), and the
    one before it when it was synced while still open and must be closed with its last updates. When the one
    before was never synced, the open partition's window already starts where the last sync stopped."""
    keys = sla.partitions_def(source).get_partition_keys(current_time=now)
    late = sla.sla(source).late_arrival
    if late is not None:
        # Event-time partitions: also re-read every synced partition that late records may still reach.
        partitions = sla.partitions_def(source)
        recent = [k for k in keys[:-1] if k in materialized
                  and partitions.time_window_for_partition_key(k).end > now - late]
        if recent:
            return keys[keys.index(recent[0]):]
    if len(keys) > 1 and keys[-2] in materialized:
        return keys[-2:]
    return keys[-1:]


def mirror_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(REFRESH_ASSETS[source][0])


def range_tags(keys: list[str]) -> dict[str, str]:
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def stream_datasets(source: str) -> list:
    """The stream datasets of a collector-fed source (empty for API-polled sources)."""
    if source == "opensky":
        from mycosoft_assets.opensky.assets import STATES

        return [STATES]
    if source == "aisstream":
        from mycosoft_assets.aisstream.assets import POSITIONS, STATIC

        return [POSITIONS, STATIC]
    return []


def refresh_tags(source: str, now: datetime, instance: dg.DagsterInstance) -> dict[str, str]:
    """Tags of the run that refreshes ``source`` now: a partition range, or nothing for a snapshot source."""
    if sla.partitions_def(source) is None:
        return {}
    datasets = stream_datasets(source)
    if datasets:
        # Stream hours are compacted from the collector's spool: every hour whose batches changed, in order.
        from mycosoft_assets.resources import build_resources
        from mycosoft_assets.streams import stream_partition_keys

        return range_tags(stream_partition_keys(build_resources(resolved=True)["mirror_store"], datasets, now))
    materialized = instance.get_materialized_partitions(mirror_asset_key(source))
    return range_tags(refresh_partition_keys(source, now, materialized))


def refresh_job(source: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"{source}_sync",
        selection=dg.AssetSelection.assets(*REFRESH_ASSETS[source]),
        description=f"Mirror {source} and update MINDEX ({sla.sla(source).description}).",
        tags={"source": source},
    )


def snapshot_job(source: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"{source}_snapshot",
        selection=dg.AssetSelection.assets(*SNAPSHOT_ASSETS[source]),
        description=f"Refresh {source}'s reference snapshots ({', '.join(SNAPSHOT_ASSETS[source])}).",
        tags={"source": source},
    )


def derived_job() -> dg.UnresolvedAssetJobDefinition:
    """The unpartitioned MINDEX tables over several sources; the automation sensor runs them after the mirrors."""
    return dg.define_asset_job(
        name=DERIVED_JOB,
        selection=dg.AssetSelection.assets("mindex_taxa", "mindex_observations_unified"),
        description="Rebuild MINDEX taxa and the unified observation views from the mirrors.",
    )


def refresh_schedule(source: str, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    row = sla.sla(source)

    @dg.schedule(name=f"{source}_refresh", job=job, cron_schedule=row.refresh_cron, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Refresh {source} on '{row.refresh_cron}' (SLA {row.sla}).")
    def _refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tags = refresh_tags(source, context.scheduled_execution_time, context.instance)
        span = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}" if tags else "snapshot"
        tick = context.scheduled_execution_time.isoformat()
        return dg.RunRequest(run_key=f"{source}:{span}@{tick}", tags=tags)

    return _refresh


def snapshot_cron(source: str) -> str:
    """Reference data refreshes once per SLA period: with the refresh for sub-daily SLAs, else daily or weekly."""
    row = sla.sla(source)
    if row.sla <= timedelta(hours=1):
        return row.refresh_cron
    return "30 4 * * *" if row.sla <= timedelta(days=1) else "30 4 * * 0"


def snapshot_schedule(source: str, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name=f"{source}_snapshot_refresh", job=job, cron_schedule=snapshot_cron(source),
                                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)


def build_jobs_and_schedules() -> tuple[list, list]:
    jobs, schedules = [derived_job()], []
    for source in REFRESH_ASSETS:
        job = refresh_job(source)
        jobs.append(job)
        schedules.append(refresh_schedule(source, job))
    for source in SNAPSHOT_ASSETS:
        job = snapshot_job(source)
        jobs.append(job)
        schedules.append(snapshot_schedule(source, job))
    return jobs, schedules


def main_job_plan(now: datetime, instance: dg.DagsterInstance) -> list[tuple[str, dict[str, str], str]]:
    """The runs the schedules would request now, in dependency order: per source its snapshots, then its
    refresh; then the derived tables. (job name, tags, what it covers)"""
    steps = []
    for source in dict.fromkeys([*SNAPSHOT_ASSETS, *REFRESH_ASSETS]):
        if source in SNAPSHOT_ASSETS:
            steps.append((f"{source}_snapshot", {}, "snapshot"))
        if source in REFRESH_ASSETS:
            tags = refresh_tags(source, now, instance)
            steps.append((f"{source}_sync", tags,
                          f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}" if tags else "snapshot"))
    steps.append((DERIVED_JOB, {}, "-"))
    return steps
