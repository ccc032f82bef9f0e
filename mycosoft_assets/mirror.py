"""The generic mirror machinery, written once: windows, fetch loop, archive, normalize, atomic write, metadata.

A source declares a ``Dataset`` (name, Arrow schema, pure ``normalize``, natural key, cursor column) and hands
pages from its client to ``mirror_pages``. Everything else here is shared by every source.

Partition windows (the meaning of an incremental partition): partition ``P`` holds the records whose cursor
(update time) falls in ``[start, end)``, where ``end`` is the end of P's time window (or now, while P is still
open) and ``start`` is where the previous sync stopped: the end of the latest partition synced before P, or the
beginning of the source's history when there is none. So the first sync of a source lands every record before
it in the first partition it syncs, a daemon that was down for three days resumes where it stopped, and
re-materializing P reuses the start stored in its manifest, so it is idempotent. Inside a run over a range of
partitions, the first partition starts at the resume point and the others at their own window's start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mycosoft_assets.common import RecordRejected
from resources.http import ApiResponse
from resources.storage import PartitionStore, PartitionWindow, RunWriter


@dataclass(frozen=True)
class Dataset:
    """A declared source dataset: what the machinery needs to mirror it."""

    name: str
    schema: pa.Schema
    normalize: Callable[[Any], dict[str, Any]]
    natural_key: str | tuple[str, ...]
    cursor_column: str | None = None  # the update-time column partitions are windows of
    results_key: str = "results"
    description: str = ""


class SyncConfig(dg.Config):
    """Run config of incremental mirrors."""

    full_refresh: bool = False  # re-fetch every window whole instead of only what changed since the last fetch


@dataclass
class MirrorStats:
    pages: int = 0
    records_received: int = 0
    rows_written: int = 0
    rejected: int = 0
    duplicates: int = 0
    outside_window: int = 0
    source_reported_total: int | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        short = reason.split(":")[0][:80]
        self.reject_reasons[short] = self.reject_reasons.get(short, 0) + 1


def natural_key_of(dataset: Dataset, row: dict[str, Any]) -> Any:
    if isinstance(dataset.natural_key, tuple):
        return tuple(row[column] for column in dataset.natural_key)
    return row[dataset.natural_key]


def run_windows(store: PartitionStore, dataset: str, partitions_def: dg.TimeWindowPartitionsDefinition,
                partition_keys: list[str], now: datetime | None = None) -> list[PartitionWindow]:
    """The windows one run covers, in order; see the module docstring for the rule."""
    now = now or datetime.now(UTC)
    first = partition_keys[0]
    stored = store.stored_window(dataset, first)
    if stored is not None:
        start = stored.start
    else:
        previous = store.previous_synced(dataset, first)
        start = previous.end if previous is not None else None
    windows = []
    for position, key in enumerate(partition_keys):
        time_window = partitions_def.time_window_for_partition_key(key)
        window_start = start if position == 0 else time_window.start.astimezone(UTC)
        windows.append(PartitionWindow(key, window_start, min(time_window.end.astimezone(UTC), now)))
    return windows


# An incremental refresh re-reads a little before the last fetch: sources index updates with some lag.
REFRESH_OVERLAP = timedelta(minutes=15)


@dataclass(frozen=True)
class FetchPlan:
    """What one run asks the source for: everything with a cursor from ``since`` (None: from the beginning), and
    which of its partitions already exist and are merged with what is fetched now."""

    since: datetime | None
    merge: set[str]

    def describe(self) -> str:
        return self.since.isoformat() if self.since else "beginning of history"


def fetch_plan(store: PartitionStore, dataset: str, windows: list[PartitionWindow], full_refresh: bool = False,
               overlap: timedelta = REFRESH_OVERLAP, event_cursor: str | None = None,
               late: timedelta = timedelta(0)) -> FetchPlan:
    """A partition synced before only needs what changed since its last fetch; a new one needs its whole window.
    So refreshing today's partition every few hours, or closing yesterday's, costs a few requests, never a
    re-download of its window (and never of all history for the first partition synced).

    - Update-time cursors (``updated_at``, ``lastInterpreted``): resume at the partition's last fetch minus
      ``overlap`` (sources index updates with some lag).
    - Event-time cursors (``event_cursor``, e.g. a measurement's period start): a record's time says nothing about
      when it was published, so resume at the newest event already held minus ``late`` (how late the source may
      publish), or at the window's start when the partition holds nothing yet.

    ``full_refresh`` re-fetches every window whole."""
    starts: list[datetime | None] = []
    merge: set[str] = set()
    for window in windows:
        manifest = None if full_refresh else store.manifest(dataset, window.key)
        if manifest and manifest.get("fetched_at"):
            merge.add(window.key)
            if event_cursor is None:
                resume: datetime | None = datetime.fromisoformat(manifest["fetched_at"]) - overlap
            else:
                newest = pc.max(pq.read_table(store.parquet_path(dataset, window.key),
                                              columns=[event_cursor]).column(event_cursor)).as_py()
                resume = newest - late if newest is not None else window.start
            if resume is None:
                starts.append(window.start)
            else:
                starts.append(resume if window.start is None else max(window.start, resume))
        else:
            starts.append(window.start)
    if any(start is None for start in starts):
        return FetchPlan(None, merge)
    return FetchPlan(min(starts), merge)  # type: ignore[type-var]


def snapshot_window(now: datetime | None = None) -> list[PartitionWindow]:
    """Unpartitioned snapshots (taxa, species) are one window: everything the source has, as of now."""
    return [PartitionWindow("snapshot", None, now or datetime.now(UTC))]


def mirror_pages(writer: RunWriter, pages: Iterable[ApiResponse], dataset: Dataset,
                 keep: Callable[[dict[str, Any]], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> MirrorStats:
    """Archive every raw page, normalize its records, drop duplicates by natural key, write Arrow batches.
    Memory holds one page and the set of keys seen, never the partition."""
    stats = MirrorStats()
    seen: set[Any] = set()
    for response in pages:
        writer.archive(response.raw)
        payload = response.payload
        records = payload.get(dataset.results_key) if isinstance(payload, dict) else payload
        if stats.source_reported_total is None and isinstance(payload, dict):
            total = payload.get("total_results", payload.get("count"))
            stats.source_reported_total = total if isinstance(total, int) else None
        rows = []
        for record in records or []:
            stats.records_received += 1
            profile_fields(record, writer.field_profile)
            try:
                row = dataset.normalize(record)
            except RecordRejected as exc:
                stats.reject(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one malformed record must not lose the page (raw is kept)
                stats.reject(f"{exc.__class__.__name__}: {exc}")
                continue
            key = natural_key_of(dataset, row)
            if key in seen:
                stats.duplicates += 1
                continue
            if keep is not None and not keep(row):
                stats.outside_window += 1
                continue
            seen.add(key)
            rows.append(row)
        if rows:
            batch = to_batch(rows, dataset.schema, stats)
            writer.write(batch)
            stats.rows_written += batch.num_rows
        stats.pages += 1
        if log is not None and stats.pages % 50 == 0:
            log(f"{dataset.name}: {stats.pages} pages, {stats.rows_written} rows so far")
    return stats


JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


def profile_fields(record: Any, profile: dict[str, Any]) -> None:
    """Count, per top-level field of the raw records, how often it appears and with which JSON types. The schema
    drift check compares this profile with the previous materialization's (a field the API dropped or retyped)."""
    profile["__records__"] = profile.get("__records__", 0) + 1
    if not isinstance(record, dict):
        return
    for name, value in record.items():
        entry = profile.setdefault(name, {"present": 0, "types": []})
        if value is None:
            continue
        entry["present"] += 1
        kind = JSON_TYPES.get(type(value), type(value).__name__)
        if kind not in entry["types"]:
            entry["types"].append(kind)


def to_batch(rows: list[dict[str, Any]], schema: pa.Schema, stats: MirrorStats | None = None) -> pa.RecordBatch:
    """Rows → Arrow. A value Arrow refuses (an integer wider than int64, a wrong type) rejects only its own row."""
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        good = []
        for row in rows:
            try:
                pa.RecordBatch.from_pylist([row], schema=schema)
            except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                if stats is not None:
                    stats.reject(f"{exc.__class__.__name__}: {exc}")
                continue
            good.append(row)
        return pa.RecordBatch.from_pylist(good, schema=schema)


def cursor_before(column: str, end: datetime, start: datetime | None = None) -> Callable[[dict[str, Any]], bool]:
    """Keep rows whose cursor is in the run's window: later updates belong to the next sync, and earlier ones
    (a source that filters by whole days returns some) to the partition that already holds them."""

    def keep(row: dict[str, Any]) -> bool:
        value = row.get(column)
        return value is None or (value < end and (start is None or value >= start))

    return keep


def report_materialization(context: dg.AssetExecutionContext, windows: list[PartitionWindow],
                           counts: dict[str, int], stats: MirrorStats, writer: RunWriter,
                           store: PartitionStore, source_url: str | None = None) -> dg.MaterializeResult:
    """What every mirror materialization reports. Each partition gets its own row count and source window;
    the run's fetch statistics are shared by the partitions it wrote."""
    run_metadata: dict[str, Any] = {
        "served_from": "live",
        # Where "live" came from: the real API, or a replay server on loopback.
        "source_url": source_url or "unknown",
        "fetched_since": _iso_or_open(writer.fetch_since) if writer.fetch_since or writer.merge else
        _iso_or_open(windows[0].start),
        "merged_partitions": dg.MetadataValue.json(sorted(writer.merge)),
        "run_source_window": f"[{_iso_or_open(windows[0].start)}, {windows[-1].end.isoformat()})",
        "run_row_count": sum(counts.values()),
        "pages_fetched": stats.pages,
        "records_received": stats.records_received,
        "records_rejected": stats.rejected,
        "duplicates_dropped": stats.duplicates,
        "records_after_window": stats.outside_window,
        "raw_archive": dg.MetadataValue.path(str(writer.raw_final)),
        "fetched_at": writer.fetched_at.isoformat(),
    }
    if stats.source_reported_total is not None:
        run_metadata["source_reported_total"] = stats.source_reported_total
    if stats.reject_reasons:
        run_metadata["reject_reasons"] = dg.MetadataValue.json(stats.reject_reasons)
    if writer.field_profile:
        run_metadata["source_fields"] = dg.MetadataValue.json(writer.field_profile)
    per_partition = {
        window.key: {
            "dagster/row_count": counts[window.key],
            "source_window": window.describe(),
            "source_window_start": _iso_or_open(window.start),
            "source_window_end": window.end.isoformat(),
            "parquet": dg.MetadataValue.path(str(store.parquet_path(writer.dataset, window.key))),
        }
        for window in windows
    }
    if context.has_partition_key or context.has_partition_key_range:
        for key, metadata in per_partition.items():
            context.add_asset_metadata(metadata, partition_key=key)
        return dg.MaterializeResult(metadata=run_metadata)
    return dg.MaterializeResult(metadata={**run_metadata, **per_partition[windows[0].key]})


def _iso_or_open(value: datetime | None) -> str:
    return value.isoformat() if value else "beginning of history"


def rebuild_from_raw(store: PartitionStore, dataset: Dataset, key: str,
                     batch_rows: int = 5_000) -> Iterator[pa.RecordBatch]:
    """Re-normalize one partition from its archived raw responses, offline: the same rows, in the same order, as
    the runs that wrote it. Archives are read newest first (a merged refresh put its rows first and kept the older
    rows it did not fetch again); the stored window, and each run's ``fetch_since``, select this partition's rows
    from archives of range runs (rows without a cursor went to the run's first partition)."""
    manifest = store.manifest(dataset.name, key)
    if manifest is None:
        raise FileNotFoundError(f"partition {dataset.name}/{key} has not been materialized")
    window = store.stored_window(dataset.name, key)
    first_in_run = manifest.get("run_window", [None])[0] == manifest.get("window_start")
    seen: set[Any] = set()
    rows: list[dict[str, Any]] = []
    for archive in store.raw_archives(dataset.name, key):
        since = datetime.fromisoformat(archive["fetch_since"]) if archive.get("fetch_since") else None
        for page in store.iter_raw_pages(dataset.name, key, archive["path"]):
            payload = json.loads(page["body"])
            records = payload.get(dataset.results_key) if isinstance(payload, dict) else payload
            for record in records or []:
                try:
                    row = dataset.normalize(record)
                    pa.RecordBatch.from_pylist([row], schema=dataset.schema)
                except Exception:  # noqa: BLE001 - rejected at fetch time too
                    continue
                if natural_key_of(dataset, row) in seen:
                    continue
                if dataset.cursor_column is not None and window is not None:
                    cursor = row.get(dataset.cursor_column)
                    if cursor is None:
                        if not first_in_run:
                            continue
                    elif cursor >= window.end or (since is not None and cursor < since) or (
                            not first_in_run and window.start is not None and cursor < window.start):
                        continue
                seen.add(natural_key_of(dataset, row))
                rows.append(row)
                if len(rows) >= batch_rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=dataset.schema)
                    rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=dataset.schema)
