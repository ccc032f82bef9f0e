"""The one entry point: every asset, job, schedule, sensor and resource of the platform."""

from __future__ import annotations

import dagster as dg

from mycosoft_assets.aisstream import assets as aisstream_assets
from mycosoft_assets.gbif import assets as gbif_assets
from mycosoft_assets.inaturalist import assets as inaturalist_assets
from mycosoft_assets.mindex import assets as mindex_assets
from mycosoft_assets.mindex import environment as mindex_environment_assets
from mycosoft_assets.nws_alerts import assets as nws_alerts_assets
from mycosoft_assets.openaq import assets as openaq_assets
from mycosoft_assets.opensky import assets as opensky_assets
from mycosoft_assets.quality.checks import all_checks
from mycosoft_assets.resources import build_resources
from mycosoft_assets.weather import assets as weather_assets
from sensors.history import prune_history_job, prune_history_schedule
from sensors.resilience import fallback_jobs, resilience_sensors
from sensors.schedules import build_jobs_and_schedules

ASSET_MODULES = [inaturalist_assets, gbif_assets, nws_alerts_assets, weather_assets, openaq_assets, opensky_assets,
                 aisstream_assets, mindex_assets, mindex_environment_assets]

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
    jobs = [*jobs, *fallback_jobs()]
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=all_checks(),
        jobs=[*jobs, prune_history_job],
        schedules=[*schedules, prune_history_schedule],
        sensors=[automation_sensor, *resilience_sensors(jobs)],
        resources=build_resources(),
    )


defs = build_definitions()
