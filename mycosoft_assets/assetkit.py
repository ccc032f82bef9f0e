"""Asset arguments derived from the SLA table, so no asset restates freshness, partitions or pools."""

from __future__ import annotations

from typing import Any

import dagster as dg

from mycosoft_assets import sla


def source_asset_args(source: str, *, name: str, description: str, partitioned: bool = True,
                      kinds: set[str] | None = None, pool: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``@dg.asset`` of one source's asset: group, freshness, partitions, backfill policy
    (a range is one run, so windows are computed in order) and the per-API concurrency pool."""
    row = sla.sla(source)
    args: dict[str, Any] = {
        "name": name,
        "group_name": source,
        "description": description,
        "freshness_policy": sla.freshness_policy(source),
        "kinds": kinds or {"python", "parquet"},
        "tags": {"source": source},
        "metadata": {"sla": str(row.sla), "refresh_cron": row.refresh_cron},
    }
    if pool:
        args["pool"] = f"api_{row.apis[0]}"
    if partitioned and sla.partitions_def(source) is not None:
        args["partitions_def"] = sla.partitions_def(source)
        args["backfill_policy"] = dg.BackfillPolicy.single_run()
    return args
