"""The one entry point: every asset, job, schedule, sensor and resource of the platform."""

from __future__ import annotations

import dagster as dg

from mycosoft_assets.gbif import assets as gbif_assets
from mycosoft_assets.inaturalist import assets as inaturalist_assets
from mycosoft_assets.mindex import assets as mindex_assets
from mycosoft_assets.resources import build_resources
from sensors.schedules import build_jobs_and_schedules

ASSET_MODULES = [inaturalist_assets, gbif_assets, mindex_assets]

# Declarative automation keeps the unpartitioned MINDEX tables (taxa, unified view) in step with the mirrors.
# Dagster's default automation sensor starts STOPPED on a new instance; this one starts RUNNING.
automation_sensor = dg.AutomationConditionSensorDefinition(
    name="mindex_automation",
    target=dg.AssetSelection.groups("mindex"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)


def build_definitions() -> dg.Definitions:
    jobs, schedules = build_jobs_and_schedules()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        jobs=jobs,
        schedules=schedules,
        sensors=[automation_sensor],
        resources=build_resources(),
    )


defs = build_definitions()
