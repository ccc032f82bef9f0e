"""Stream mirrors (OpenSky, AISStream): spool -> hourly Parquet -> MINDEX, rolling 24 h retention, collector gaps.

The spool is written here with ``SpoolWriter`` exactly as the collectors write it, from the recorded responses in
../shared/fixtures; the hours of receipt are set relative to now (a replayed stream is received now), and where a
test needs the same aircraft in several hours, ``last_contact`` is shifted per hour (derived data, said so).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from mycosoft_assets.aisstream.assets import aisstream_vessel_positions, mindex_vessel_positions
from mycosoft_assets.opensky.assets import STATES, mindex_aircraft_states, opensky_state_vectors
from mycosoft_assets.quality.checks import collector_gap_check
from mycosoft_assets.streams import compact_hour
from resources.mindex_db import MindexDatabase
from resources.spool import SpoolReader, SpoolWriter, hour_of, partition_key_of_hour
from resources.storage import PartitionStore

DENVER = "opensky/states_all_bbox_denver_2021-03-07T18-30-30Z.json"


def resources(data_dir: Path) -> dict:
    return {"mirror_store": PartitionStore(data_dir=str(data_dir)),
            "mindex_db": MindexDatabase(data_dir=str(data_dir))}


def denver(fixtures_dir: Path, shift_s: int = 0) -> dict:
    body = json.loads((fixtures_dir / DENVER).read_text())
    body = copy.deepcopy(body)
    for state in body["states"]:
        state[4] += shift_s  # last_contact: derived, so each hour holds distinct state vectors
    return body


def spool_poll(data_dir: Path, body: dict, received: datetime) -> None:
    writer = SpoolWriter(data_dir, "opensky")
    writer.append("states", {"params": {}, "body": body}, received_at=received)
    writer.flush()


def key_of(moment: datetime) -> str:
    return partition_key_of_hour(hour_of(moment))


def rows(data_dir: Path, sql: str) -> list[tuple]:
    with MindexDatabase(data_dir=str(data_dir)).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_retention_removes_exactly_the_partitions_older_than_24h(fixtures_dir, data_dir):
    now = datetime.now(UTC)
    ages = [30, 25, 23, 1, 0]  # hours before now at which a poll was received
    for age in ages:
        spool_poll(data_dir, denver(fixtures_dir, shift_s=age * 3600), now - timedelta(hours=age))
    store = PartitionStore(data_dir=str(data_dir))
    keys = [key_of(now - timedelta(hours=age)) for age in ages]
    # The two oldest hours were compacted and loaded before they expired (as the schedule did at the time).
    for key in keys:
        compact_hour(store, STATES, key)
    assert sorted(store.synced_keys("opensky_state_vectors")) == sorted(keys)
    result = dg.materialize([mindex_aircraft_states], resources=resources(data_dir),
                            partition_key=keys[0], raise_on_error=False)
    assert result.success
    # Now a refresh of the recent hours applies the rolling window.
    recent = dg.PartitionKeyRange(keys[2], keys[-1])
    tags = {"dagster/asset_partition_range_start": recent.start, "dagster/asset_partition_range_end": recent.end}
    spool_poll(data_dir, denver(fixtures_dir, shift_s=7), now)  # something new, so the mirror materializes
    result = dg.materialize([opensky_state_vectors, mindex_aircraft_states], resources=resources(data_dir), tags=tags)
    assert result.success
    # Every hour of the refreshed range is a partition (hours with nothing received are empty ones); the two
    # hours that ended more than 24 h ago are gone.
    in_range = opensky_state_vectors.partitions_def.get_partition_keys_in_range(recent)
    assert store.synced_keys("opensky_state_vectors") == sorted(in_range)
    assert all(k not in store.synced_keys("opensky_state_vectors") for k in keys[:2])
    assert SpoolReader(data_dir, "opensky").hours() == sorted(hour_of(now - timedelta(hours=a)) for a in ages[2:])
    mirror = result.asset_materializations_for_node("opensky_state_vectors")[-1].metadata
    assert mirror["partitions_removed"].value == sorted(keys[:2])

    # MINDEX holds only rows received in the last 24 h, and says what it removed.
    cutoff = now - timedelta(hours=24)
    held = rows(data_dir, "SELECT MIN(received_at), COUNT(*) FROM aircraft_states")[0]
    assert datetime.fromisoformat(str(held[0])).replace(tzinfo=UTC) >= cutoff
    assert held[1] == 38 * 4  # hours 23, 1 and 0 (two distinct polls in the open hour), 38 states each
    removed = rows(data_dir, "SELECT partition_key, rows FROM retention_log ORDER BY partition_key")
    assert removed == [(keys[0], 38)]  # the 25 h old hour was never loaded; the 30 h one was, and is logged


def test_a_state_seen_in_two_hours_is_one_row_and_nothing_new_is_not_a_materialization(fixtures_dir, data_dir):
    now = datetime.now(UTC)
    body = denver(fixtures_dir)
    spool_poll(data_dir, body, now - timedelta(hours=1))
    spool_poll(data_dir, body, now)  # the same snapshot polled again across the hour boundary
    spool_poll(data_dir, body, now)  # and twice in the open hour
    keys = [key_of(now - timedelta(hours=1)), key_of(now)]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}
    first = dg.materialize([opensky_state_vectors, mindex_aircraft_states], resources=resources(data_dir), tags=tags)
    per_hour = {m.partition: m.metadata["dagster/row_count"].value
                for m in first.asset_materializations_for_node("opensky_state_vectors")}
    assert per_hour == {keys[0]: 38, keys[1]: 38}
    assert rows(data_dir, "SELECT COUNT(*), COUNT(DISTINCT icao24) FROM aircraft_states") == [(38, 38)]

    # The collector stopped: nothing new in the spool, so the mirror is not materialized (freshness ages).
    again = dg.materialize([opensky_state_vectors, mindex_aircraft_states], resources=resources(data_dir), tags=tags)
    assert again.success
    assert again.asset_materializations_for_node("opensky_state_vectors") == []
    observed = [e for e in again.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert observed and "nothing new" in observed[0].event_specific_data.asset_observation.metadata["note"].value


def test_vessel_positions_from_the_recorded_stream_keep_mmsi_as_text(fixtures_dir, data_dir):
    from mycosoft_assets.aisstream.normalize import load_recorded_envelopes

    now = datetime.now(UTC)
    writer = SpoolWriter(data_dir, "aisstream")
    envelopes = load_recorded_envelopes(fixtures_dir)
    for envelope in envelopes:
        writer.append("message", envelope, received_at=now)
    for envelope in envelopes[:100]:  # a reconnect replays the last messages: stored once
        writer.append("message", envelope, received_at=now)
    writer.flush()
    key = key_of(now)
    result = dg.materialize([aisstream_vessel_positions, mindex_vessel_positions], resources=resources(data_dir),
                            partition_key=key)
    assert result.success
    position_types = ("PositionReport", "StandardClassBPositionReport", "ExtendedClassBPositionReport")
    positions = {(str(e["MetaData"].get("MMSI") or e["Message"][e["MessageType"]]["UserID"]).zfill(9),
                  e["MessageType"], e["MetaData"]["time_utc"]) for e in envelopes if e["MessageType"] in position_types}
    count, short = rows(data_dir, "SELECT COUNT(*), SUM(CASE WHEN LENGTH(mmsi) <> 9 THEN 1 ELSE 0 END) "
                                  "FROM vessel_positions")[0]
    assert (count, short) == (len(positions), 0)
    stored = set(rows(data_dir, "SELECT mmsi, message_type, time_utc_raw FROM vessel_positions"))
    assert stored == positions


def _gap_check_result(data_dir: Path, seconds: float) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    writer = SpoolWriter(data_dir, "aisstream")
    writer.record_gap(now - timedelta(seconds=seconds + 5), now - timedelta(seconds=5), "connection_closed",
                      close_code=1006)
    check = collector_gap_check("aisstream_vessel_positions", "aisstream")
    return check(dg.build_asset_check_context(), mirror_store=PartitionStore(data_dir=str(data_dir)))


def test_a_gap_longer_than_the_sla_max_fails_the_collector_check(data_dir, tmp_path):
    long = _gap_check_result(data_dir, seconds=300)  # max_gap for AISStream is 2 min
    assert not long.passed and long.severity == dg.AssetCheckSeverity.ERROR
    assert long.metadata["longest_gap_s"].value >= 300
    short_dir = tmp_path / "short"
    short_dir.mkdir()
    assert _gap_check_result(short_dir, seconds=30).passed


def test_an_outage_still_in_progress_fails_the_collector_check(data_dir):
    """No gap record yet (it is written when the stream comes back): the heartbeat's open gap counts until now."""
    now = datetime.now(UTC)
    writer = SpoolWriter(data_dir, "aisstream")
    writer.heartbeat(connected=False, gap_open=True, gap_open_since=(now - timedelta(minutes=5)).isoformat())
    check = collector_gap_check("aisstream_vessel_positions", "aisstream")
    result = check(dg.build_asset_check_context(), mirror_store=PartitionStore(data_dir=str(data_dir)))
    assert not result.passed and result.metadata["longest_gap_s"].value >= 300
    assert result.metadata["gaps_over_limit"].value[0]["reason"] == "open: the stream has not come back yet"

    writer.heartbeat(connected=True, gap_open=False, gap_open_since=None)  # back, and no gap over the limit
    assert check(dg.build_asset_check_context(), mirror_store=PartitionStore(data_dir=str(data_dir))).passed


def test_a_position_without_its_time_is_quarantined_not_loaded(fixtures_dir, data_dir):
    """The dedup key includes MetaData.time_utc; a message without it cannot be told from its replays, so it is
    kept in `quarantine` with the rule (case C10's first example has no time at all), never silently dropped."""
    from mycosoft_assets.aisstream.normalize import load_recorded_envelopes

    now = datetime.now(UTC)
    envelopes = [e for e in load_recorded_envelopes(fixtures_dir) if e["MessageType"] == "PositionReport"][:20]
    timeless = copy.deepcopy(envelopes[0])
    del timeless["MetaData"]["time_utc"]
    timeless["MetaData"]["MMSI"] = 211000001
    writer = SpoolWriter(data_dir, "aisstream")
    for envelope in [*envelopes, timeless]:
        writer.append("message", envelope, received_at=now)
    writer.flush()
    result = dg.materialize([aisstream_vessel_positions, mindex_vessel_positions], resources=resources(data_dir),
                            partition_key=key_of(now))
    assert result.success
    loaded = result.asset_materializations_for_node("mindex_vessel_positions")
    assert loaded[-1].metadata["quarantined"].value == 1
    assert rows(data_dir, "SELECT COUNT(*) FROM vessel_positions WHERE time_utc_raw IS NULL") == [(0,)]
    assert rows(data_dir, "SELECT COUNT(*) FROM vessel_positions") == [(len({
        (e["MetaData"]["MMSI"], e["MetaData"]["time_utc"]) for e in envelopes}),)]
    held = rows(data_dir, "SELECT dataset, rule, natural_key FROM quarantine")
    assert held == [("aisstream_vessel_positions", "missing_time_utc", "211000001|PositionReport|None")]
