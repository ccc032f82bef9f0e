"""``mindex status``: one line per asset: freshness, last update, served from live or cache, cached age, last error.

Freshness is judged the way the asset's ``FreshnessPolicy.time_window`` judges it (age of the last
materialization against the SLA table's warn and fail windows). ``served_from`` and the cached age come from the
latest materialization's metadata (``mycosoft_assets/serving.py``); the last error from the resilience sensor's
latest health observation on the source's mirror, or the source's latest failed run when that is newer than its
latest success.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import dagster as dg


@dataclass
class AssetStatus:
    asset: str
    freshness: str  # fresh | warn | stale | never
    last_update: str
    served_from: str
    cached_age: str
    last_error: str

    def line(self) -> str:
        return (f"{self.asset:<34} {self.freshness:<6} {self.last_update:<20} served_from={self.served_from:<5} "
                f"cached_age={self.cached_age:<8} last_error={self.last_error}")


def _value(metadata: dict[str, Any], name: str) -> Any:
    entry = metadata.get(name)
    return getattr(entry, "value", entry)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def source_error(instance: dg.DagsterInstance, source: str, mirror: str | None) -> str:
    """The source's current error, if any: from the latest health observation, else from a failed run that is
    newer than the latest successful one."""
    from sensors.resilience import failure_cause

    if mirror is not None:
        observations = instance.fetch_observations(dg.AssetKey(mirror), limit=1).records
        if observations:
            metadata = observations[0].event_log_entry.asset_observation.metadata
            errors = [f"{k.removesuffix('_last_error')}: {v.value}" for k, v in metadata.items()
                      if k.endswith("_last_error") and v.value not in (None, "none")]
            if errors:
                return "; ".join(errors)[:160]
    for job in (f"{source}_sync", f"{source}_snapshot"):
        failed = instance.get_run_records(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.FAILURE]),
                                          limit=1)
        ok = instance.get_run_records(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS]),
                                      limit=1)
        if failed and (not ok or failed[0].create_timestamp > ok[0].create_timestamp):
            cause = failure_cause(instance, failed[0].dagster_run.run_id)
            return f"{job}: {cause or f'run {failed[0].dagster_run.run_id[:8]} failed (not on the API)'}"[:160]
    return "-"


def cached_age_s(metadata: dict[str, Any], now: datetime) -> Any:
    """How old the cached data is now: from when the source last delivered it (``data_fetched_at``), so the age
    keeps growing while the source stays down; the age recorded at the fallback when that time is unknown."""
    fetched = _value(metadata, "data_fetched_at")
    if fetched:
        return (now - datetime.fromisoformat(str(fetched)).astimezone(UTC)).total_seconds()
    return _value(metadata, "cached_age_s")


def collect_status(defs: dg.Definitions, instance: dg.DagsterInstance,
                   now: datetime | None = None) -> list[AssetStatus]:
    from sensors.schedules import REFRESH_ASSETS

    now = now or datetime.now(UTC)
    graph = defs.resolve_asset_graph()
    mirrors = {source: assets[0] for source, assets in REFRESH_ASSETS.items()}
    errors: dict[str, str] = {}
    rows = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        source = (node.tags or {}).get("source")
        event = instance.get_latest_materialization_event(key)
        policy = node.freshness_policy
        if event is None or event.asset_materialization is None:
            freshness, last, served, cached = "never", "never", "-", "-"
        else:
            age = now.timestamp() - event.timestamp
            fail = policy.fail_window.to_timedelta().total_seconds() if policy else float("inf")
            warn = policy.warn_window.to_timedelta().total_seconds() if policy and policy.warn_window else fail
            freshness = "fresh" if age < warn else "warn" if age < fail else "stale"
            last = datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
            metadata = event.asset_materialization.metadata
            served = str(_value(metadata, "served_from") or "live")
            cached = _age(cached_age_s(metadata, now)) if served == "cache" else "-"
        if source and source not in errors:
            errors[source] = source_error(instance, source, mirrors.get(source))
        rows.append(AssetStatus(key.to_user_string(), freshness, last, served, cached,
                                errors.get(source, "-") if source else "-"))
    return rows


def print_status(out: TextIO = sys.stdout) -> int:
    from mindex.home import ensure_dagster_home
    from mycosoft_assets.definitions import build_definitions

    ensure_dagster_home()
    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        for row in collect_status(defs, instance):
            print(row.line(), file=out)
    return 0
