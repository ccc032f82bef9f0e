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
RECOVERY_API_TAG = "mindex/recovery_api"  # run-level concurrency limit per API (dagster.yaml)


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
