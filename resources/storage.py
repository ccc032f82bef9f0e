"""Local mirror storage: one Parquet file per partition, written atomically, with the raw responses beside it.

Layout under ``data_dir``::

    parquet/<dataset>/<partition_key>.parquet      the partition; its manifest lives in the file's metadata
    raw/<dataset>/<run window>.<stamp>.jsonl.gz    every raw response of the run that wrote it

A partition is replaced as a unit: rows go to a temp file in the same folder, which is renamed over the old
file only when the whole run succeeded. The manifest (window, row count, raw archive, fetch time) is inside the
Parquet file, so one rename commits data and manifest together; a crash at any point leaves the last good
partition as it was. Raw archives no manifest points at any more are pruned after a commit.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from resources.http import RawPage

MANIFEST_KEY = b"mindex_manifest"
PARTITION_INDEX = "__partition_index"
TAKE_CHUNK = 65_536


@dataclass(frozen=True)
class PartitionWindow:
    """The source-time window a partition holds: ``start`` inclusive (None = from the beginning), ``end`` exclusive."""

    key: str
    start: datetime | None
    end: datetime

    def describe(self) -> str:
        return f"[{self.start.isoformat() if self.start else '-inf'}, {self.end.isoformat()})"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class PartitionStore(dg.ConfigurableResource):
    """Where mirrors land. ``data_dir`` defaults to ``data/`` in the repo (``MINDEX_DATA_DIR`` overrides)."""

    data_dir: str = "data"

    # -- paths ----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "parquet" / dataset

    def parquet_path(self, dataset: str, key: str) -> Path:
        return self.dataset_dir(dataset) / f"{key}.parquet"

    def raw_dir(self, dataset: str) -> Path:
        return self.root / "raw" / dataset

    # -- reading --------------------------------------------------------------------------------------------
    def synced_keys(self, dataset: str) -> list[str]:
        folder = self.dataset_dir(dataset)
        if not folder.exists():
            return []
        return sorted(p.name[: -len(".parquet")] for p in folder.glob("*.parquet"))

    def manifest(self, dataset: str, key: str) -> dict[str, Any] | None:
        path = self.parquet_path(dataset, key)
        if not path.exists():
            return None
        meta = pq.read_metadata(path).metadata or {}
        manifest = json.loads(meta[MANIFEST_KEY]) if MANIFEST_KEY in meta else {}
        manifest["row_count"] = pq.read_metadata(path).num_rows
        return manifest

    def stored_window(self, dataset: str, key: str) -> PartitionWindow | None:
        manifest = self.manifest(dataset, key)
        if not manifest or "window_end" not in manifest:
            return None
        return PartitionWindow(key, _parse(manifest.get("window_start")), _parse(manifest["window_end"]))

    def previous_synced(self, dataset: str, before_key: str) -> PartitionWindow | None:
        """The latest partition synced before ``before_key``: where an incremental sync resumes."""
        keys = [k for k in self.synced_keys(dataset) if k < before_key]
        for key in reversed(keys):
            window = self.stored_window(dataset, key)
            if window is not None:
                return window
        return None

    def read_batches(self, dataset: str, key: str, columns: list[str] | None = None,
                     batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
        path = self.parquet_path(dataset, key)
        if not path.exists():
            raise FileNotFoundError(f"partition {dataset}/{key} has not been materialized ({path})")
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)

    def raw_archives(self, dataset: str, key: str) -> list[dict[str, Any]]:
        """The raw archives a partition was built from, newest first, each with the ``fetch_since`` of its run
        (a partition refreshed incrementally is its newest fetch merged over the older ones)."""
        manifest = self.manifest(dataset, key) or {}
        archives = manifest.get("raw_archives")
        if archives is None and manifest.get("raw_archive"):
            archives = [{"path": manifest["raw_archive"], "fetch_since": manifest.get("window_start")}]
        return archives or []

    def iter_raw_pages(self, dataset: str, key: str, archive: str | None = None) -> Iterator[dict[str, Any]]:
        """The raw responses of one archive (default: the newest) a partition was built from."""
        if archive is None:
            archives = self.raw_archives(dataset, key)
            if not archives:
                return
            archive = archives[0]["path"]
        with gzip.open(self.root / archive, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    # -- small JSON caches (e.g. NWS /points lookups, which rarely change) -------------------------------------
    def read_cache(self, name: str) -> dict[str, Any]:
        path = self.root / "cache" / f"{name}.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def write_cache(self, name: str, value: dict[str, Any]) -> None:
        path = self.root / "cache" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    # -- writing --------------------------------------------------------------------------------------------
    def open_run(self, dataset: str, schema: pa.Schema, windows: list[PartitionWindow],
                 route_column: str | None = None, run_info: dict[str, Any] | None = None,
                 merge: set[str] | None = None, key_columns: list[str] | None = None,
                 fetch_since: datetime | None = None) -> RunWriter:
        """A writer for one run over one or more consecutive partitions. With several partitions, each row goes
        to the partition whose window holds its ``route_column`` value (values before the first window go to the
        first partition, whose window is open at the start).

        Partitions named in ``merge`` were fetched only since ``fetch_since`` (an incremental refresh): their new
        file is the rows fetched now plus the rows of the existing file whose natural key (``key_columns``) was
        not fetched again. Every other partition is replaced by exactly what this run fetched."""
        if len(windows) > 1 and route_column is None:
            raise ValueError("a run over several partitions needs a route column")
        if merge and not key_columns:
            raise ValueError("merging into existing partitions needs the natural key columns")
        return RunWriter(self, dataset, schema, windows, route_column, run_info or {}, merge or set(),
                         key_columns or [], fetch_since)


class RunWriter:
    def __init__(self, store: PartitionStore, dataset: str, schema: pa.Schema, windows: list[PartitionWindow],
                 route_column: str | None, run_info: dict[str, Any], merge: set[str] | None = None,
                 key_columns: list[str] | None = None, fetch_since: datetime | None = None):
        self.store = store
        self.merge = set(merge or ())
        self.key_columns = list(key_columns or [])
        self.fetch_since = fetch_since
        self._written_keys: set[Any] = set()
        # Field presence and JSON types of the raw records this run received (filled by the mirror machinery).
        self.field_profile: dict[str, Any] = {}
        # What the partitions being merged held before, read now: the files are replaced at commit.
        self._previous = {key: store.manifest(dataset, key) or {} for key in self.merge}
        self.dataset = dataset
        self.schema = schema
        self.windows = windows
        self.route_column = route_column
        self.run_info = dict(run_info)
        self.fetched_at = datetime.now(UTC)
        self.rows_written = 0
        self.pages_archived = 0
        self.rows_outside_window = 0
        self._token = uuid.uuid4().hex[:8]
        self._temps: list[Path] = []
        self._committed = False
        self._boundaries = [int(w.end.timestamp() * 1_000_000) for w in windows]

        store.dataset_dir(dataset).mkdir(parents=True, exist_ok=True)
        store.raw_dir(dataset).mkdir(parents=True, exist_ok=True)
        _sweep_stale_temps(store.dataset_dir(dataset), store.raw_dir(dataset))
        stamp = self.fetched_at.strftime("%Y%m%dT%H%M%S%fZ")
        span = windows[0].key if len(windows) == 1 else f"{windows[0].key}__{windows[-1].key}"
        self.raw_final = store.raw_dir(dataset) / f"{span}.{stamp}.jsonl.gz"
        self._raw_tmp = self._temp(self.raw_final)
        self._raw = gzip.open(self._raw_tmp, "wt", encoding="utf-8", compresslevel=6)
        if len(windows) == 1:
            self._parquet_tmp = self._temp(store.parquet_path(dataset, windows[0].key))
            self._writer: pq.ParquetWriter | ipc.RecordBatchFileWriter = pq.ParquetWriter(self._parquet_tmp, schema)
        else:
            # Several partitions: spool to an Arrow file and split once at commit, so rows arriving in id order
            # never need one open Parquet writer per day.
            self._spool_schema = schema.append(pa.field(PARTITION_INDEX, pa.int32()))
            self._spool_tmp = self._temp(store.dataset_dir(dataset) / f"spool-{self._token}.arrow")
            self._writer = ipc.new_file(str(self._spool_tmp), self._spool_schema)

    def _temp(self, final: Path) -> Path:
        path = final.with_name(f".{final.name}.{self._token}.tmp")
        self._temps.append(path)
        return path

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._committed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- streaming in ---------------------------------------------------------------------------------------
    def archive(self, page: RawPage) -> None:
        self._raw.write(page.to_json_line())
        self._raw.write("\n")
        self.pages_archived += 1

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = batch.select(self.schema.names) if batch.schema != self.schema else batch
        if len(self.windows) == 1:
            if self.merge:
                self._written_keys.update(self._keys(batch))
            self._writer.write_batch(batch)
        else:
            self._writer.write_batch(self._with_partition_index(batch))
        self.rows_written += batch.num_rows

    def _with_partition_index(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        micros = batch.column(self.route_column).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        # A row without a route value belongs to the first window (the one open at the start).
        values = pc.fill_null(micros, -(2**62)).to_numpy()
        index = np.searchsorted(np.asarray(self._boundaries, dtype=np.int64), values, side="right")
        last = len(self.windows) - 1
        # Later than the run's end: the asset filters these out before writing; clamp defensively.
        self.rows_outside_window += int((index > last).sum())
        index = np.minimum(index, last).astype(np.int32)
        return pa.RecordBatch.from_arrays([*batch.columns, pa.array(index)], schema=self._spool_schema)

    def _keys(self, batch: pa.RecordBatch | pa.Table) -> list[Any]:
        columns = [batch.column(name).to_pylist() for name in self.key_columns]
        return columns[0] if len(columns) == 1 else list(zip(*columns, strict=True))

    def _append_previous(self, writer: pq.ParquetWriter, key: str, written: set[Any]) -> int:
        """Stream the existing partition's rows whose key this run did not fetch again."""
        kept = 0
        for batch in self.store.read_batches(self.dataset, key):
            mask = pa.array([k not in written for k in self._keys(batch)], pa.bool_())
            rest = batch.filter(mask)
            if rest.num_rows:
                writer.write_batch(rest.cast(self.schema) if rest.schema != self.schema else rest)
                kept += rest.num_rows
        return kept

    # -- committing -----------------------------------------------------------------------------------------
    def _manifest(self, window: PartitionWindow) -> dict[str, Any]:
        raw = {"path": str(self.raw_final.relative_to(self.store.root)), "fetch_since": _iso(self.fetch_since)
               if self.fetch_since or window.key in self.merge else _iso(window.start)}
        older = self.store_archives_before(window.key) if window.key in self.merge else []
        return {
            "dataset": self.dataset,
            "partition_key": window.key,
            "window_start": _iso(window.start),
            "window_end": _iso(window.end),
            "fetched_at": self.fetched_at.isoformat(),
            "raw_archive": raw["path"],
            "raw_archives": [raw, *older],
            "merged_over_previous": window.key in self.merge,
            "source_fields": self.field_profile,
            "run_window": [_iso(self.windows[0].start), _iso(self.windows[-1].end)],
            **self.run_info,
        }

    def store_archives_before(self, key: str) -> list[dict[str, Any]]:
        previous = self._previous.get(key) or {}
        archives = previous.get("raw_archives")
        if archives is None and previous.get("raw_archive"):
            archives = [{"path": previous["raw_archive"], "fetch_since": previous.get("window_start")}]
        return list(archives or [])

    def commit(self, **run_info: Any) -> dict[str, int]:
        """Finish every partition's temp file, then rename raw archive and partitions into place."""
        self.run_info.update(run_info)
        self._raw.close()
        counts: dict[str, int] = {}
        finals: list[tuple[Path, Path]] = []
        if len(self.windows) == 1:
            window = self.windows[0]
            counts[window.key] = self.rows_written
            if window.key in self.merge:
                counts[window.key] += self._append_previous(self._writer, window.key, self._written_keys)
            self._writer.add_key_value_metadata({MANIFEST_KEY: json.dumps(self._manifest(window))})
            self._writer.close()
            finals.append((self._parquet_tmp, self.store.parquet_path(self.dataset, window.key)))
        else:
            self._writer.close()
            finals.extend(self._split_spool(counts))
        try:
            for tmp, _ in finals:
                _fsync(tmp)
            _fsync(self._raw_tmp)
            os.replace(self._raw_tmp, self.raw_final)
            for tmp, final in finals:
                os.replace(tmp, final)
        except BaseException:
            # Whatever was renamed already is a complete file; what was not stays as it was. The raw archive
            # is dropped again unless a committed partition points at it.
            self._cleanup()
            self._prune_raw()
            raise
        self._committed = True
        self._cleanup()
        self._prune_raw()
        return counts

    def _split_spool(self, counts: dict[str, int]) -> list[tuple[Path, Path]]:
        source = pa.memory_map(str(self._spool_tmp))
        table = ipc.open_file(source).read_all()
        order = pc.sort_indices(table.column(PARTITION_INDEX))  # stable: keeps arrival order within a day
        sorted_index = pc.take(table.column(PARTITION_INDEX), order).to_numpy()
        finals = []
        start = 0
        for position, window in enumerate(self.windows):
            end = int(sorted_index.searchsorted(position, side="right"))
            tmp = self._temp(self.store.parquet_path(self.dataset, window.key))
            written: set[Any] = set()
            with pq.ParquetWriter(tmp, self.schema) as writer:
                for chunk_start in range(start, end, TAKE_CHUNK):
                    chunk = table.take(order[chunk_start: min(end, chunk_start + TAKE_CHUNK)])
                    chunk = chunk.drop_columns([PARTITION_INDEX])
                    if window.key in self.merge:
                        written.update(self._keys(chunk))
                    writer.write_table(chunk)
                counts[window.key] = end - start
                if window.key in self.merge:
                    counts[window.key] += self._append_previous(writer, window.key, written)
                writer.add_key_value_metadata({MANIFEST_KEY: json.dumps(self._manifest(window))})
            finals.append((tmp, self.store.parquet_path(self.dataset, window.key)))
            start = end
        return finals

    def abort(self) -> None:
        try:
            self._raw.close()
        finally:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the writer may be half-open after the failure we are handling
                pass
            self._cleanup()

    def _cleanup(self) -> None:
        for path in self._temps:
            path.unlink(missing_ok=True)

    def _prune_raw(self) -> None:
        """Drop raw archives that no partition manifest references any more (a re-run superseded them)."""
        referenced = set()
        for key in self.store.synced_keys(self.dataset):
            for archive in self.store.raw_archives(self.dataset, key):
                referenced.add(Path(archive["path"]).name)
        for path in self.store.raw_dir(self.dataset).glob("*.jsonl.gz"):
            if path.name not in referenced:
                path.unlink(missing_ok=True)


STALE_TEMP_SECONDS = 6 * 3600


def _sweep_stale_temps(*folders: Path) -> None:
    """Temp files of a run that was killed hard (SIGKILL, OOM) are never cleaned by that run; drop them once they
    are old enough that no live run can own them. Runs of one dataset never take that long."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for folder in folders:
        for path in folder.glob(".*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_rows(writer: RunWriter, rows: Iterable[dict[str, Any]]) -> None:
    """Convenience for small inputs (tests, snapshots): one batch from a list of row dicts."""
    rows = list(rows)
    if rows:
        writer.write(pa.RecordBatch.from_pylist(rows, schema=writer.schema))
