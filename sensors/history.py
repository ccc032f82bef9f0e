"""Keep the Dagster instance bounded: delete old runs (and their event logs) per source, as the SLA table says.

A 5-minute SLA means hundreds of runs a day, and Dagster's event log grows without limit for frequent assets
(dagster-io/dagster#33785). Schedule and sensor ticks are pruned by ``retention`` in dagster.yaml; runs are pruned
here, daily, after each source's ``run_history``. A run is never deleted while it holds the latest materialization
of any asset or asset partition: deleting it would make Dagster forget that the partition exists (and a "missing
partitions" backfill would download it again). So a refresh that re-materializes the same snapshot or partition
every few minutes leaves one run per snapshot or partition, not one per tick.
"""

from datetime import UTC, datetime

import dagster as dg

from mycosoft_assets import sla

PRUNE_BATCH = 200


def holds_a_latest_materialization(instance: dg.DagsterInstance, run_id: str) -> bool:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None:
            continue
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=materialization.asset_key,
                                  asset_partitions=[materialization.partition] if materialization.partition else None),
            limit=1).records
        if latest and latest[0].run_id == run_id:
            return True
    return False


def prune_run_history(instance: dg.DagsterInstance, now: datetime | None = None) -> dict[str, int]:
    """Delete finished runs older than each source's ``run_history`` that no longer hold a latest
    materialization. Returns deleted runs per source."""
    now = now or datetime.now(UTC)
    deleted: dict[str, int] = {}
    for source, row in sla.SLA_TABLE.items():
        cutoff = now - row.run_history
        candidates: list[str] = []
        cursor = None
        while True:  # list first, delete after: a deleted run cannot serve as the paging cursor
            records = instance.get_run_records(dg.RunsFilter(tags={"source": source}, created_before=cutoff),
                                               limit=PRUNE_BATCH, cursor=cursor)
            if not records:
                break
            cursor = records[-1].dagster_run.run_id
            candidates.extend(r.dagster_run.run_id for r in records if r.dagster_run.is_finished)
        count = 0
        for run_id in candidates:
            if not holds_a_latest_materialization(instance, run_id):
                instance.delete_run(run_id)
                count += 1
        deleted[source] = count
    return deleted


@dg.op(description="Delete runs older than each source's run_history (SLA table) that hold no latest "
                   "materialization.")
def prune_instance_history(context) -> None:
    deleted = prune_run_history(context.instance)
    context.log.info(f"deleted runs: {deleted}")


@dg.job(description="Prune old runs and their event logs so the instance stays bounded.")
def prune_history_job() -> None:
    prune_instance_history()


prune_history_schedule = dg.ScheduleDefinition(
    name="prune_history_daily", job=prune_history_job, cron_schedule="17 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING)
