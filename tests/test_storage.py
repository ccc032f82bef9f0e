"""Atomic, idempotent partition writes (case C16) and the raw archive that can rebuild a partition."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mycosoft_assets.inaturalist.normalize import OBSERVATION_SCHEMA, normalize_observation
from resources.http import RawPage
from resources.storage import PartitionStore, PartitionWindow
from tests.conftest import FIXTURES

DAY = PartitionWindow("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC))


def records() -> list[dict]:
    lines = (FIXTURES / "inaturalist" / "derived_observation_results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def page(recs: list[dict]) -> RawPage:
    return RawPage(url="http://127.0.0.1/v1/observations", params={"id_above": 0}, status=200,
                   content_type="application/json", fetched_at=datetime.now(UTC).isoformat(),
                   text=json.dumps({"total_results": len(recs), "results": recs}))


def write(store: PartitionStore, recs: list[dict], window: PartitionWindow = DAY) -> None:
    with store.open_run("inaturalist_observations", OBSERVATION_SCHEMA, [window]) as writer:
        writer.archive(page(recs))
        writer.write(pa.RecordBatch.from_pylist([normalize_observation(r) for r in recs], schema=OBSERVATION_SCHEMA))


def test_partition_lands_with_manifest_and_raw_archive(data_dir: Path):
    store = PartitionStore(data_dir=str(data_dir))
    write(store, records()[:5])
    manifest = store.manifest("inaturalist_observations", "2024-05-01")
    assert manifest["row_count"] == 5
    assert manifest["window_start"] == "2024-05-01T00:00:00+00:00"
    assert manifest["window_end"] == "2024-05-02T00:00:00+00:00"
    raw = list(store.iter_raw_pages("inaturalist_observations", "2024-05-01"))
    assert len(raw) == 1 and json.loads(raw[0]["body"])["total_results"] == 5


def test_crash_after_temp_file_written_keeps_previous_partition(data_dir: Path, monkeypatch):
    store = PartitionStore(data_dir=str(data_dir))
    write(store, records()[:5])
    path = store.parquet_path("inaturalist_observations", "2024-05-01")
    before = path.read_bytes()

    real_replace = os.replace

    def crash_on_partition(src, dst):
        if str(dst).endswith(".parquet"):
            assert Path(src).exists() and Path(src).stat().st_size > 0  # the temp file was fully written
            raise OSError("simulated crash after the temp file was written")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_partition)
    with pytest.raises(OSError, match="simulated crash"):
        write(store, records()[:20])
    monkeypatch.setattr(os, "replace", real_replace)

    assert path.read_bytes() == before
    assert pq.read_metadata(path).num_rows == 5
    assert not list(path.parent.glob(".*.tmp")), "temp files must be cleaned up"


def test_exception_mid_stream_leaves_previous_partition(data_dir: Path):
    store = PartitionStore(data_dir=str(data_dir))
    write(store, records()[:3])
    with pytest.raises(RuntimeError):
        with store.open_run("inaturalist_observations", OBSERVATION_SCHEMA, [DAY]) as writer:
            writer.write(pa.RecordBatch.from_pylist([normalize_observation(r) for r in records()],
                                                    schema=OBSERVATION_SCHEMA))
            raise RuntimeError("source died mid-partition")
    assert store.manifest("inaturalist_observations", "2024-05-01")["row_count"] == 3
    assert not list(store.dataset_dir("inaturalist_observations").glob(".*.tmp"))
    assert not list(store.raw_dir("inaturalist_observations").glob(".*.tmp"))


def test_rewrite_is_idempotent_and_prunes_superseded_raw(data_dir: Path):
    store = PartitionStore(data_dir=str(data_dir))
    write(store, records()[:7])
    first = pq.read_table(store.parquet_path("inaturalist_observations", "2024-05-01"))
    write(store, records()[:7])
    second = pq.read_table(store.parquet_path("inaturalist_observations", "2024-05-01"))
    assert first.equals(second)
    assert len(list(store.raw_dir("inaturalist_observations").glob("*.jsonl.gz"))) == 1


def test_range_run_routes_rows_by_update_time(data_dir: Path):
    """One fetch over three days lands each record in the day of its updated_at; the first day's window is open
    at the start, so everything updated before the range lands there."""
    store = PartitionStore(data_dir=str(data_dir))
    windows = [
        PartitionWindow("2024-05-17", None, datetime(2024, 5, 18, tzinfo=UTC)),
        PartitionWindow("2024-05-18", datetime(2024, 5, 18, tzinfo=UTC), datetime(2024, 5, 19, tzinfo=UTC)),
        PartitionWindow("2024-05-19", datetime(2024, 5, 19, tzinfo=UTC), datetime(2024, 5, 20, tzinfo=UTC)),
    ]
    rows = [normalize_observation(r) for r in records()]
    in_range = [r for r in rows if r["updated_at"] < datetime(2024, 5, 20, tzinfo=UTC)]
    with store.open_run("inaturalist_observations", OBSERVATION_SCHEMA, windows, route_column="updated_at") as w:
        w.write(pa.RecordBatch.from_pylist(in_range, schema=OBSERVATION_SCHEMA))
        counts = w.commit()
    expected = {
        "2024-05-17": sum(1 for r in in_range if r["updated_at"] < datetime(2024, 5, 18, tzinfo=UTC)),
        "2024-05-18": sum(1 for r in in_range if datetime(2024, 5, 18, tzinfo=UTC) <= r["updated_at"]
                          < datetime(2024, 5, 19, tzinfo=UTC)),
        "2024-05-19": sum(1 for r in in_range if datetime(2024, 5, 19, tzinfo=UTC) <= r["updated_at"]),
    }
    assert counts == expected
    # 216357655 was updated 2024-05-18T10:14:11-07:00 (05-18 UTC); 216675045 at 2024-05-18T19:27:34-07:00,
    # which is 2024-05-19 02:27 UTC: partitions are UTC days.
    assert expected["2024-05-18"] == 1
    ids_19 = pq.read_table(store.parquet_path("inaturalist_observations", "2024-05-19")).column("id").to_pylist()
    assert 216675045 in ids_19
    for key, count in expected.items():
        table = pq.read_table(store.parquet_path("inaturalist_observations", key))
        assert table.num_rows == count
        window = store.stored_window("inaturalist_observations", key)
        for value in table.column("updated_at").to_pylist():
            assert (window.start is None or value >= window.start) and value < window.end
