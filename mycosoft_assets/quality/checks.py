"""Generic, partition-aware asset checks for every mirror asset, driven by the declarations in ``rules.py``.

Each check reads only the partitions of the run it checks (``context.partition_keys``), never the whole asset
(case C19). ``evaluate`` is a pure function over an Arrow table, so every failure mode is a small unit test.
"""


from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mycosoft_assets.quality.rules import (
    CHECK_DESCRIPTIONS,
    COLLECTOR_GAPS,
    COMPLETENESS,
    FUTURE_SKEW,
    NON_EMPTY,
    QUARANTINED,
    REQUIRED_FIELDS,
    SCHEMA_DRIFT,
    TIMESTAMPS,
    UNIQUE_KEY,
    VALUE_RANGES,
    Rules,
    rules_for,
)
from resources.storage import PartitionStore

BLOCKING = {UNIQUE_KEY, SCHEMA_DRIFT}
MIRROR_CHECKS = (NON_EMPTY, UNIQUE_KEY, REQUIRED_FIELDS, SCHEMA_DRIFT, VALUE_RANGES, TIMESTAMPS, COMPLETENESS)
EXAMPLES = 5
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _result(name: str, passed: bool, severity: dg.AssetCheckSeverity = ERROR, **metadata: Any) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=passed, severity=severity,
                               metadata={k: v for k, v in metadata.items() if v is not None})


def drift(before: dict[str, Any] | None, now: dict[str, Any] | None) -> tuple[list[str], list[str], list[str]]:
    """(removed, retyped, added) source fields between two field profiles (see ``mirror.profile_fields``).
    A field counts as removed only when it was in nearly every record before and is in none of a sizeable batch
    now (APIs such as GBIF omit absent fields per record); retyped when its non-null JSON types changed entirely."""
    if not before or not now:
        return [], [], []
    records_before = before.get("__records__", 0)
    records_now = now.get("__records__", 0)
    removed, retyped, added = [], [], []
    for name, old in before.items():
        if name == "__records__" or not isinstance(old, dict):
            continue
        new = now.get(name)
        new_present = new["present"] if isinstance(new, dict) else 0
        if records_before and old["present"] >= 0.9 * records_before and records_now >= 10 and new_present == 0:
            removed.append(name)
        elif isinstance(new, dict) and old["types"] and new["types"] and not set(old["types"]) & set(new["types"]):
            retyped.append(f"{name}: {'/'.join(old['types'])} -> {'/'.join(new['types'])}")
    for name, new in now.items():
        if name != "__records__" and name not in before and isinstance(new, dict) and new["present"]:
            added.append(name)
    return sorted(removed), sorted(retyped), sorted(added)


def evaluate(table: pa.Table, rules: Rules, profile_now: dict[str, Any] | None = None,
             profile_before: dict[str, Any] | None = None, fetch: dict[str, Any] | None = None,
             now: datetime | None = None) -> list[dg.AssetCheckResult]:
    """Every mirror check over the rows of the checked partitions."""
    now = now or datetime.now(UTC)
    results = []
    rows = table.num_rows
    results.append(_result(NON_EMPTY, rows > 0 or not rules.never_empty, ERROR, rows=rows,
                           note=None if rules.never_empty else "partitions of this source may be empty"))

    keys = table.select(list(rules.key_columns))
    dupes: list[Any] = []
    if rows:
        counts = keys.group_by(list(rules.key_columns)).aggregate([([], "count_all")])
        repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
        dupes = repeated.slice(0, EXAMPLES).to_pylist()
        duplicate_keys = repeated.num_rows
    else:
        duplicate_keys = 0
    results.append(_result(UNIQUE_KEY, duplicate_keys == 0, ERROR, duplicate_keys=duplicate_keys,
                           examples=dg.MetadataValue.json(dupes) if dupes else None))

    missing_columns = [c for c in rules.required if c not in table.column_names]
    nulls = {c: table.column(c).null_count for c in rules.required if c in table.column_names}
    bad = {c: n for c, n in nulls.items() if n}
    results.append(_result(REQUIRED_FIELDS, not bad and not missing_columns, ERROR,
                           null_counts=dg.MetadataValue.json(nulls), missing_columns=missing_columns or None))

    contract_broken = []
    for expected in rules.schema:
        if expected.name not in table.column_names:
            contract_broken.append(f"missing column {expected.name}")
        elif not table.schema.field(expected.name).type.equals(expected.type):
            contract_broken.append(f"{expected.name}: {table.schema.field(expected.name).type} != {expected.type}")
    extra = [c for c in table.column_names if c not in rules.schema.names]
    removed, retyped, added = drift(profile_before, profile_now)
    broken = bool(contract_broken or extra or removed or retyped)
    results.append(_result(SCHEMA_DRIFT, not broken, ERROR if broken else WARN,
                           contract=dg.MetadataValue.json(contract_broken + [f"unexpected column {c}" for c in extra])
                           if contract_broken or extra else None,
                           source_fields_removed=removed or None, source_fields_retyped=retyped or None,
                           source_fields_added=added or None,
                           compared_with="the last materialization that passed schema_drift" if profile_before
                           else "no previous profile"))

    out_of_range: dict[str, int] = {}
    examples: dict[str, list[Any]] = {}
    for column, (low, high) in rules.ranges.items():
        if column not in table.column_names or not rows:
            continue
        values = table.column(column)
        outside = pc.or_(pc.less(values, low), pc.greater(values, high))
        count = pc.sum(pc.cast(pc.fill_null(outside, False), pa.int64())).as_py() or 0
        if count:
            out_of_range[column] = count
            examples[column] = pc.filter(values, pc.fill_null(outside, False)).slice(0, EXAMPLES).to_pylist()
    flagged: dict[str, int] = {}
    if "qc_flags" in table.column_names:
        for flags in table.column("qc_flags").to_pylist():
            for flag in (flags or "").split(","):
                if flag:
                    flagged[flag] = flagged.get(flag, 0) + 1
    sentinels = (pc.sum(pc.cast(table.column("is_missing_sentinel"), pa.int64())).as_py() or 0
                 if "is_missing_sentinel" in table.column_names and rows else 0)
    results.append(_result(VALUE_RANGES, not out_of_range, WARN, out_of_range=dg.MetadataValue.json(out_of_range),
                           examples=dg.MetadataValue.json(examples) if examples else None,
                           flagged_rows=dg.MetadataValue.json(flagged), sentinels=sentinels))

    not_utc, future, latest = [], {}, {}
    for column in (*rules.timestamps, *rules.future_ok):
        if column not in table.column_names:
            continue
        kind = table.schema.field(column).type
        if not (pa.types.is_timestamp(kind) and kind.tz in ("UTC", "+00:00")):
            not_utc.append(f"{column}: {kind}")
            continue
        if column in rules.timestamps and rows:
            top = pc.max(table.column(column)).as_py()
            if top is not None:
                latest[column] = top.isoformat()
                ahead = pc.sum(pc.cast(pc.fill_null(pc.greater(table.column(column), pa.scalar(
                    now + FUTURE_SKEW, type=kind)), False), pa.int64())).as_py() or 0
                if ahead:
                    future[column] = ahead
    results.append(_result(TIMESTAMPS, not not_utc and not future, ERROR, not_utc=not_utc or None,
                           future_rows=dg.MetadataValue.json(future) if future else None,
                           latest=dg.MetadataValue.json(latest), allowed_skew=str(FUTURE_SKEW)))

    reported = (fetch or {}).get("source_reported_total")
    received = (fetch or {}).get("records_received")
    if rules.completeness and isinstance(reported, int) and isinstance(received, int):
        results.append(_result(COMPLETENESS, received >= reported, WARN, records_received=received,
                               source_reported_total=reported))
    else:
        results.append(_result(COMPLETENESS, True, WARN, note="the source reports no total for this query"))
    return results


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None, run_id: str | None,
                     previous: bool = False) -> dict[str, Any]:
    """Metadata of this run's materialization, or, with ``previous``, of the last one from another run that did
    not fail schema_drift: the baseline is the last good shape, so a source that drifts and then comes back is
    not judged against its own broken answer."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=25).records
    drifted: set[str] = set()
    if previous:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), SCHEMA_DRIFT), limit=25)
        drifted = {r.run_id for r in history if r.status.value == "FAILED"}
    for record in records:
        if (record.run_id == run_id) != previous and record.run_id not in drifted:
            metadata = record.asset_materialization.metadata
            return {k: v.value for k, v in metadata.items()}
    return {}


def mirror_checks(asset: str, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetChecksDefinition:
    rules = rules_for(asset)
    specs = [dg.AssetCheckSpec(name, asset=asset, blocking=name in BLOCKING, description=CHECK_DESCRIPTIONS[name],
                               partitions_def=partitions_def) for name in MIRROR_CHECKS]

    @dg.multi_asset_check(specs=specs, name=f"{asset}_checks", can_subset=False,
                          description=f"Data-quality checks of the {asset} mirror (reads only the checked partitions).")
    def _checks(context: dg.AssetCheckExecutionContext, mirror_store: PartitionStore):
        keys = context.partition_keys if partitions_def is not None else ["snapshot"]
        tables, profiles = [], []
        for key in keys:
            if mirror_store.manifest(asset, key) is None:
                continue  # never materialized: nothing to read (case C19), and non_empty says so
            tables.append(pq.read_table(mirror_store.parquet_path(asset, key)))
            profiles.append((mirror_store.manifest(asset, key) or {}).get("source_fields"))
        table = pa.concat_tables(tables, promote_options="permissive") if tables else rules.schema.empty_table()
        partition = keys[-1] if partitions_def is not None else None
        fetch = _latest_metadata(context.instance, asset, partition, context.run.run_id)
        before = _latest_metadata(context.instance, asset, None, context.run.run_id, previous=True).get("source_fields")
        yield from evaluate(table, rules, profiles[-1] if profiles else None, before, fetch)

    return _checks


# MINDEX asset -> (mirror dataset whose rows it loads, partitioned?)
QUARANTINE_SOURCES = {
    "mindex_inaturalist_observations": ("inaturalist_observations", True),
    "mindex_gbif_occurrences": ("gbif_occurrences", True),
    "mindex_air_quality_measurements": ("openaq_measurements", True),
    "mindex_nws_alerts": ("nws_alerts", False),
    "mindex_weather_forecasts": ("weather_forecasts", False),
    "mindex_aircraft_states": ("opensky_state_vectors", True),
    "mindex_vessel_positions": ("aisstream_vessel_positions", True),
    "mindex_vessel_static": ("aisstream_vessel_static", True),
}


def quarantine_check(asset: str, dataset: str, partitions_def: dg.PartitionsDefinition | None
                     ) -> dg.AssetChecksDefinition:
    from mycosoft_assets.quality import quarantine
    from resources.mindex_db import MindexDatabase

    @dg.asset_check(asset=asset, name=QUARANTINED, partitions_def=partitions_def,
                    description=CHECK_DESCRIPTIONS[QUARANTINED])
    def _check(context: dg.AssetCheckExecutionContext, mindex_db: MindexDatabase) -> dg.AssetCheckResult:
        from mycosoft_assets.mindex.schema import ensure_schema

        ensure_schema(mindex_db.engine)
        keys = context.partition_keys if partitions_def is not None else [None]
        held: dict[str, dict[str, int]] = {}
        with mindex_db.engine.connect() as conn:
            for key in keys:
                counts = quarantine.count(conn, dataset, key)
                if counts:
                    held[key or "snapshot"] = counts
        total = sum(sum(c.values()) for c in held.values())
        return dg.AssetCheckResult(passed=total == 0, severity=WARN,
                                   metadata={"quarantined_rows": total, "by_partition_and_rule": held})

    return _check


def recent_gaps(store: PartitionStore, source: str, now: datetime, window_hours: int = 1) -> list[dict[str, Any]]:
    """Gap records of the spool hours overlapping the last ``window_hours``, with how long each lasted."""
    from datetime import timedelta

    from mycosoft_assets.streams import gap_seconds, spool_reader
    from resources.spool import GAP_KIND, hour_of

    reader = spool_reader(store, source)
    since = now - timedelta(hours=window_hours)
    hours = {hour_of(since + timedelta(hours=i)) for i in range(window_hours + 1)}
    gaps = []
    for hour in sorted(hours & set(reader.hours())):
        for line in reader.read_hour(hour):
            if line.get("kind") == GAP_KIND:
                gap = dict(line["record"])
                end = gap.get("reconnected_at")
                if end is None or datetime.fromisoformat(end) >= since:
                    gaps.append({**gap, "seconds": round(gap_seconds(gap, now), 1)})
    return gaps


def ongoing_gaps(health: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Gaps not in the spool yet: a collector writes a gap record when the stream comes back (or at shutdown), so
    an outage still in progress is read from its heartbeat (``gap_open_since``), and a collector that stopped or
    died is a gap from its last heartbeat."""
    since, reason = None, None
    if health.get("collector_gap_open_since"):
        since, reason = health["collector_gap_open_since"], "open: the stream has not come back yet"
    elif health.get("collector_status") == "stopped":
        since, reason = health["collector_heartbeat_at"], "collector not running"
    if since is None:
        return []
    gap = {"disconnected_at": since, "reconnected_at": None, "reason": reason}
    from mycosoft_assets.streams import gap_seconds

    return [{**gap, "seconds": round(gap_seconds(gap, now), 1)}]


def collector_gap_check(asset: str, source: str) -> dg.AssetChecksDefinition:
    from mycosoft_assets import sla

    @dg.asset_check(asset=asset, name=COLLECTOR_GAPS, description=CHECK_DESCRIPTIONS[COLLECTOR_GAPS])
    def _check(mirror_store: PartitionStore) -> dg.AssetCheckResult:
        from mycosoft_assets.streams import collector_health

        now = datetime.now(UTC)
        limit = sla.sla(source).max_gap
        health = collector_health(mirror_store, source, now)
        gaps = recent_gaps(mirror_store, source, now) + ongoing_gaps(health, now)
        too_long = [g for g in gaps if limit is not None and g["seconds"] > limit.total_seconds()]
        return dg.AssetCheckResult(passed=not too_long, severity=ERROR, metadata={
            "gaps_last_hour": len(gaps), "longest_gap_s": max((g["seconds"] for g in gaps), default=0.0),
            "max_gap_s": limit.total_seconds() if limit else "none",
            "gaps_over_limit": dg.MetadataValue.json(too_long[:EXAMPLES]), **health})

    return _check


def all_checks() -> list[dg.AssetChecksDefinition]:
    from mycosoft_assets import sla
    from mycosoft_assets.quality.expectations import expectation_checks

    mirrors = {"inaturalist_observations": "inaturalist", "inaturalist_taxa": None, "gbif_occurrences": "gbif",
               "gbif_species": None, "nws_alerts": None, "weather_forecasts": None, "openaq_locations": None,
               "openaq_latest": None, "openaq_measurements": "openaq", "opensky_state_vectors": "opensky",
               "aisstream_vessel_positions": "aisstream", "aisstream_vessel_static": "aisstream"}
    checks = [mirror_checks(asset, sla.partitions_def(source) if source else None)
              for asset, source in mirrors.items()]
    checks += [collector_gap_check(asset, source) for asset, source in (
        ("opensky_state_vectors", "opensky"), ("aisstream_vessel_positions", "aisstream"))]
    partitioned_source = {"inaturalist_observations": "inaturalist", "gbif_occurrences": "gbif",
                          "openaq_measurements": "openaq", "opensky_state_vectors": "opensky",
                          "aisstream_vessel_positions": "aisstream", "aisstream_vessel_static": "aisstream"}
    for asset, (dataset, partitioned) in QUARANTINE_SOURCES.items():
        source = partitioned_source.get(dataset)
        checks.append(quarantine_check(asset, dataset, sla.partitions_def(source) if partitioned else None))
    return checks + expectation_checks()
