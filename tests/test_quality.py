"""Data-quality checks (issue: checks on every mirror and MINDEX table). Each check gets a small bad input built
from the recorded fixtures and must fail with the right severity; a blocking failure must leave MINDEX unchanged."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from mycosoft_assets.definitions import defs
from mycosoft_assets.inaturalist.normalize import OBSERVATION_SCHEMA, normalize_observation
from mycosoft_assets.mindex.schema import ensure_schema
from mycosoft_assets.mirror import profile_fields
from mycosoft_assets.quality import quarantine
from mycosoft_assets.quality.checks import all_checks, drift, evaluate
from mycosoft_assets.quality.expectations import SUITES
from mycosoft_assets.quality.rules import (
    NON_EMPTY,
    REQUIRED_FIELDS,
    SCHEMA_DRIFT,
    TIMESTAMPS,
    UNIQUE_KEY,
    VALUE_RANGES,
    rules_for,
)
from resources.inaturalist import InaturalistClient
from resources.mindex_db import MindexDatabase
from resources.storage import PartitionStore
from tests.conftest import FIXTURES
from tests.stub_server import StubServer, json_answer

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def recorded() -> list[dict]:
    import json

    lines = (FIXTURES / "inaturalist" / "derived_observation_results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([normalize_observation(r) for r in records], schema=OBSERVATION_SCHEMA)


def by_name(results: list[dg.AssetCheckResult]) -> dict[str, dg.AssetCheckResult]:
    return {r.check_name: r for r in results}


def profile(records: list[dict]) -> dict:
    out: dict = {}
    for record in records:
        profile_fields(record, out)
    return out


def test_every_asset_has_checks_and_ge_suites_are_named():
    graph = defs.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys}
    assert checked == set(graph.get_all_asset_keys())
    names = {k.name for k in graph.asset_check_keys}
    for suites in SUITES.values():
        for suite in suites:
            assert f"ge_{suite.name}" in names
    blocking = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys
                if graph.get_check_spec(k).blocking}
    assert ("inaturalist_observations", UNIQUE_KEY) in blocking and ("gbif_occurrences", SCHEMA_DRIFT) in blocking
    assert ("inaturalist_observations", VALUE_RANGES) not in blocking


def test_recorded_observations_pass_every_check():
    rules = rules_for("inaturalist_observations")
    records = recorded()
    results = by_name(evaluate(table(records), rules, profile(records), profile(records)))
    assert all(r.passed for r in results.values()), {n: r.metadata for n, r in results.items() if not r.passed}


def test_duplicated_key_fails_with_error():
    records = recorded()
    result = by_name(evaluate(table(records + records[:2]), rules_for("inaturalist_observations")))[UNIQUE_KEY]
    assert not result.passed and result.severity == ERROR
    assert result.metadata["duplicate_keys"].value == 2


def test_dropped_source_field_fails_schema_drift():
    records = recorded()
    dropped = [{k: v for k, v in r.items() if k != "updated_at"} for r in records]
    result = by_name(evaluate(table(dropped), rules_for("inaturalist_observations"), profile(dropped),
                              profile(records)))[SCHEMA_DRIFT]
    assert not result.passed and result.severity == ERROR
    assert result.metadata["source_fields_removed"].value == ["updated_at"]


def test_retyped_source_field_fails_schema_drift():
    records = recorded()
    retyped = [dict(r, id=str(r["id"])) for r in records]
    result = by_name(evaluate(table(retyped), rules_for("inaturalist_observations"), profile(retyped),
                              profile(records)))[SCHEMA_DRIFT]
    assert not result.passed and result.severity == ERROR
    assert result.metadata["source_fields_retyped"].value == ["id: number -> string"]


def test_a_dropped_or_retyped_parquet_column_breaks_the_contract():
    rules = rules_for("inaturalist_observations")
    good = table(recorded())
    dropped = good.drop_columns(["latitude"])
    retyped = good.set_column(good.schema.get_field_index("id"), "id", pa.compute.cast(good.column("id"), pa.string()))
    for bad, expected in ((dropped, "missing column latitude"), (retyped, "id: string != int64")):
        result = by_name(evaluate(bad, rules))[SCHEMA_DRIFT]
        assert not result.passed and result.severity == ERROR and expected in result.metadata["contract"].value


def test_new_source_field_only_warns():
    records = recorded()
    added = [dict(r, brand_new_field="x") for r in records]
    result = by_name(evaluate(table(added), rules_for("inaturalist_observations"), profile(added),
                              profile(records)))[SCHEMA_DRIFT]
    assert result.passed and result.metadata["source_fields_added"].value == ["brand_new_field"]


def test_gbif_style_optional_fields_are_not_called_removed():
    before = profile([{"key": 1, "locality": "x"}, {"key": 2}])
    now = profile([{"key": i} for i in range(30)])
    assert drift(before, now) == ([], [], [])


def test_out_of_range_coordinate_warns():
    rows = table(recorded()).to_pylist()
    rows[0]["latitude"] = 123.0  # a bug upstream of the normalizer, say
    result = by_name(evaluate(pa.Table.from_pylist(rows, schema=OBSERVATION_SCHEMA),
                              rules_for("inaturalist_observations")))[VALUE_RANGES]
    assert not result.passed and result.severity == WARN
    assert result.metadata["out_of_range"].value == {"latitude": 1}
    assert result.metadata["examples"].value == {"latitude": [123.0]}


def test_future_timestamp_fails_with_error():
    records = recorded()
    future = copy.deepcopy(records[0])
    future["updated_at"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    result = by_name(evaluate(table([future] + records[1:]), rules_for("inaturalist_observations")))[TIMESTAMPS]
    assert not result.passed and result.severity == ERROR
    assert result.metadata["future_rows"].value == {"updated_at": 1}


def test_missing_required_field_fails_and_empty_snapshot_fails():
    records = recorded()
    missing = [dict(records[0], updated_at=None)] + records[1:]
    assert not by_name(evaluate(table(missing), rules_for("inaturalist_observations")))[REQUIRED_FIELDS].passed
    empty = rules_for("gbif_species").schema.empty_table()
    assert not by_name(evaluate(empty, rules_for("gbif_species")))[NON_EMPTY].passed
    assert by_name(evaluate(table([]), rules_for("inaturalist_observations")))[NON_EMPTY].passed


def test_quarantine_keeps_bad_rows_with_the_rule(data_dir):
    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    good = {"source": "inaturalist", "source_id": "1", "source_updated_at": datetime(2024, 1, 1, tzinfo=UTC),
            "observed_at": None, "observed_on": None, "latitude": 1.0, "longitude": 2.0}
    future = dict(good, source_id="2", observed_on=(datetime.now(UTC) + timedelta(days=5)).date())
    undated = dict(good, source_id="3", source_updated_at=None)
    ok, bad = quarantine.split("observations", [good, future, undated])
    assert [r["source_id"] for r in ok] == ["1"]
    assert [(rule, r["source_id"]) for rule, r in bad] == [("observed_in_future", "2"), ("missing_update_time", "3")]
    with db.engine.begin() as conn:
        quarantine.store(conn, "inaturalist_observations", "2024-01-01", ["source", "source_id"], bad, ok)
    with db.engine.connect() as conn:
        assert quarantine.count(conn, "inaturalist_observations", "2024-01-01") == {
            "observed_in_future": 1, "missing_update_time": 1}
        record = conn.execute(sa.text("SELECT record FROM quarantine WHERE natural_key = 'inaturalist|3'")).scalar()
    assert '"source_id": "3"' in record


def test_a_blocking_failure_leaves_mindex_unchanged(data_dir):
    """End to end: a good sync, then the source retypes a field the normalizer reads. schema_drift (blocking) fails
    with ERROR, the mirror materialization is recorded, and the MINDEX step is skipped: the table is unchanged."""
    records = recorded()
    fungi = [r for r in records if (r.get("taxon") or {}).get("iconic_taxon_name") == "Fungi"]
    state = {"records": fungi}

    def handler(path: str):
        if state.get("down"):
            return json_answer({"error": "maintenance"}, status=400)  # a 4xx the client does not retry
        body = {"total_results": len(state["records"]), "results": state["records"]}
        return json_answer(body if "id_above=0" in path else {"total_results": 0, "results": []})

    from mycosoft_assets.inaturalist.assets import inaturalist_observations
    from mycosoft_assets.mindex.assets import mindex_inaturalist_observations

    assets = [inaturalist_observations, mindex_inaturalist_observations]
    wanted = {a.key for a in assets}
    checks = [c for c in all_checks() if {k.asset_key for k in c.check_keys} <= wanted]
    selection = dg.AssetSelection.assets(*wanted)
    with StubServer(handler) as stub, dg.instance_for_test() as instance:
        resources = {"inaturalist": InaturalistClient(base_url=stub.url), "mirror_store": PartitionStore(
            data_dir=str(data_dir)), "mindex_db": MindexDatabase(data_dir=str(data_dir))}
        first = dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01", selection=selection,
                               instance=instance)
        assert first.success
        db = resources["mindex_db"]
        with db.engine.connect() as conn:
            before = conn.execute(sa.text("SELECT * FROM observations ORDER BY source_id")).all()
        # First sync of 2024-05-01: the 7 fungi updated before 2024-05-02 (see test_materialize's backfill).
        assert len(before) == 7

        state["records"] = [dict(r, updated_at=int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())) for r in fungi]
        second = dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01",
                                selection=selection, instance=instance, raise_on_error=False)
        assert not second.success
        evaluations = {e.check_name: e for e in second.get_asset_check_evaluations()
                       if e.asset_key == dg.AssetKey("inaturalist_observations")}
        assert not evaluations[SCHEMA_DRIFT].passed and evaluations[SCHEMA_DRIFT].severity == ERROR
        assert "updated_at: string -> number" in evaluations[SCHEMA_DRIFT].metadata["source_fields_retyped"].value
        assert second.asset_materializations_for_node("inaturalist_observations")  # the mirror was recorded
        assert not second.asset_materializations_for_node("mindex_inaturalist_observations")  # MINDEX skipped
        with db.engine.connect() as conn:
            after = conn.execute(sa.text("SELECT * FROM observations ORDER BY source_id")).all()
        assert after == before
        # A failed check is not a source failure: the resilience sensor must not serve this from the cache.
        from sensors.resilience import failure_cause

        assert failure_cause(instance, second.run_id) is None

        # Nor may a later outage smuggle it in. The outage's own failed run plans the mirror's checks but never
        # runs them, so what counts is the latest check that ran.
        state["down"] = True
        outage = dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01",
                                selection=selection, instance=instance, raise_on_error=False)
        assert not outage.success and failure_cause(instance, outage.run_id).startswith("ClientRequestError")
        state["down"] = False
        # A fallback (served from cache) refuses the partition whose blocking check failed when it landed, fails
        # saying so, and MINDEX keeps its last good rows.
        from mycosoft_assets.serving import SERVED_FROM_TAG

        fallback = dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01",
                                  selection=dg.AssetSelection.assets(mindex_inaturalist_observations),
                                  instance=instance, tags={SERVED_FROM_TAG: "cache"}, raise_on_error=False)
        assert not fallback.success
        failure = next(e for e in fallback.all_events if e.is_step_failure).event_specific_data
        assert "not served from cache" in failure.user_failure_data.description
        assert failure.user_failure_data.metadata["refused_partitions"].value == ["2024-05-01: schema_drift"]
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT * FROM observations ORDER BY source_id")).all() == before

        # The source comes back to its usual shape: judged against the last good shape (not the drifted one),
        # the live fetch passes, and the cache is servable again.
        state["records"] = fungi
        assert dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01",
                              selection=dg.AssetSelection.assets(inaturalist_observations), instance=instance).success
        assert dg.materialize(assets + checks, resources=resources, partition_key="2024-05-01",
                              selection=dg.AssetSelection.assets(mindex_inaturalist_observations),
                              instance=instance, tags={SERVED_FROM_TAG: "cache"}).success


@pytest.mark.parametrize("asset", ["nws_alerts", "weather_forecasts", "openaq_measurements", "gbif_occurrences"])
def test_rules_match_their_dataset_schemas(asset):
    rules = rules_for(asset)
    for column in (*rules.key_columns, *rules.required, *rules.timestamps, *rules.future_ok, *rules.ranges):
        assert column in rules.schema.names, (asset, column)


def test_partitioned_checks_read_only_their_own_partition(data_dir):
    """Case C19: a check of one partition reads that partition's file only. A sibling partition with duplicated
    keys does not fail it, the bad partition's own check fails (blocking, ERROR), and a partition that was never
    materialized is checked without touching any file (no FileNotFoundError)."""
    import pyarrow.parquet as pq

    from mycosoft_assets.inaturalist.assets import inaturalist_observations

    fungi = [r for r in recorded() if (r.get("taxon") or {}).get("iconic_taxon_name") == "Fungi"]

    def handler(path: str):
        return json_answer({"total_results": len(fungi), "results": fungi} if "id_above=0" in path
                           else {"total_results": 0, "results": []})

    checks = [c for c in all_checks() if {k.asset_key for k in c.check_keys} == {inaturalist_observations.key}]
    store = PartitionStore(data_dir=str(data_dir))
    with StubServer(handler) as stub, dg.instance_for_test() as instance:
        resources = {"inaturalist": InaturalistClient(base_url=stub.url), "mirror_store": store}
        assert dg.materialize([inaturalist_observations, *checks], resources=resources, partition_key="2024-05-01",
                              instance=instance).success
        good = pq.read_table(store.parquet_path("inaturalist_observations", "2024-05-01"))
        assert good.num_rows == 7
        # 2024-05-02 holds every row twice (its manifest comes with the copied file's metadata).
        pq.write_table(pa.concat_tables([good, good]), store.parquet_path("inaturalist_observations", "2024-05-02"))

        # The checks alone, on one partition (as "re-run checks" in the UI does).
        job = dg.define_asset_job("inaturalist_checks", selection=dg.AssetSelection.checks_for_assets(
            inaturalist_observations))
        only_checks = dg.Definitions(assets=[inaturalist_observations], asset_checks=checks, jobs=[job],
                                     resources=resources).resolve_job_def("inaturalist_checks")

        def check_only(partition: str) -> dict[str, dg.AssetCheckEvaluation]:
            # (by tag, as the UI launches it: execute_in_process infers partitions only from selected assets)
            result = only_checks.execute_in_process(instance=instance, tags={"dagster/partition": partition},
                                                    raise_on_error=False)
            assert result.asset_materializations_for_node("inaturalist_observations") == []  # checks only
            return {e.check_name: e for e in result.get_asset_check_evaluations()}

        clean = check_only("2024-05-01")
        assert clean[UNIQUE_KEY].passed and clean[NON_EMPTY].metadata["rows"].value == 7
        broken = check_only("2024-05-02")
        assert not broken[UNIQUE_KEY].passed and broken[UNIQUE_KEY].severity == ERROR
        assert broken[UNIQUE_KEY].metadata["duplicate_keys"].value == 7
        never = check_only("2024-05-09")
        assert never[NON_EMPTY].metadata["rows"].value == 0 and never[UNIQUE_KEY].passed
