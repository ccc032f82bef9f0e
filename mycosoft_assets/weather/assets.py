"""Weather forecasts for configured sites from NWS (gridpoint forecasts) and Open-Meteo (SLA 30 minutes)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow as pa

from mycosoft_assets.assetkit import source_asset_args
from mycosoft_assets.common import RecordRejected
from mycosoft_assets.mirror import MirrorStats, profile_fields, report_materialization, snapshot_window
from mycosoft_assets.weather.normalize import FORECAST_SCHEMA, nws_forecast_rows, open_meteo_rows
from resources.errors import ApiError, ClientRequestError, ProblemDetail
from resources.http import ApiResponse
from resources.nws import NwsClient, link_path
from resources.open_meteo import OpenMeteoClient
from resources.storage import PartitionStore, RunWriter

SOURCE = "weather"
DATASET = "weather_forecasts"
POINTS_CACHE = "nws_points"
POINTS_MAX_AGE = timedelta(days=30)  # gridpoint assignments rarely change; refetch monthly or on a 404


class Site(dg.Config):
    name: str
    latitude: float
    longitude: float
    providers: list[str] = ["nws", "open_meteo"]


# Default sites: one per NWS forecast office region we have recordings for, and Denver for Open-Meteo. Every
# site asks both providers; override with run config (`sites: [{name, latitude, longitude, providers}]`).
DEFAULT_SITES = [
    {"name": "washington_dc", "latitude": 38.8988, "longitude": -77.0353, "providers": ["nws", "open_meteo"]},
    {"name": "florida_panhandle", "latitude": 30.0, "longitude": -85.0, "providers": ["nws", "open_meteo"]},
    {"name": "denver_co", "latitude": 39.7469, "longitude": -104.9871, "providers": ["nws", "open_meteo"]},
]


class WeatherConfig(dg.Config):
    sites: list[Site] = DEFAULT_SITES  # type: ignore[assignment]  # Dagster config defaults are plain dicts


def nws_forecast_urls(site: Site, nws: NwsClient, store: PartitionStore, writer: RunWriter,
                      refresh: bool = False) -> dict[str, str]:
    """The site's forecast links from /points, cached in the data folder (the lookup rarely changes)."""
    cache = store.read_cache(POINTS_CACHE)
    key = f"{site.latitude:.4f},{site.longitude:.4f}"
    entry = cache.get(key)
    fresh = entry and datetime.fromisoformat(entry["fetched_at"]) > datetime.now(UTC) - POINTS_MAX_AGE
    if refresh or not fresh:
        response = nws.point(site.latitude, site.longitude)
        writer.archive(response.raw)
        props = response.payload.get("properties") or {}
        # Cache paths, not URLs: the host in the body is whatever answered (api.weather.gov, a replay server).
        entry = {"forecast": link_path(props["forecast"]) if props.get("forecast") else None,
                 "forecastHourly": link_path(props["forecastHourly"]) if props.get("forecastHourly") else None,
                 "gridId": props.get("gridId"), "gridX": props.get("gridX"), "gridY": props.get("gridY"),
                 "fetched_at": datetime.now(UTC).isoformat()}
        if not entry["forecast"]:
            raise RecordRejected(f"/points for {site.name} has no forecast link")
        cache[key] = entry
        store.write_cache(POINTS_CACHE, cache)
    return entry


def fetch_site(site: Site, provider: str, nws: NwsClient, open_meteo: OpenMeteoClient, store: PartitionStore,
               writer: RunWriter) -> list[dict[str, Any]]:
    def archived(response: ApiResponse) -> ApiResponse:
        writer.archive(response.raw)
        # Profile the records the normalizer reads (NWS periods, Open-Meteo's top level) for the drift check.
        payload = response.payload if isinstance(response.payload, dict) else {}
        periods = (payload.get("properties") or {}).get("periods") if provider == "nws" else None
        for record in periods if isinstance(periods, list) else [payload]:
            profile_fields(record, writer.field_profile)
        return response

    if provider == "open_meteo":
        return open_meteo_rows(site.name, archived(open_meteo.forecast(site.latitude, site.longitude)).payload)
    if provider != "nws":
        raise ValueError(f"unknown weather provider {provider!r}")
    links = nws_forecast_urls(site, nws, store, writer)
    try:
        daily = archived(nws.forecast(links["forecast"])).payload
    except (ClientRequestError, ProblemDetail) as exc:
        if exc.status != 404:
            raise
        links = nws_forecast_urls(site, nws, store, writer, refresh=True)  # the grid moved: look it up again
        daily = archived(nws.forecast(links["forecast"])).payload
    rows = nws_forecast_rows(site.name, daily, "period")
    if links.get("forecastHourly"):
        rows += nws_forecast_rows(site.name, archived(nws.forecast(links["forecastHourly"])).payload, "hourly")
    return rows


def describe_error(exc: Exception) -> dict[str, Any]:
    info: dict[str, Any] = {"error": exc.__class__.__name__, "message": str(exc)[:300]}
    if isinstance(exc, ProblemDetail):
        info["problem_type"] = exc.short_type
        # Case C07: an expired grid keeps the last good forecast, marked stale; it is not a transient error.
        info["stale"] = exc.short_type == "ForecastGridExpired"
    return info


@dg.asset(**source_asset_args(
    SOURCE, name=DATASET,
    description="Forecasts for the configured sites from NWS (/points → forecast, forecastHourly) and "
                "Open-Meteo (/v1/forecast, UTC), in one long format. A site or provider that fails is recorded "
                "in the run's metadata and keeps its last good forecast in MINDEX; the run fails only when "
                "every request failed.",
))
def weather_forecasts(context: dg.AssetExecutionContext, config: WeatherConfig, nws: NwsClient,
                      open_meteo: OpenMeteoClient, mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    stats = MirrorStats()
    errors: dict[str, dict[str, Any]] = {}
    succeeded: list[str] = []
    first_error: Exception | None = None
    # Dagster hands config defaults over as plain dicts; make every site a Site.
    sites = [site if isinstance(site, Site) else Site(**site) for site in config.sites]
    with mirror_store.open_run(DATASET, FORECAST_SCHEMA, windows) as writer:
        for site in sites:
            for provider in site.providers:
                label = f"{site.name}/{provider}"
                try:
                    rows = fetch_site(site, provider, nws, open_meteo, mirror_store, writer)
                except (ApiError, RecordRejected) as exc:
                    context.log.warning(f"{label}: {exc}")
                    errors[label] = describe_error(exc)
                    # The run's error is the first API error when there is one: that is what the resilience
                    # sensor serves from cache (a RecordRejected alone is a data problem, not an outage).
                    if first_error is None or (isinstance(exc, ApiError) and not isinstance(first_error, ApiError)):
                        first_error = exc
                    continue
                writer.write(pa.RecordBatch.from_pylist(rows, schema=FORECAST_SCHEMA))
                stats.rows_written += len(rows)
                stats.pages += 1
                succeeded.append(label)
        if not succeeded and first_error is not None:
            raise first_error  # the source is down: leave the last good snapshot as it is
        counts = writer.commit(site_errors=errors, sites_ok=succeeded)
    result = report_materialization(context, windows, counts, stats, writer, mirror_store,
                                    f"{nws.base_url} {open_meteo.base_url}")
    return dg.MaterializeResult(metadata={**result.metadata, "sites_ok": dg.MetadataValue.json(succeeded),
                                          "site_errors": dg.MetadataValue.json(errors)})

