"""Sync jobs and their schedules, derived from the SLA table.

Each partitioned source gets one job (mirror asset + its MINDEX table) and one schedule on the SLA row's
``refresh_cron``. A tick requests one run over the open partition (today, this week), so data stays inside the
SLA, and, when it was synced while open, the one before it, so it is closed with the updates that arrived after
its last refresh. The run key carries the tick time, so every tick is a new run (case C14: a plain partition
key as run key would dedupe forever).
"""


from __future__ import annotations

from datetime import datetime

import dagster as dg

from mycosoft_assets import sla

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

SYNC_JOBS = {
    "inaturalist": ("inaturalist_observations", "mindex_inaturalist_observations"),
    "gbif": ("gbif_occurrences", "mindex_gbif_occurrences"),
}
SNAPSHOT_JOBS = {
    "inaturalist": ("inaturalist_taxa",),
    "gbif": ("gbif_species",),
}


def refresh_partition_keys(source: str, now: datetime, materialized: set[str]) -> list[str]:
    """The partitions one refresh syncs: the open one (computed from ``now``, never assumed: case C15), and the
    one before it when it was synced while still open and must be closed with its last updates. When the one
    before was never synced, the open partition's window already starts where the last sync stopped."""
    keys = sla.partitions_def(source).get_partition_keys(current_time=now)
    if len(keys) > 1 and keys[-2] in materialized:
        return keys[-2:]
    return keys[-1:]


def mirror_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(SYNC_JOBS[source][0])


def range_tags(keys: list[str]) -> dict[str, str]:
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def sync_job(source: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"{source}_sync",
        selection=dg.AssetSelection.assets(*SYNC_JOBS[source]),
        description=f"Mirror {source} and update MINDEX for a range of partitions ({sla.sla(source).description}).",
        tags={"source": source},
    )


def snapshot_job(source: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"{source}_snapshot",
        selection=dg.AssetSelection.assets(*SNAPSHOT_JOBS[source]),
        description=f"Refresh the unpartitioned {source} snapshots ({', '.join(SNAPSHOT_JOBS[source])}).",
        tags={"source": source},
    )


def sync_schedule(source: str, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    row = sla.sla(source)

    @dg.schedule(name=f"{source}_refresh", job=job, cron_schedule=row.refresh_cron, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Refresh {source}'s open partitions every '{row.refresh_cron}' (SLA {row.sla}).")
    def _refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        materialized = context.instance.get_materialized_partitions(mirror_asset_key(source))
        keys = refresh_partition_keys(source, context.scheduled_execution_time, materialized)
        tick = context.scheduled_execution_time.isoformat()
        return dg.RunRequest(run_key=f"{source}:{keys[0]}..{keys[-1]}@{tick}", tags=range_tags(keys))

    return _refresh


def snapshot_schedule(source: str, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Snapshots refresh once per SLA period: daily for a 24 h SLA, weekly for 7 days."""
    row = sla.sla(source)
    cron = "30 4 * * *" if row.sla.days <= 1 else "30 4 * * 0"
    return dg.ScheduleDefinition(name=f"{source}_snapshot_refresh", job=job, cron_schedule=cron,
                                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)


def derived_job() -> dg.UnresolvedAssetJobDefinition:
    """The unpartitioned MINDEX tables; the automation sensor runs them after the mirrors change."""
    return dg.define_asset_job(
        name="mindex_derived",
        selection=dg.AssetSelection.assets("mindex_taxa", "mindex_observations_unified"),
        description="Rebuild MINDEX taxa and the unified observation views from the mirrors.",
    )


def build_jobs_and_schedules() -> tuple[list, list]:
    jobs, schedules = [derived_job()], []
    for source in SYNC_JOBS:
        job = sync_job(source)
        jobs.append(job)
        schedules.append(sync_schedule(source, job))
    for source in SNAPSHOT_JOBS:
        job = snapshot_job(source)
        jobs.append(job)
        schedules.append(snapshot_schedule(source, job))
    return jobs, schedules
