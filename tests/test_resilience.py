"""Resilience sensors: fallback from the cache on API failures only, truthful metadata, healing with versioned run
keys (case C14), probes that back off. Sensors are evaluated with ``build_sensor_context(cursor=...)`` against a
real (temporary) instance, on runs executed against the replay server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from mindex.status import collect_status
from mycosoft_assets.serving import RECOVERY_SOURCE_TAG, SERVED_FROM_TAG, SOURCE_ERROR_TAG
from sensors.resilience import (
    HEAL_TIMEOUT_S,
    ApiHealth,
    ResilienceState,
    contiguous,
    failure_cause,
    update_health,
)
from sensors.schedules import refresh_tags


@pytest.fixture
def platform(replay, data_dir: Path, tmp_path: Path, monkeypatch):
    """Definitions pointed at the replay server, a temporary instance, and the iNaturalist sync's tags now."""
    for source in replay.sources:
        monkeypatch.setenv(f"{source.upper()}_BASE_URL", replay.base_url(source))
    monkeypatch.setenv("OPENAQ_API_KEY", "test-key")
    monkeypatch.setenv("MINDEX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MINDEX_REQUEST_BUDGET", "off")
    monkeypatch.setenv("MINDEX_PROBE_INTERVAL_S", "5")
    from mycosoft_assets.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs, instance


def run(defs, instance, job: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def tick(defs, instance, source: str, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(f"{source}_resilience")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor(context)


def test_a_run_that_fails_on_the_api_is_served_from_cache_then_healed(platform, replay):
    defs, instance = platform
    tags = refresh_tags("inaturalist", datetime.now(UTC), instance)
    assert run(defs, instance, "inaturalist_sync", tags).success  # live: the cache now holds today's partition

    # First tick: the API answers, nothing failed, nothing to do.
    first = tick(defs, instance, "inaturalist", None)
    assert first.run_requests == []
    state = ResilienceState.load(first.cursor)
    assert state.health["inaturalist"].state == "up"

    replay.set_fault("inaturalist", "down")
    failed = run(defs, instance, "inaturalist_sync", tags)
    assert not failed.success
    assert failure_cause(instance, failed.run_id).startswith("SourceUnreachable: inaturalist: cannot connect")

    second = tick(defs, instance, "inaturalist", first.cursor)
    assert len(second.run_requests) == 1
    fallback = second.run_requests[0]
    assert fallback.job_name == "inaturalist_fallback"
    assert fallback.tags[SERVED_FROM_TAG] == "cache"
    assert "SourceUnreachable" in fallback.tags[SOURCE_ERROR_TAG]
    assert fallback.run_key == f"fallback:{failed.run_id}:{tags['dagster/asset_partition_range_start']}.." \
                               f"{tags['dagster/asset_partition_range_end']}"
    state = ResilienceState.load(second.cursor)
    assert state.health["inaturalist"].state == "down"
    assert [c.key for c in state.cached.values()] == [tags["dagster/asset_partition_range_start"]]
    # The same failed run is never handled twice (the cursor moved in the same evaluation).
    assert tick(defs, instance, "inaturalist", second.cursor).run_requests == []

    # The fallback run serves MINDEX from the cache and says so; the mirror is not re-materialized.
    served = run(defs, instance, "inaturalist_fallback", {**fallback.tags})
    assert served.success
    metadata = served.asset_materializations_for_node("mindex_inaturalist_observations")[-1].metadata
    assert metadata["served_from"].value == "cache"
    assert "SourceUnreachable" in metadata["source_error"].value
    assert metadata["cached_age_s"].value >= 0
    assert served.asset_materializations_for_node("inaturalist_observations") == []
    # `mindex status` says the same while the source is down: MINDEX from cache with its age, the mirror live
    # but no newer than its last live fetch, and the source's error.
    status = {row.asset: row for row in collect_status(defs, instance)}
    served_row, mirror_row = status["mindex_inaturalist_observations"], status["inaturalist_observations"]
    assert served_row.served_from == "cache" and served_row.cached_age.endswith("s")
    assert "SourceUnreachable" in served_row.last_error and "SourceUnreachable" in mirror_row.last_error
    assert mirror_row.served_from == "live" and mirror_row.freshness == "fresh"
    assert "served_from=cache" in served_row.line()
    # The cached data keeps ageing while the source stays down, without another fallback run.
    later = {row.asset: row for row in collect_status(defs, instance, now=datetime.now(UTC) + timedelta(minutes=90))}
    assert later["mindex_inaturalist_observations"].cached_age in ("90m", "91m")  # the data was seconds old

    # The API comes back: the next probe (due after its backoff) sees it up and a live heal is requested.
    replay.clear_fault("inaturalist")
    state = ResilienceState.load(second.cursor)
    state.health["inaturalist"].next_probe_at = 0
    healed = tick(defs, instance, "inaturalist", state.dump())
    assert [r.job_name for r in healed.run_requests] == ["inaturalist_sync"]
    heal = healed.run_requests[0]
    version = int(ResilienceState.load(second.cursor).cached[next(iter(state.cached))].since)
    assert heal.run_key.endswith(f":{version}") and heal.run_key.startswith("heal:inaturalist_sync:")
    assert tick(defs, instance, "inaturalist", healed.cursor).run_requests == []  # requested once
    # A heal run that died without healing is requested again after HEAL_TIMEOUT_S, under a new run key (Dagster
    # would drop a repeated one); that run is the one executed below.
    stalled = ResilienceState.load(healed.cursor)
    for cached in stalled.cached.values():
        cached.heal_requested_at -= HEAL_TIMEOUT_S + 1
    retried = tick(defs, instance, "inaturalist", stalled.dump())
    assert [r.run_key for r in retried.run_requests] == [f"{heal.run_key}:retry1"]
    healed = retried
    assert run(defs, instance, "inaturalist_sync", heal.tags).success
    after_tick = tick(defs, instance, "inaturalist", healed.cursor)
    assert ResilienceState.load(after_tick.cursor).cached == {}
    # The UI learns it on that tick, not at the next heartbeat: an observation says nothing is served from cache.
    [observed] = after_tick.asset_events
    assert observed.metadata["partitions_served_from_cache"].value == []
    assert observed.metadata["inaturalist_health"].value == "up"
    status = {row.asset: row for row in collect_status(defs, instance)}
    assert status["mindex_inaturalist_observations"].served_from == "live"
    assert status["mindex_inaturalist_observations"].cached_age == "-"
    assert status["mindex_inaturalist_observations"].last_error == "-"

    # A later outage of the same partition is served and healed again: a new data version, a new run key (C14).
    replay.set_fault("inaturalist", "down")
    again = run(defs, instance, "inaturalist_sync", tags)
    replay.clear_fault("inaturalist")
    state = ResilienceState.load(tick(defs, instance, "inaturalist", after_tick.cursor).cursor)
    state.health["inaturalist"].next_probe_at = 0
    reheal = tick(defs, instance, "inaturalist", state.dump()).run_requests
    assert [r.job_name for r in reheal] == ["inaturalist_sync"] and reheal[0].run_key != heal.run_key
    assert again.run_id not in reheal[0].run_key and reheal[0].run_key.startswith("heal:inaturalist_sync:")


def test_probes_back_off_while_down_and_wait_out_a_rate_limit():
    health = ApiHealth()
    down = ("down", 3.0, "SourceUnreachable: refused", None)
    waits = []
    now = 1000.0
    for _ in range(5):
        update_health(health, down, now, interval=30)
        waits.append(health.next_probe_at - now)
    assert waits == [30, 60, 120, 120, 120]  # doubles, capped at 4x: never hammers a down API
    assert update_health(health, ("up", 2.0, None, None), now, interval=30)
    assert health.state == "up" and health.failures == 0 and health.next_probe_at == now + 30
    update_health(health, ("rate_limited", 2.0, "429", 3600.0), now, interval=30)
    assert health.next_probe_at == now + 3600  # Retry-After wins over the probe interval


def test_fallback_ranges_are_contiguous():
    ordered = ["a", "b", "c", "d", "e"]
    assert contiguous(["e", "a", "b", "d"], ordered) == [["a", "b"], ["d", "e"]]
    assert json.loads(ResilienceState().dump())["cached"] == {}


def test_a_failed_reference_snapshot_of_a_partitioned_source_is_served_from_cache(platform, replay):
    """OpenAQ is hourly, but its stations are an unpartitioned snapshot: a failed `openaq_snapshot` run (no
    partition tags) is served from the cached snapshot and healed as one, not lost for want of a partition."""
    defs, instance = platform
    assert run(defs, instance, "openaq_snapshot", {}).success
    first = tick(defs, instance, "openaq", None)
    assert first.run_requests == []

    replay.set_fault("openaq", "http_5xx", count=50)
    failed = run(defs, instance, "openaq_snapshot", {})
    assert not failed.success and failure_cause(instance, failed.run_id).startswith("ServerError")
    second = tick(defs, instance, "openaq", first.cursor)
    assert [(r.job_name, r.run_key) for r in second.run_requests] == [
        ("openaq_snapshot_fallback", f"fallback:{failed.run_id}:snapshot..snapshot")]
    assert "dagster/asset_partition_range_start" not in second.run_requests[0].tags
    assert second.run_requests[0].tags[RECOVERY_SOURCE_TAG] == "openaq"
    assert list(ResilienceState.load(second.cursor).cached) == ["openaq_snapshot|snapshot"]

    served = run(defs, instance, "openaq_snapshot_fallback", dict(second.run_requests[0].tags))
    assert served.success
    assert served.asset_materializations_for_node("mindex_air_quality")[-1].metadata["served_from"].value == "cache"

    replay.clear_fault("openaq")
    state = ResilienceState.load(second.cursor)
    state.health["openaq"].next_probe_at = 0
    healed = tick(defs, instance, "openaq", state.dump())
    assert [r.job_name for r in healed.run_requests] == ["openaq_snapshot"]
    assert healed.run_requests[0].run_key.startswith("heal:openaq_snapshot:snapshot..snapshot:")


def test_the_instance_runs_one_recovery_run_per_source_and_fallbacks_in_process(platform):
    """dagster.yaml limits runs by the tag the sensor puts on fallback and heal runs; a fallback reads only the
    local cache, so it runs its steps in process (no subprocess per step between an outage and MINDEX served)."""
    import yaml

    from mycosoft_assets.settings import REPO_ROOT

    defs, _ = platform
    limits = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": RECOVERY_SOURCE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    for source in ("inaturalist", "gbif", "nws_alerts", "weather", "openaq"):
        job = defs.resolve_job_def(f"{source}_fallback")
        assert job.executor_def.name == dg.in_process_executor.name
        assert job.tags[SERVED_FROM_TAG] == "cache"


def test_a_fallback_never_loads_a_snapshot_that_failed_a_blocking_check(platform, replay, fixtures_dir, data_dir):
    """NWS alerts (unpartitioned): the feed drifts (a field every message had is gone), schema_drift blocks MINDEX;
    then the API goes down. The outage's failed run only plans the checks, yet the fallback still sees the failed
    verdict and refuses the drifted snapshot: MINDEX keeps the last good alerts."""
    import copy

    import sqlalchemy as sa

    defs, instance = platform
    assert run(defs, instance, "nws_alerts_sync", {}).success
    engine = sa.create_engine(f"sqlite:///{data_dir / 'mindex.sqlite'}")

    def alerts() -> tuple[int, int]:
        with engine.connect() as conn:
            return (conn.execute(sa.text("SELECT COUNT(*) FROM nws_alert_messages")).scalar(),
                    conn.execute(sa.text("SELECT COUNT(*) FROM nws_active_alerts")).scalar())

    before = alerts()
    assert before == (623, 621)
    feed = json.loads((fixtures_dir / "nws" / "ruthanno_alerts_active_national_2025-03-17T16-08Z.json").read_text())
    drifted_features = copy.deepcopy(feed["features"][:50])
    for feature in drifted_features:
        feature.pop("type")
    replay.source_object("nws").set_active(drifted_features)
    drifted = run(defs, instance, "nws_alerts_sync", {})
    assert not drifted.success and failure_cause(instance, drifted.run_id) is None
    replay.set_fault("nws", "down")
    outage = run(defs, instance, "nws_alerts_sync", {})
    assert failure_cause(instance, outage.run_id).startswith("SourceUnreachable")

    served = run(defs, instance, "nws_alerts_fallback", {SOURCE_ERROR_TAG: "SourceUnreachable: nws"})
    assert not served.success
    failure = next(e for e in served.all_events if e.is_step_failure).event_specific_data.user_failure_data
    assert failure.metadata["refused_partitions"].value == ["snapshot: schema_drift"]
    assert alerts() == before
    engine.dispose()


def test_a_server_s_wait_is_waited_out_after_a_failed_run_and_a_503_probe(platform, replay):
    """A run that failed on a 429 carrying Retry-After: 3600 gets its fallback, and the API is not probed again
    before the hour is up; a probe answered 503 with Retry-After waits that long too (no hammering)."""
    defs, instance = platform
    tags = refresh_tags("inaturalist", datetime.now(UTC), instance)
    assert run(defs, instance, "inaturalist_sync", tags).success
    first = tick(defs, instance, "inaturalist", None)
    replay.set_fault("inaturalist", "rate_limit", retry_after=3600)
    failed = run(defs, instance, "inaturalist_sync", tags)
    assert failure_cause(instance, failed.run_id).endswith("[retry after 3600 s]")
    before = len(replay.request_log("inaturalist"))
    second = tick(defs, instance, "inaturalist", first.cursor)
    assert [r.job_name for r in second.run_requests] == ["inaturalist_fallback"]
    health = ResilienceState.load(second.cursor).health["inaturalist"]
    assert health.state == "rate_limited" and health.next_probe_at - health.since >= 3600
    tick(defs, instance, "inaturalist", second.cursor)
    assert len(replay.request_log("inaturalist")) == before  # no probe inside the server's hour

    from mycosoft_assets.resources import build_resources
    from mycosoft_assets.sla import API_PROBES
    from sensors.resilience import probe

    replay.set_fault("gbif", "http_5xx", status=503, count=1, retry_after=600)
    state, _, error, wait = probe(build_resources(resolved=True)["gbif"], API_PROBES["gbif"])
    assert (state, wait) == ("down", 600.0) and error.startswith("ServerError")
    health = ApiHealth(state="up")
    update_health(health, (state, 1.0, error, wait), 1000.0, interval=30)
    assert health.next_probe_at == 1600.0
