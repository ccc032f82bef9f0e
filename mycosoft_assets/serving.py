"""Where the data a MINDEX materialization holds came from: a live fetch, or the local cache during an outage.

A fallback run (``sensors/resilience.py``) re-materializes the MINDEX assets of a source whose API failed, from the
last good mirror partitions. Its run tags say so, and every MINDEX asset reports them in its metadata: a fallback
never passes for live data. The mirror assets themselves are only ever materialized by live fetches, so their
freshness in the UI stays the truth about the source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from resources.storage import PartitionStore

SERVED_FROM_TAG = "mindex/served_from"
SOURCE_ERROR_TAG = "mindex/source_error"
FAILED_RUN_TAG = "mindex/failed_run"
RECOVERY_TAG = "mindex/recovery"  # "fallback" or "heal"
# Run-level limit (dagster.yaml): one fallback or heal run per source at a time. Per API, the steps that call it
# run in its `api_<name>` pool; a fallback calls no API, so per-API run limits would only delay it.
RECOVERY_SOURCE_TAG = "mindex/recovery_source"


def served_from(context: dg.AssetExecutionContext) -> str:
    return context.run.tags.get(SERVED_FROM_TAG, "live")


def serving_metadata(context: dg.AssetExecutionContext, store: PartitionStore, dataset: str,
                     keys: list[str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """``served_from`` (live | cache), when the data was fetched from the source and how old it is; for a
    fallback, the cached age and the source error that caused it."""
    now = now or datetime.now(UTC)
    fetched = []
    for key in keys or ["snapshot"]:
        stamp = (store.manifest(dataset, key) or {}).get("fetched_at")
        if stamp:
            fetched.append(datetime.fromisoformat(stamp).astimezone(UTC))
    source = served_from(context)
    metadata: dict[str, Any] = {"served_from": source}
    if fetched:
        newest = max(fetched)
        metadata["data_fetched_at"] = newest.isoformat()
        metadata["data_age_s"] = round((now - newest).total_seconds(), 1)
    if source == "cache":
        metadata["cached_age_s"] = metadata.get("data_age_s", "unknown")
        metadata["source_error"] = context.run.tags.get(SOURCE_ERROR_TAG, "unknown")
        metadata["failed_run"] = context.run.tags.get(FAILED_RUN_TAG, "none")
    return metadata


def refuse_partitions_that_failed_checks(context: dg.AssetExecutionContext, dataset: str,
                                         keys: list[str] | None = None) -> None:
    """A fallback serves only cached partitions whose blocking checks passed when they landed.

    A mirror partition that failed a blocking check (duplicate keys, schema drift) is still on disk: its live run
    stopped before MINDEX, and a fallback must not load it later behind the check's back. Raises ``dg.Failure``
    naming the refused partitions, so the fallback run fails and MINDEX keeps what it had. Live runs are not
    concerned: their own blocking checks gate them.
    """
    if served_from(context) != "cache":
        return
    refused = failed_blocking_checks(context.instance, dataset, keys)
    if refused:
        raise dg.Failure(
            description=f"not served from cache: {dataset} partitions failed a blocking check when they landed "
                        f"({', '.join(refused[:5])}); MINDEX keeps its last good rows until a live fetch passes",
            metadata={"refused_partitions": dg.MetadataValue.json(refused)})


def failed_blocking_checks(instance: dg.DagsterInstance, dataset: str, keys: list[str] | None) -> list[str]:
    """``"<partition>: <check>"`` for every partition whose latest *executed* blocking check failed. A run that
    failed on the API before its checks ran only plans them, so the latest record is skipped when it is PLANNED."""
    # No public API filters check executions by status and partition in dagster 1.13 (pinned exactly).
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    from mycosoft_assets.quality.checks import BLOCKING

    refused = []
    for name in sorted(BLOCKING):
        check_key = dg.AssetCheckKey(dg.AssetKey(dataset), name)
        for key in keys or [None]:
            executed = instance.event_log_storage.get_asset_check_execution_history(
                check_key, limit=1, status={Status.SUCCEEDED, Status.FAILED},
                partition_filter=PartitionKeyFilter(key=key))
            if executed and executed[0].status == Status.FAILED:
                refused.append(f"{key or 'snapshot'}: {name}")
    return sorted(refused)
