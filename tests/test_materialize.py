"""Offline materializations of each asset's partitions against the replay server of the real recorded
responses: row counts equal the distinct records in the fixtures (counted here, independently), a second
materialization leaves Parquet and MINDEX identical, backfills and incremental syncs land real rows
(case C16), and MINDEX collapses GBIF copies of iNaturalist observations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from mycosoft_assets import sla
from mycosoft_assets.gbif.assets import gbif_occurrences, gbif_species
from mycosoft_assets.gbif.normalize import normalize_occurrence
from mycosoft_assets.inaturalist.assets import inaturalist_observations, inaturalist_taxa
from mycosoft_assets.inaturalist.normalize import normalize_observation
from mycosoft_assets.mindex.assets import (
    gbif_occurrence_row,
    inaturalist_observation_row,
    mindex_gbif_occurrences,
    mindex_inaturalist_observations,
    mindex_observations_unified,
    mindex_taxa,
)
from mycosoft_assets.mindex.schema import ensure_schema, observations
from resources.gbif import GbifClient
from resources.inaturalist import InaturalistClient
from resources.mindex_db import MindexDatabase, upsert
from resources.storage import PartitionStore
from sensors.schedules import RANGE_END_TAG, RANGE_START_TAG
from tests.conftest import FIXTURES, fungi_observation_ids, fungi_occurrence_keys, load_fixture

NOW = datetime.now(UTC)


def latest(source: str) -> str:
    return sla.partitions_def(source).get_partition_keys(current_time=NOW)[-1]


def make_resources(replay, data_dir: Path) -> dict:
    return {
        "inaturalist": InaturalistClient(base_url=replay.base_url("inaturalist"), contact="tests@example.org"),
        "gbif": GbifClient(base_url=replay.base_url("gbif"), contact="tests@example.org"),
        "mirror_store": PartitionStore(data_dir=str(data_dir)),
        "mindex_db": MindexDatabase(data_dir=str(data_dir)),
    }


def table_dump(db: MindexDatabase, table: str) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1, 2")).all()]


def row_counts(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, int]:
    return {m.partition: m.metadata["dagster/row_count"].value
            for m in result.asset_materializations_for_node(asset)}


def test_first_sync_of_the_latest_inaturalist_partition_mirrors_every_fungi_observation(replay, data_dir):
    resources = make_resources(replay, data_dir)
    key = latest("inaturalist")
    result = dg.materialize([inaturalist_observations, mindex_inaturalist_observations], resources=resources,
                            partition_key=key)
    assert result.success
    expected = fungi_observation_ids()
    assert len(expected) == 22
    assert row_counts(result, "inaturalist_observations") == {key: 22}
    assert row_counts(result, "mindex_inaturalist_observations") == {key: 22}
    store = resources["mirror_store"]
    table = pq.read_table(store.parquet_path("inaturalist_observations", key))
    assert set(table.column("id").to_pylist()) == expected
    manifest = store.manifest("inaturalist_observations", key)
    assert manifest["window_start"] is None  # first sync: from the beginning of history
    materialization = result.asset_materializations_for_node("inaturalist_observations")[0]
    assert materialization.metadata["source_window_start"].value == "beginning of history"
    assert materialization.metadata["served_from"].value == "live"
    db = resources["mindex_db"]
    ids = {int(r[1]) for r in table_dump(db, "observations") if r[0] == "inaturalist"}
    assert ids == expected
    # No updated_since on a first sync, keyset paging from id 0, never a page parameter.
    first = replay.request_log("inaturalist")[0]
    assert "updated_since" not in first["query"] and first["query"]["id_above"] == "0"
    assert all("page" not in r["query"] for r in replay.request_log("inaturalist"))


def test_materializing_a_partition_twice_leaves_identical_tables(replay, data_dir):
    resources = make_resources(replay, data_dir)
    assets = [inaturalist_observations, mindex_inaturalist_observations, gbif_occurrences, mindex_gbif_occurrences]
    store, db = resources["mirror_store"], resources["mindex_db"]

    def run_both():
        assert dg.materialize(assets[:2], resources=resources, partition_key=latest("inaturalist")).success
        assert dg.materialize(assets[2:], resources=resources, partition_key=latest("gbif")).success
        return (pq.read_table(store.parquet_path("inaturalist_observations", latest("inaturalist"))),
                pq.read_table(store.parquet_path("gbif_occurrences", latest("gbif"))),
                table_dump(db, "observations"))

    first = run_both()
    second = run_both()
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    assert first[2] == second[2]
    assert len(first[2]) == 22 + 302


def test_gbif_latest_partition_mirrors_every_fungi_occurrence(replay, data_dir):
    resources = make_resources(replay, data_dir)
    key = latest("gbif")
    result = dg.materialize([gbif_occurrences, mindex_gbif_occurrences], resources=resources, partition_key=key)
    expected = fungi_occurrence_keys()
    assert len(expected) == 302
    assert row_counts(result, "gbif_occurrences") == {key: 302}
    table = pq.read_table(resources["mirror_store"].parquet_path("gbif_occurrences", key))
    assert set(table.column("key").to_pylist()) == expected
    searches = [r for r in replay.request_log("gbif") if r["path"].endswith("/occurrence/search")]
    window = {r["query"].get("lastInterpreted") for r in searches}
    # First sync: open start; the end is the last day of the (still open) week, capped at today.
    end = min(sla.partitions_def("gbif").time_window_for_partition_key(key).end, datetime.now(UTC))
    assert window == {f"*,{(end - timedelta(microseconds=1)).date().isoformat()}"}


def test_snapshots_and_derived_tables(replay, data_dir):
    resources = make_resources(replay, data_dir)
    assert dg.materialize([inaturalist_observations, mindex_inaturalist_observations], resources=resources,
                          partition_key=latest("inaturalist")).success
    assert dg.materialize([gbif_occurrences, mindex_gbif_occurrences], resources=resources,
                          partition_key=latest("gbif")).success
    result = dg.materialize([inaturalist_taxa, gbif_species, mindex_taxa, mindex_observations_unified],
                            resources=resources)
    assert result.success
    counts = {e.asset_key.to_user_string(): e.materialization.metadata["dagster/row_count"].value
              for e in result.get_asset_materialization_events()}
    assert counts["inaturalist_taxa"] == fungal_taxa_in_fixtures() == 111
    fungi_usages = [r for r in load_fixture("gbif/species_datasetKey_limit100.json")["results"]
                    if r["kingdomKey"] == 5]
    assert counts["gbif_species"] == len(fungi_usages) == 8
    assert counts["mindex_taxa"] == 111 + 8
    assert counts["mindex_observations_unified"] == 22 + 302


def fungal_taxa_in_fixtures() -> int:
    """Every taxon object in the recorded iNaturalist v1 files that is Fungi or descends from it."""
    ids: set[int] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("id"), int) and "rank" in node and "name" in node and (
                    node["id"] == 47170 or 47170 in (node.get("ancestor_ids") or [])):
                ids.add(node["id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (FIXTURES / "inaturalist").glob("*.json"):
        if not path.name.startswith("pyinat_v2"):
            body = json.loads(path.read_text(encoding="utf-8"))
            walk(json.loads(body) if isinstance(body, str) else body)
    return len(ids)


def test_backfill_range_is_one_run_and_lands_real_rows_per_day(replay, data_dir):
    """A backfill over May 2024 before any sync: the first day also holds everything updated before it, each
    other day holds that day's updates, and nothing is shifted."""
    resources = make_resources(replay, data_dir)
    result = dg.materialize([inaturalist_observations], resources=resources,
                            tags={RANGE_START_TAG: "2024-05-01", RANGE_END_TAG: "2024-05-31"})
    assert result.success
    counts = row_counts(result, "inaturalist_observations")
    assert len(counts) == 31
    records = [json.loads(line) for line in (FIXTURES / "inaturalist" / "derived_observation_results.jsonl")
               .read_text(encoding="utf-8").splitlines() if line.strip()]
    fungi = [normalize_observation(r) for r in records if r["id"] in fungi_observation_ids()]
    june = datetime(2024, 6, 1, tzinfo=UTC)
    expected: dict[str, int] = {}
    for row in fungi:
        if row["updated_at"] >= june:
            continue
        day = max(row["updated_at"].date().isoformat(), "2024-05-01")
        expected[day] = expected.get(day, 0) + 1
    assert {k: v for k, v in counts.items() if v} == expected
    # 7 fungi updated before 2024-05-02 land on the first day; 6 more were updated later in May (UTC).
    assert expected["2024-05-01"] == 7 and sum(expected.values()) == 13 and expected["2024-05-18"] == 1
    assert len(replay.request_log("inaturalist")) == 2  # one page and the empty page: one fetch for 31 days


def test_incremental_sync_resumes_where_the_last_sync_stopped(replay, data_dir):
    resources = make_resources(replay, data_dir)
    assert dg.materialize([inaturalist_observations], resources=resources,
                          tags={RANGE_START_TAG: "2024-05-01", RANGE_END_TAG: "2024-05-31"}).success
    before = len(replay.request_log("inaturalist"))
    result = dg.materialize([inaturalist_observations], resources=resources, partition_key="2024-07-20")
    assert result.success
    first = replay.request_log("inaturalist")[before]
    assert first["query"]["updated_since"] == "2024-06-01T00:00:00+00:00"
    store = resources["mirror_store"]
    window = store.stored_window("inaturalist_observations", "2024-07-20")
    assert window.start == datetime(2024, 6, 1, tzinfo=UTC) and window.end == datetime(2024, 7, 21, tzinfo=UTC)
    ids = pq.read_table(store.parquet_path("inaturalist_observations", "2024-07-20")).column("id").to_pylist()
    # Fungi updated 2024-06-01..2024-07-20 UTC in the recordings (231104466 was updated 2024-07-22T20:08-04:00,
    # i.e. 07-23 UTC, after the window).
    assert sorted(ids) == [212320801, 220370929, 220796026, 222904190]
    # Re-materializing reuses the stored window: same start, same rows.
    assert dg.materialize([inaturalist_observations], resources=resources, partition_key="2024-07-20").success
    assert store.stored_window("inaturalist_observations", "2024-07-20").start == datetime(2024, 6, 1, tzinfo=UTC)


def test_newer_rows_win_and_older_replays_never_overwrite(data_dir):
    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    record = load_fixture("inaturalist/mo_lycoperdon.json")["results"][0]
    newer = inaturalist_observation_row(normalize_observation(record), "2024-04-29")
    older = dict(newer, source_updated_at=datetime(2020, 1, 1, tzinfo=UTC), scientific_name="stale name")
    with db.engine.begin() as conn:
        upsert(conn, observations, [newer], ["source", "source_id"], newer_column="source_updated_at")
        upsert(conn, observations, [older], ["source", "source_id"], newer_column="source_updated_at")
    rows = table_dump(db, "observations")
    assert len(rows) == 1 and rows[0][3] == newer["scientific_name"] != "stale name"


class _GenericDialect:
    """A connection as upsert sees one on a database without ON CONFLICT (its generic branch)."""

    def __init__(self, conn):
        self._conn = conn
        self.dialect = type("Dialect", (), {"name": "generic"})()

    def execute(self, *args, **kwargs):
        return self._conn.execute(*args, **kwargs)


@pytest.mark.parametrize("branch", ["on_conflict", "generic"])
def test_unknown_never_overwrites_known_on_every_database(data_dir, branch):
    """upsert's guards hold in both of its branches: an older replay, a -999 sentinel and a 0,0 position (NULL)
    never replace what MINDEX knows; a real, newer value does."""
    from mycosoft_assets.mindex.schema import aq_measurements, aq_stations

    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    record = load_fixture("inaturalist/mo_lycoperdon.json")["results"][0]
    newer = inaturalist_observation_row(normalize_observation(record), "2024-04-29")
    older = dict(newer, source_updated_at=datetime(2020, 1, 1, tzinfo=UTC), scientific_name="stale name")
    start = datetime(2025, 9, 20, 18, tzinfo=UTC)
    real = {"sensor_id": 11602121, "datetime_from": start, "station_id": 3309328, "parameter": "pm10",
            "unit": "µg/m³", "value": 38.0, "value_raw": 38.0, "is_missing_sentinel": False, "partition_key": "k"}
    sentinel = dict(real, value=None, value_raw=-999.0, is_missing_sentinel=True)
    station = {"id": 3309328, "name": "Santa Anita", "latitude": 20.55, "longitude": -103.47}
    with db.engine.begin() as raw:
        conn = raw if branch == "on_conflict" else _GenericDialect(raw)
        upsert(conn, observations, [newer], ["source", "source_id"], newer_column="source_updated_at")
        upsert(conn, observations, [older], ["source", "source_id"], newer_column="source_updated_at")
        upsert(conn, aq_measurements, [real], ["sensor_id", "datetime_from"], missing_flag="is_missing_sentinel")
        upsert(conn, aq_measurements, [sentinel], ["sensor_id", "datetime_from"], missing_flag="is_missing_sentinel")
        upsert(conn, aq_stations, [station], ["id"], keep_known=["latitude", "longitude"])
        upsert(conn, aq_stations, [dict(station, name="Santa Anita II", latitude=None, longitude=None)], ["id"],
               keep_known=["latitude", "longitude"])
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT scientific_name FROM observations")).scalar() == newer["scientific_name"]
        assert conn.execute(sa.text("SELECT value, is_missing_sentinel FROM aq_measurements")).all() == [(38.0, 0)]
        assert conn.execute(sa.text("SELECT name, latitude, longitude FROM aq_stations")).all() == [
            ("Santa Anita II", 20.55, -103.47)]
    with db.engine.begin() as raw:  # a real value replaces a stored sentinel
        conn = raw if branch == "on_conflict" else _GenericDialect(raw)
        upsert(conn, aq_measurements, [dict(sentinel, sensor_id=1)], ["sensor_id", "datetime_from"],
               missing_flag="is_missing_sentinel")
        upsert(conn, aq_measurements, [dict(real, sensor_id=1, value=7.0)], ["sensor_id", "datetime_from"],
               missing_flag="is_missing_sentinel")
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM aq_measurements WHERE sensor_id = 1")).scalar() == 7.0


def test_unified_view_counts_a_gbif_copy_of_an_inaturalist_observation_once(data_dir):
    """Derived pair: a real GBIF record republished from iNaturalist (spocc recording) and a real iNaturalist
    observation given that record's catalogNumber as its id. Everything else in both records is real."""
    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    gbif_record = load_fixture("gbif/spocc_occ2df_accipiter_striatus_limit10.json")["results"][0]
    inat_record = dict(load_fixture("inaturalist/mo_lycoperdon.json")["results"][0],
                       id=int(gbif_record["catalogNumber"]))
    other_gbif = load_fixture("gbif/occurrence_search_taxonKey3329049_fungi_limit300.json")["results"][0]
    with db.engine.begin() as conn:
        upsert(conn, observations, [inaturalist_observation_row(normalize_observation(inat_record), "k")],
               ["source", "source_id"])
        upsert(conn, observations, [gbif_occurrence_row(normalize_occurrence(r), "k")
                                    for r in (gbif_record, other_gbif)], ["source", "source_id"])
    with db.engine.connect() as conn:
        unified = conn.execute(sa.text("SELECT source, source_id FROM observations_unified ORDER BY 1, 2")).all()
    assert [tuple(r) for r in unified] == [("gbif", str(other_gbif["key"])),
                                          ("inaturalist", str(int(gbif_record["catalogNumber"])))]


def test_partitions_rebuild_offline_from_the_raw_archive(replay, data_dir):
    """The raw archive is the ground truth: re-normalizing it gives back each partition exactly, for a single
    partition and for every partition of a range run."""
    from mycosoft_assets.gbif.assets import OCCURRENCES
    from mycosoft_assets.inaturalist.assets import OBSERVATIONS
    from mycosoft_assets.mirror import rebuild_from_raw

    resources = make_resources(replay, data_dir)
    store = resources["mirror_store"]
    assert dg.materialize([inaturalist_observations], resources=resources,
                          tags={RANGE_START_TAG: "2024-05-01", RANGE_END_TAG: "2024-05-31"}).success
    assert dg.materialize([gbif_occurrences], resources=resources, partition_key=latest("gbif")).success
    replay.set_fault("inaturalist", "down")
    replay.set_fault("gbif", "down")
    checked = 0
    for dataset, keys in ((OBSERVATIONS, [f"2024-05-{d:02d}" for d in range(1, 32)]), (OCCURRENCES, [latest("gbif")])):
        for key in keys:
            original = pq.read_table(store.parquet_path(dataset.name, key))
            rebuilt = pa.Table.from_batches(list(rebuild_from_raw(store, dataset, key)), schema=dataset.schema)
            assert rebuilt.equals(original.cast(dataset.schema)), (dataset.name, key)
            checked += original.num_rows
    assert checked == 13 + 302
