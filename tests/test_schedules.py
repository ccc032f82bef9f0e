"""Schedules derived from the SLA table: which partitions a tick refreshes, and run keys that carry the tick
(case C14: a plain partition key as run key would dedupe a re-sync forever)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from mycosoft_assets.definitions import defs
from sensors.schedules import RANGE_END_TAG, RANGE_START_TAG, refresh_partition_keys


def tick(schedule_name: str, when: datetime, instance: dg.DagsterInstance) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def(schedule_name)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    return requests[0]


def test_first_tick_refreshes_only_the_open_partition():
    with dg.instance_for_test() as instance:
        request = tick("inaturalist_refresh", datetime(2026, 12, 3, 6, 15, tzinfo=UTC), instance)
    assert request.tags[RANGE_START_TAG] == request.tags[RANGE_END_TAG] == "2026-12-03"


def test_a_synced_previous_partition_is_closed_by_the_next_tick():
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("inaturalist_observations", partition="2026-12-02"))
        request = tick("inaturalist_refresh", datetime(2026, 12, 3, 0, 15, tzinfo=UTC), instance)
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2026-12-02", "2026-12-03")


def test_every_tick_is_a_new_run_key():
    with dg.instance_for_test() as instance:
        first = tick("gbif_refresh", datetime(2026, 12, 3, 3, 45, tzinfo=UTC), instance)
        second = tick("gbif_refresh", datetime(2026, 12, 4, 3, 45, tzinfo=UTC), instance)
    assert first.tags[RANGE_END_TAG] == second.tags[RANGE_END_TAG] == "2026-11-29"
    assert first.run_key != second.run_key
    assert "2026-12-03T03:45" in first.run_key


def test_refresh_keys_are_computed_from_the_clock_not_assumed():
    keys = refresh_partition_keys("inaturalist", datetime(2024, 3, 10, 23, 59, tzinfo=UTC), set())
    assert keys == ["2024-03-10"]
    keys = refresh_partition_keys("gbif", datetime(2024, 3, 10, 0, 1, tzinfo=UTC), {"2024-03-03"})
    assert keys == ["2024-03-03", "2024-03-10"]


def test_schedules_start_running_with_the_daemon():
    for name in ("inaturalist_refresh", "gbif_refresh", "inaturalist_snapshot_refresh", "gbif_snapshot_refresh"):
        assert defs.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_sensor_def("mindex_automation").default_status == dg.DefaultSensorStatus.RUNNING
