"""The stream machinery, written once for every collector-fed source (OpenSky, AISStream).

A collector (``mindex collect <source>``) lands what it receives in the durable spool (``resources/spool.py``),
hour by hour of *receipt*. The assets here turn one spool hour into one hourly Parquet partition: every record is
normalized, deduplicated on its natural key (polls overlap, reconnects replay), and written atomically with a
manifest saying what it was built from. The same rule holds live and in replay: partitions and the rolling 24 h
retention use the time the collector received a record; the record keeps its own timestamps as the source sent them.

A stream mirror materializes only when its spool has something new, so when a collector stops, the asset stops
being materialized and its freshness policy turns it stale in the UI: the truthful signal.
"""


import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from mycosoft_assets import sla
from mycosoft_assets.common import RecordRejected
from mycosoft_assets.mirror import profile_fields
from resources.spool import GAP_KIND, SpoolReader, hour_from_partition_key, hour_start, partition_key_of_hour
from resources.storage import MANIFEST_KEY, PartitionStore

# One spool line -> (rows, rejects) for a dataset; a reject is ``{"reason": ..., "record": raw}``. Lines of other
# kinds yield ([], []); a line that cannot be read at all raises RecordRejected.
RowsOf = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], list[dict[str, Any]]]]


@dataclass(frozen=True)
class StreamDataset:
    name: str
    source: str
    schema: pa.Schema
    natural_key: tuple[str, ...]
    rows_of: RowsOf
    raw_of: Callable[[dict[str, Any]], Iterable[Any]] = lambda line: ()  # raw records to profile (schema drift)
    description: str = ""


@dataclass
class HourCompaction:
    key: str
    hour: str
    spool_files: int = 0
    spool_lines: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0
    rejected: int = 0
    corrupt_lines: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    first_received_at: str | None = None
    last_received_at: str | None = None
    last_spool_file: str | None = None


def spool_reader(store: PartitionStore, source: str) -> SpoolReader:
    return SpoolReader(store.root, source)


def spool_signature(store: PartitionStore, source: str, key: str) -> str | None:
    """What a partition would be built from: the name of the hour's newest batch file (batches are immutable and
    their names sort by receipt), or None when the hour has no batch."""
    files = spool_reader(store, source).batch_files(hour_from_partition_key(key))
    return f"{len(files)}:{files[-1].name}" if files else None


def needs_compaction(store: PartitionStore, dataset: StreamDataset, key: str) -> bool:
    signature = spool_signature(store, dataset.source, key)
    if signature is None:
        return False
    manifest = store.manifest(dataset.name, key) or {}
    return manifest.get("spool_signature") != signature


def compact_hour(store: PartitionStore, dataset: StreamDataset, key: str) -> HourCompaction:
    """Build partition ``key`` of ``dataset`` from its spool hour, replacing the old file atomically."""
    reader = spool_reader(store, dataset.source)
    hour = hour_from_partition_key(key)
    stats = HourCompaction(key=key, hour=hour)
    files = reader.batch_files(hour)
    stats.spool_files = len(files)
    stats.last_spool_file = files[-1].name if files else None
    seen: set[tuple[Any, ...]] = set()
    rows: list[dict[str, Any]] = []
    profile: dict[str, Any] = {}
    for line in reader.read_hour(hour):
        stats.spool_lines += 1
        kind = line.get("kind")
        received = line.get("received_at")
        if received:
            stats.first_received_at = min(stats.first_received_at or received, received)
            stats.last_received_at = max(stats.last_received_at or received, received)
        if kind == "corrupt":
            stats.corrupt_lines += 1
            continue
        if kind == GAP_KIND:
            stats.gaps.append(line["record"])
            continue
        for raw in dataset.raw_of(line):
            profile_fields(raw, profile)
        try:
            produced, rejects = dataset.rows_of(line)
        except RecordRejected as exc:
            produced, rejects = [], [{"reason": str(exc)}]
        for reject in rejects:
            stats.rejected += 1
            reason = str(reject.get("reason", "rejected")).split(":")[0][:80]
            stats.reject_reasons[reason] = stats.reject_reasons.get(reason, 0) + 1
        for row in produced:
            natural = tuple(row.get(c) for c in dataset.natural_key)
            if natural in seen:
                stats.duplicates_dropped += 1
                continue
            seen.add(natural)
            rows.append(row)
    table = pa.Table.from_pylist(rows, schema=dataset.schema)
    stats.rows_written = table.num_rows
    start = hour_start(hour)
    manifest = {
        "window_start": start.isoformat(), "window_end": (start + timedelta(hours=1)).isoformat(),
        "spool_signature": f"{len(files)}:{files[-1].name}" if files else None,
        "spool_files": stats.spool_files, "spool_lines": stats.spool_lines,
        "duplicates_dropped": stats.duplicates_dropped, "rejected": stats.rejected, "gaps": len(stats.gaps),
        "first_received_at": stats.first_received_at, "last_received_at": stats.last_received_at,
        "compacted_at": datetime.now(UTC).isoformat(), "source_fields": profile,
    }
    table = table.replace_schema_metadata({MANIFEST_KEY: json.dumps(manifest)})
    final = store.parquet_path(dataset.name, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return stats


def retention_cutoff(source: str, now: datetime | None = None) -> datetime | None:
    """Records received before this are past the source's rolling window (SLA table ``retention``)."""
    keep = sla.retention(source)
    return None if keep is None else (now or datetime.now(UTC)) - keep


def expired_keys(keys: Iterable[str], cutoff: datetime) -> list[str]:
    """Hourly partition keys whose whole hour ended at or before ``cutoff``."""
    return sorted(k for k in keys
                  if hour_start(hour_from_partition_key(k)) + timedelta(hours=1) <= cutoff)


def drop_expired_partitions(store: PartitionStore, dataset: str, cutoff: datetime) -> list[dict[str, Any]]:
    """Remove the Parquet partitions of ``dataset`` that are entirely older than ``cutoff``."""
    removed = []
    for key in expired_keys(store.synced_keys(dataset), cutoff):
        manifest = store.manifest(dataset, key) or {}
        store.parquet_path(dataset, key).unlink(missing_ok=True)
        removed.append({"dataset": dataset, "partition_key": key, "rows": manifest.get("row_count", 0)})
    return removed


def drop_expired_spool(store: PartitionStore, source: str, cutoff: datetime) -> list[str]:
    return [partition_key_of_hour(h) for h in spool_reader(store, source).drop_hours_before(cutoff)]


def collector_health(store: PartitionStore, source: str, now: datetime | None = None) -> dict[str, Any]:
    """The collector's heartbeat as metadata: alive or not, last message, reconnects."""
    now = now or datetime.now(UTC)
    beat = spool_reader(store, source).heartbeat()
    if beat is None:
        return {"collector_status": "never started", "collector_heartbeat_at": "never"}
    at = datetime.fromisoformat(beat["at"])
    age = (now - at).total_seconds()
    # A poller writes its heartbeat once per poll (anonymous global OpenSky: every 864 s, or after a 429's wait):
    # it is alive until a minute past the poll it announced, and never judged on less than the warn window.
    alive_for = sla.sla(source).warn_after.total_seconds()
    if beat.get("next_poll_at"):
        alive_for = max(alive_for, (datetime.fromisoformat(beat["next_poll_at"]) - at).total_seconds() + 60)
    stopped = bool(beat.get("stopped")) or beat.get("state") in ("stopped", "failed")
    health: dict[str, Any] = {
        "collector_status": "stopped" if stopped or age > alive_for else "running",
        "collector_heartbeat_at": beat["at"],
        "collector_heartbeat_age_s": round(age, 1),
    }
    for name in ("last_message_at", "last_success_at", "last_poll_at", "reconnects", "gaps", "gap_open_since",
                 "last_error", "connected", "messages", "state"):
        if beat.get(name) is not None:
            health[f"collector_{name}"] = beat[name] if isinstance(beat[name], (int, float, bool)) else str(beat[name])
    return health


def gap_seconds(gap: dict[str, Any], now: datetime | None = None) -> float:
    """How long a recorded gap lasted (an open gap lasts until now)."""
    start = datetime.fromisoformat(gap["disconnected_at"])
    end = datetime.fromisoformat(gap["reconnected_at"]) if gap.get("reconnected_at") else (now or datetime.now(UTC))
    return max(0.0, (end - start).total_seconds())


def spool_root(store: PartitionStore) -> Path:
    return store.root / "spool"


# --- asset factories: every stream source gets the same two kinds of asset ------------------------------------
def stream_partition_keys(store: PartitionStore, datasets: Iterable[StreamDataset], now: datetime) -> list[str]:
    """The hours a refresh compacts: from the oldest spool hour inside the retention window whose batches changed
    since it was compacted, to the newest hour with data (or the open hour). Never an expired hour."""
    datasets = list(datasets)
    source = datasets[0].source
    partitions = sla.partitions_def(source)
    open_key = partitions.get_partition_keys(current_time=now)[-1]
    cutoff = retention_cutoff(source, now)
    hours = [partition_key_of_hour(h) for h in spool_reader(store, source).hours()]
    live = [k for k in hours if cutoff is None or k not in expired_keys([k], cutoff)]
    changed = [k for k in live if any(needs_compaction(store, d, k) for d in datasets)]
    first = changed[0] if changed else open_key
    last = max([open_key, *live]) if live else open_key
    keys = partitions.get_partition_keys(current_time=now)
    if first not in keys or last not in keys:
        return [open_key]
    return keys[keys.index(first): keys.index(last) + 1]


def build_stream_mirror(dataset: StreamDataset) -> dg.AssetsDefinition:
    """The Parquet mirror of one stream dataset: hourly partitions compacted from the spool, the rolling
    retention applied, and the collector's health in the metadata. Skipped (no materialization, so freshness
    ages truthfully) when the spool has nothing new for the requested hours."""
    from mycosoft_assets.assetkit import source_asset_args

    args = source_asset_args(dataset.source, name=dataset.name, description=dataset.description, pool=False)
    spec = dg.AssetSpec(dataset.name, skippable=True, group_name=args["group_name"], description=args["description"],
                        freshness_policy=args["freshness_policy"], kinds=args["kinds"], tags=args["tags"],
                        metadata=args["metadata"], partitions_def=args["partitions_def"])

    @dg.multi_asset(specs=[spec], name=dataset.name, partitions_def=args["partitions_def"],
                    backfill_policy=dg.BackfillPolicy.single_run(), can_subset=False)
    def _mirror(context: dg.AssetExecutionContext, mirror_store: PartitionStore):
        now = datetime.now(UTC)
        cutoff = retention_cutoff(dataset.source, now)
        keys = list(context.partition_keys)
        expired = expired_keys(keys, cutoff) if cutoff else []
        if expired:
            raise dg.Failure(f"{dataset.name}: partitions {expired[0]}..{expired[-1]} are older than the rolling "
                             f"{sla.retention(dataset.source)} window (received before {cutoff.isoformat()}); "
                             "their data has been removed by retention")
        health = collector_health(mirror_store, dataset.source, now)
        removed = drop_expired_partitions(mirror_store, dataset.name, cutoff) if cutoff else []
        removed_spool = drop_expired_spool(mirror_store, dataset.source, cutoff) if cutoff else []
        if not any(needs_compaction(mirror_store, dataset, k) for k in keys):
            context.log_event(dg.AssetObservation(asset_key=dataset.name, metadata={
                **health, "note": "the spool has nothing new for these hours: not materialized, so freshness "
                                  "shows how long the collector has been silent"}))
            context.log.warning(f"{dataset.name}: nothing new in the spool for {keys[0]}..{keys[-1]} "
                                f"(collector {health['collector_status']})")
            return
        total = 0
        gaps: list[dict[str, Any]] = []
        for key in keys:
            stats = compact_hour(mirror_store, dataset, key)
            total += stats.rows_written
            gaps.extend(stats.gaps)
            context.add_asset_metadata({
                "dagster/row_count": stats.rows_written,
                "spool_files": stats.spool_files,
                "spool_lines": stats.spool_lines,
                "duplicates_dropped": stats.duplicates_dropped,
                "records_rejected": stats.rejected,
                "reject_reasons": dg.MetadataValue.json(stats.reject_reasons),
                "gaps": len(stats.gaps),
                "received_window": f"[{stats.first_received_at}, {stats.last_received_at}]",
                "parquet": dg.MetadataValue.path(str(mirror_store.parquet_path(dataset.name, key))),
            }, asset_key=dg.AssetKey(dataset.name), partition_key=key)
        yield dg.MaterializeResult(asset_key=dataset.name, metadata={
            **health,
            "served_from": "live",
            "run_row_count": total,
            "gaps_in_run": len(gaps),
            "longest_gap_s": round(max((gap_seconds(g, now) for g in gaps), default=0.0), 1),
            "retention": str(sla.retention(dataset.source)),
            "retention_cutoff": cutoff.isoformat() if cutoff else "none",
            "partitions_removed": dg.MetadataValue.json([r["partition_key"] for r in removed]),
            "spool_hours_removed": dg.MetadataValue.json(removed_spool),
        })

    return _mirror


def build_stream_mindex(dataset: StreamDataset, table_name: str, asset_name: str,
                        description: str) -> dg.AssetsDefinition:
    """The MINDEX table of one stream dataset: each hour replaced as a unit from its Parquet partition, the
    hour's collector gaps in ``stream_gaps``, and rows past the rolling window deleted and logged."""
    from mycosoft_assets.mindex import schema
    from mycosoft_assets.quality import quarantine
    from resources.mindex_db import MindexDatabase, upsert

    table = schema.metadata.tables[table_name]
    partitions = sla.partitions_def(dataset.source)

    @dg.asset(name=asset_name, group_name="mindex", deps=[dataset.name], description=description,
              freshness_policy=sla.freshness_policy(dataset.source), kinds={"sql"}, tags={"source": dataset.source},
              partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def _mindex(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                mindex_db: MindexDatabase) -> dg.MaterializeResult:
        import sqlalchemy as sa

        schema.ensure_schema(mindex_db.engine)
        now = datetime.now(UTC)
        cutoff = retention_cutoff(dataset.source, now)
        loaded = quarantined = 0
        with mindex_db.engine.begin() as conn:
            for key in context.partition_keys:
                conn.execute(table.delete().where(table.c.partition_key == key))
                rows = set_aside = 0
                if mirror_store.manifest(dataset.name, key) is not None:
                    for batch in mirror_store.read_batches(dataset.name, key):
                        records = [{**r, "partition_key": key} for r in batch.to_pylist()]
                        good, bad = quarantine.split(table_name, records, now)
                        set_aside += quarantine.store(conn, dataset.name, key, dataset.natural_key, bad, good)
                        # A poll straddling an hour boundary lands a state in two hours: one row, the later hour.
                        upsert(conn, table, good, list(dataset.natural_key))
                        rows += len(good)
                gaps = load_gaps(conn, mirror_store, dataset.source, key, now)
                loaded += rows
                quarantined += set_aside
                context.add_asset_metadata({"dagster/row_count": rows, "gaps": gaps, "quarantined": set_aside},
                                           partition_key=key)
            removed: list[dict[str, Any]] = []
            if cutoff is not None:
                stale = conn.execute(sa.select(table.c.partition_key, sa.func.count()).where(
                    table.c.received_at < cutoff).group_by(table.c.partition_key)).all()
                conn.execute(table.delete().where(table.c.received_at < cutoff))
                conn.execute(schema.stream_gaps.delete().where(sa.and_(
                    schema.stream_gaps.c.source == dataset.source, schema.stream_gaps.c.disconnected_at < cutoff,
                    schema.stream_gaps.c.reconnected_at.is_not(None))))
                removed = [{"removed_at": now, "dataset": table_name, "partition_key": key, "rows": count,
                            "cutoff": cutoff} for key, count in stale]
                if removed:
                    conn.execute(schema.retention_log.insert(), removed)
            held = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0
            oldest = conn.execute(sa.select(sa.func.min(table.c.received_at))).scalar()
        return dg.MaterializeResult(metadata={
            "run_row_count": loaded, "table_rows": held, "quarantined": quarantined,
            "oldest_received_at": str(oldest) if oldest else "none",
            "retention_cutoff": cutoff.isoformat() if cutoff else "none",
            "rows_removed_by_retention": sum(r["rows"] for r in removed),
            "database": mindex_db.describe(),
        })

    return _mindex


def load_gaps(conn: Any, store: PartitionStore, source: str, key: str, now: datetime) -> int:
    """Replace the hour's rows of ``stream_gaps`` with the gap records of its spool hour."""
    import sqlalchemy as sa

    from mycosoft_assets.mindex.schema import stream_gaps

    conn.execute(stream_gaps.delete().where(sa.and_(stream_gaps.c.source == source,
                                                    stream_gaps.c.partition_key == key)))
    rows = {}
    for line in spool_reader(store, source).read_hour(hour_from_partition_key(key)):
        if line.get("kind") != GAP_KIND:
            continue
        gap = line["record"]
        detail = {k: v for k, v in gap.items() if k not in ("disconnected_at", "reconnected_at", "reason")}
        start = datetime.fromisoformat(gap["disconnected_at"])
        rows[start] = {"source": source, "disconnected_at": start,
                       "reconnected_at": datetime.fromisoformat(gap["reconnected_at"])
                       if gap.get("reconnected_at") else None,
                       "seconds": gap_seconds(gap, now), "reason": gap.get("reason"),
                       "detail": json.dumps(detail, default=str), "partition_key": key}
    if rows:
        # A gap that spans an hour boundary is recorded once, in the hour it ended in.
        conn.execute(stream_gaps.delete().where(sa.and_(stream_gaps.c.source == source,
                                                        stream_gaps.c.disconnected_at.in_(list(rows)))))
        conn.execute(stream_gaps.insert(), list(rows.values()))
    return len(rows)
