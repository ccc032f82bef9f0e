"""Keep the Dagster instance bounded: delete old runs (and their event logs) per source, as the SLA table says.

A 5-minute SLA means hundreds of runs a day, and Dagster's event log grows without limit for frequent assets
(dagster-io/dagster#33785). Schedule and sensor ticks are pruned by ``retention`` in dagster.yaml; runs are pruned
here, daily, after each source's ``run_history``. The latest materialization of every asset is always kept: a
run is only deleted when a newer run of the same job succeeded.
"""


from datetime import UTC, datetime

import dagster as dg

from mycosoft_assets import sla

PRUNE_BATCH = 500


def prune_run_history(instance: dg.DagsterInstance, now: datetime | None = None) -> dict[str, int]:
    """Delete runs older than each source's ``run_history``. Returns deleted runs per source."""
    now = now or datetime.now(UTC)
    deleted: dict[str, int] = {}
    for source, row in sla.SLA_TABLE.items():
        cutoff = now - row.run_history
        latest_ok = instance.get_run_records(
            dg.RunsFilter(tags={"source": source}, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
        keep = {r.dagster_run.run_id for r in latest_ok}
        count = 0
        while True:
            old = instance.get_run_records(dg.RunsFilter(tags={"source": source}, created_before=cutoff),
                                           limit=PRUNE_BATCH)
            old = [r for r in old if r.dagster_run.run_id not in keep and r.dagster_run.is_finished]
            if not old:
                break
            for record in old:
                instance.delete_run(record.dagster_run.run_id)
                count += 1
        deleted[source] = count
    return deleted


@dg.op(description="Delete runs older than each source's run_history (SLA table), keeping the latest success.")
def prune_instance_history(context: dg.OpExecutionContext) -> None:
    deleted = prune_run_history(context.instance)
    context.log.info(f"deleted runs: {deleted}")


@dg.job(description="Prune old runs and their event logs so the instance stays bounded.")
def prune_history_job() -> None:
    prune_instance_history()


prune_history_schedule = dg.ScheduleDefinition(
    name="prune_history_daily", job=prune_history_job, cron_schedule="17 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING)
