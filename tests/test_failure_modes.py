"""Faults found by trying to break the mirrors: each is a kind of fault, tested by its correct behaviour."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mycosoft_assets import sla
from mycosoft_assets.gbif.assets import gbif_occurrences
from mycosoft_assets.gbif.normalize import normalize_occurrence
from mycosoft_assets.inaturalist.assets import OBSERVATIONS, inaturalist_observations
from mycosoft_assets.inaturalist.normalize import normalize_observation, normalize_taxon
from mycosoft_assets.mirror import MirrorStats, rebuild_from_raw, to_batch
from resources.errors import AuthError, EndpointRetired, RateLimited, ServerError, SourceUnreachable
from resources.inaturalist import InaturalistClient
from resources.storage import PartitionStore, PartitionWindow
from tests.conftest import load_fixture
from tests.stub_server import StubServer, json_answer
from tests.test_http_client import FakeSleep
from tests.test_materialize import latest, make_resources

GOOD = load_fixture("inaturalist/mo_lycoperdon.json")["results"][0]


def test_connection_reset_is_unreachable_and_retried():
    calls = {"n": 0}

    def handler(path: str):
        calls["n"] += 1
        return "reset" if calls["n"] == 1 else json_answer({"total_results": 0, "results": []})

    with StubServer(handler) as stub:
        sleep = FakeSleep()
        client = InaturalistClient(base_url=stub.url).with_sleep(sleep)
        assert client.get_json("observations").payload == {"total_results": 0, "results": []}
        assert len(sleep.calls) == 1
    with StubServer(lambda path: "reset") as stub:
        client = InaturalistClient(base_url=stub.url, max_retries=1).with_sleep(FakeSleep())
        with pytest.raises(SourceUnreachable, match="connection failed"):
            client.get_json("observations")


def test_status_decides_before_a_problem_json_body():
    problem = {"type": "https://example.org/problems/x", "title": "t", "status": 0, "correlationId": "c"}
    answers = {
        "/v1/a": json_answer(problem, 429, {"Retry-After": "5"}, "application/problem+json"),
        "/v1/b": json_answer(problem, 401, content_type="application/problem+json"),
        "/v1/c": json_answer(problem, 410, content_type="application/problem+json"),
    }
    with StubServer(lambda path: answers[path.split("?")[0]]) as stub:
        sleep = FakeSleep()
        client = InaturalistClient(base_url=stub.url, max_retries=1).with_sleep(sleep)
        with pytest.raises(RateLimited):
            client.get_json("a")
        assert len(sleep.calls) == 1 and 5 <= sleep.calls[0] < 5.2
        with pytest.raises(AuthError, match="API key"):
            client.get_json("b")
        with pytest.raises(EndpointRetired, match="retired"):
            client.get_json("c")


def test_hourly_quota_429_without_header_ends_the_run_at_once(replay):
    """Case C05: Open-Meteo's 'Hourly API request limit exceeded' carries no header; retrying in seconds is
    pointless, so the run ends as rate-limited with the wait the message implies."""
    sleep = FakeSleep()
    replay.set_fault("inaturalist", "rate_limit")  # default body: the Open-Meteo hourly-limit message
    client = InaturalistClient(base_url=replay.base_url("inaturalist")).with_sleep(sleep)
    with pytest.raises(RateLimited, match="Hourly API request limit") as caught:
        client.get_json("observations")
    assert caught.value.retry_after == 3600 and sleep.calls == []


def test_503_retry_after_is_honoured():
    calls = {"n": 0}

    def handler(path: str):
        calls["n"] += 1
        if calls["n"] == 1:
            return json_answer({"error": "maintenance"}, 503, {"Retry-After": "42"})
        return json_answer({"results": []})

    with StubServer(handler) as stub:
        sleep = FakeSleep()
        InaturalistClient(base_url=stub.url).with_sleep(sleep).get_json("observations")
        assert len(sleep.calls) == 1 and 42 <= sleep.calls[0] < 42.2
    with StubServer(lambda path: json_answer({}, 503, {"Retry-After": "7200"})) as stub:
        with pytest.raises(ServerError):
            InaturalistClient(base_url=stub.url).with_sleep(FakeSleep()).get_json("observations")


@pytest.mark.parametrize(("bad", "kept", "rejected"), [
    # An id wider than int64 cannot be stored: the field becomes NULL, the record stays.
    ({"id": 2, "updated_at": "2024-05-01T00:00:00Z", "community_taxon_id": 10**20}, True, 0),
    # A sentinel time is not a reason to drop the record: it becomes NULL.
    ({"id": 3, "created_at": "0001-01-01T00:00:00+01:00", "updated_at": "2024-05-01T00:00:00Z"}, True, 0),
    # No usable natural key: rejected and counted, the raw response keeps it.
    ({"id": "--5"}, False, 1),
])
def test_one_malformed_record_never_loses_the_page(bad, kept, rejected, data_dir):
    page = {"total_results": 2, "page": 1, "per_page": 200, "results": [GOOD, bad]}
    empty = {"total_results": 2, "page": 1, "per_page": 200, "results": []}

    def handler(path: str):
        return json_answer(page if "id_above=0" in path else empty)

    with StubServer(handler) as stub:
        resources = {"inaturalist": InaturalistClient(base_url=stub.url), "mirror_store": PartitionStore(
            data_dir=str(data_dir))}
        result = dg.materialize([inaturalist_observations], resources=resources, partition_key="2024-05-01")
    assert result.success
    store = resources["mirror_store"]
    ids = pq.read_table(store.parquet_path("inaturalist_observations", "2024-05-01")).column("id").to_pylist()
    assert ids == ([GOOD["id"], bad["id"]] if kept else [GOOD["id"]])
    materialization = result.asset_materializations_for_node("inaturalist_observations")[0]
    assert materialization.metadata["records_rejected"].value == rejected


def test_a_row_arrow_refuses_is_rejected_alone():
    good = normalize_observation(GOOD)
    bad = dict(good, id=10**20)  # wider than int64
    stats = MirrorStats()
    batch = to_batch([good, bad, dict(good, id=7)], OBSERVATIONS.schema, stats)
    assert batch.column("id").to_pylist() == [GOOD["id"], 7]
    assert stats.rejected == 1


def test_scalars_where_lists_belong_do_not_crash_taxa():
    row = normalize_taxon({"id": 5001, "is_active": False, "current_synonymous_taxon_ids": 5002,
                           "ancestor_ids": 48460})
    assert row["resolved_taxon_id"] == 5002 and row["ancestor_ids"] == "48460"


@pytest.mark.parametrize("record", [{"location": "45.0,abc"}, {"geojson": {"coordinates": [None, 45.0]}}])
def test_half_coordinates_are_no_position(record):
    row = normalize_observation({"id": 1, **record})
    assert (row["latitude"], row["longitude"], row["coord_status"]) == (None, None, "missing")
    assert "half_coordinates" in row["qc_flags"]


def test_blurred_gbif_coordinates_are_obscured_not_exact():
    records = load_fixture("gbif/occurrence_search_taxonKey3329049_fungi_limit300.json")["results"]
    blurred = [r for r in records if r.get("informationWithheld")]
    assert {r["key"] for r in blurred} >= {3914383419, 3922214581, 4402293717, 4431324017}
    for record in blurred:
        row = normalize_occurrence(record)
        assert row["coord_status"] == "obscured" and row["information_withheld"]
    plain = next(r for r in records if not r.get("informationWithheld") and r.get("decimalLatitude"))
    assert normalize_occurrence(plain)["coord_status"] == "exact"


def test_refreshing_the_first_partition_fetches_only_what_changed(replay, data_dir):
    """The first partition synced holds all history; closing it later must not download all history again."""
    resources = make_resources(replay, data_dir)
    today = latest("inaturalist")
    assert dg.materialize([inaturalist_observations], resources=resources, partition_key=today).success
    store = resources["mirror_store"]
    first = pq.read_table(store.parquet_path("inaturalist_observations", today))
    before = len(replay.request_log("inaturalist"))
    assert dg.materialize([inaturalist_observations], resources=resources, partition_key=today).success
    request = replay.request_log("inaturalist")[before]
    assert "updated_since" in request["query"], "a refresh resumes from the last fetch, not from -inf"
    since = datetime.fromisoformat(request["query"]["updated_since"])
    assert datetime.now(UTC) - since < sla.sla("inaturalist").sla
    second = pq.read_table(store.parquet_path("inaturalist_observations", today))
    assert second.equals(first)  # nothing changed upstream: the merged partition is the same
    manifest = store.manifest("inaturalist_observations", today)
    assert manifest["window_start"] is None and manifest["merged_over_previous"]
    assert len(manifest["raw_archives"]) == 2
    rebuilt = pa.Table.from_batches(list(rebuild_from_raw(store, OBSERVATIONS, today)), schema=OBSERVATIONS.schema)
    assert rebuilt.equals(second)


def test_full_refresh_refetches_the_window(replay, data_dir):
    resources = make_resources(replay, data_dir)
    today = latest("inaturalist")
    assert dg.materialize([inaturalist_observations], resources=resources, partition_key=today).success
    before = len(replay.request_log("inaturalist"))
    result = dg.materialize([inaturalist_observations], resources=resources, partition_key=today,
                            run_config={"ops": {"inaturalist_observations": {"config": {"full_refresh": True}}}})
    assert result.success
    assert "updated_since" not in replay.request_log("inaturalist")[before]["query"]
    manifest = resources["mirror_store"].manifest("inaturalist_observations", today)
    assert not manifest["merged_over_previous"] and len(manifest["raw_archives"]) == 1


def test_gbif_partition_after_a_mid_day_resume_holds_only_its_window(replay, data_dir):
    """GBIF filters by whole days: rows interpreted before the resume point are trimmed, not duplicated."""
    resources = make_resources(replay, data_dir)
    assert dg.materialize([gbif_occurrences], resources=resources, partition_key="2024-09-29").success
    assert dg.materialize([gbif_occurrences], resources=resources, partition_key="2024-10-06").success
    store = resources["mirror_store"]
    window = store.stored_window("gbif_occurrences", "2024-10-06")
    table = pq.read_table(store.parquet_path("gbif_occurrences", "2024-10-06"))
    for value in table.column("last_interpreted").to_pylist():
        assert window.start <= value < window.end
    earlier = set(pq.read_table(store.parquet_path("gbif_occurrences", "2024-09-29")).column("key").to_pylist())
    assert not earlier & set(table.column("key").to_pylist())


def test_temp_files_of_a_killed_run_are_swept_later(data_dir):
    store = PartitionStore(data_dir=str(data_dir))
    folder = store.dataset_dir("inaturalist_observations")
    folder.mkdir(parents=True)
    stale = folder / ".2024-05-01.parquet.deadbeef.tmp"
    fresh = folder / ".2024-05-02.parquet.cafebabe.tmp"
    stale.write_bytes(b"x" * 10)
    fresh.write_bytes(b"x" * 10)
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    window = PartitionWindow("2024-05-03", None, datetime(2024, 5, 4, tzinfo=UTC))
    with store.open_run("inaturalist_observations", OBSERVATIONS.schema, [window]):
        pass
    assert not stale.exists() and fresh.exists()
