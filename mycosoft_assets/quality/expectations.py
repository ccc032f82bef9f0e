"""great-expectations suites for the MINDEX tables, run as Dagster asset checks against the database.

great-expectations is imported only inside a validation (the import costs seconds), in an ephemeral context with
progress bars off, against a SQL datasource on MINDEX's own URL (SQLite or PostgreSQL). The check's metadata names
the suite, and lists each failing expectation with its unexpected count and example values.
"""


from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from resources.mindex_db import MindexDatabase

COORD_STATUSES = ["exact", "obscured", "private", "missing"]


@dataclass(frozen=True)
class Suite:
    name: str
    query: str
    expectations: Callable[[Any], list[Any]]  # gx module -> expectation objects
    description: str


def _observations(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToNotBeNull(column="source_id"),
        e.ExpectCompoundColumnsToBeUnique(column_list=["source", "source_id"]),
        e.ExpectColumnValuesToBeBetween(column="latitude", min_value=-90, max_value=90),
        e.ExpectColumnValuesToBeBetween(column="longitude", min_value=-180, max_value=180),
        e.ExpectColumnValuesToBeInSet(column="coord_status", value_set=COORD_STATUSES),
        e.ExpectColumnValuesToNotBeNull(column="source_updated_at"),
    ]


def _taxa(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectCompoundColumnsToBeUnique(column_list=["source", "source_id"]),
        e.ExpectColumnValuesToNotBeNull(column="name"),
        e.ExpectColumnValuesToBeInSet(column="source", value_set=["inaturalist", "gbif"]),
    ]


def _alerts(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeUnique(column="id"),
        e.ExpectColumnValuesToBeInSet(column="message_type", value_set=["Alert", "Update", "Cancel", "Ack", "Error"]),
        e.ExpectColumnValuesToNotBeNull(column="sent"),
        e.ExpectColumnValuesToNotBeNull(column="chain_id"),
    ]


def _forecasts(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeInSet(column="provider", value_set=["nws", "open_meteo"]),
        e.ExpectColumnValuesToNotBeNull(column="valid_from"),
        # One unit per variable: temperatures in °C, speeds in km/h (see weather/normalize.py).
        e.ExpectColumnValuesToBeInSet(column="unit", value_set=["°C", "km/h", "%", "mm", "wmo code", "m/s"]),
    ]


def _temperatures(gx: Any) -> list[Any]:
    e = gx.expectations
    return [e.ExpectColumnValuesToBeBetween(column="value", min_value=-90, max_value=60)]


def _stations(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeUnique(column="id"),
        e.ExpectColumnValuesToBeBetween(column="latitude", min_value=-90, max_value=90),
        e.ExpectColumnValuesToBeBetween(column="longitude", min_value=-180, max_value=180),
    ]


def _measurements(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectCompoundColumnsToBeUnique(column_list=["sensor_id", "datetime_from"]),
        e.ExpectColumnValuesToNotBeNull(column="unit"),
        # Sentinels are NULL in `value`; what remains must be physically plausible.
        e.ExpectColumnValuesToBeBetween(column="value", min_value=-50, max_value=50_000),
    ]


def _aircraft(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToNotBeNull(column="icao24"),
        e.ExpectCompoundColumnsToBeUnique(column_list=["icao24", "last_contact"]),
        e.ExpectColumnValueLengthsToEqual(column="icao24", value=6),
        e.ExpectColumnValuesToBeBetween(column="latitude", min_value=-90, max_value=90),
        e.ExpectColumnValuesToBeBetween(column="longitude", min_value=-180, max_value=180),
        e.ExpectColumnValuesToNotBeNull(column="received_at"),
    ]


def _vessels(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        # MMSI is 9-character text, never an integer (leading zeros of base stations and coast stations).
        e.ExpectColumnValueLengthsToEqual(column="mmsi", value=9),
        e.ExpectCompoundColumnsToBeUnique(column_list=["mmsi", "message_type", "time_utc_raw"]),
        e.ExpectColumnValuesToBeBetween(column="latitude", min_value=-90, max_value=90),
        e.ExpectColumnValuesToBeBetween(column="longitude", min_value=-180, max_value=180),
        e.ExpectColumnValuesToNotBeNull(column="received_at"),
    ]


def _vessel_static(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValueLengthsToEqual(column="mmsi", value=9),
        e.ExpectCompoundColumnsToBeUnique(column_list=["mmsi", "message_type", "time_utc_raw"]),
        e.ExpectColumnValuesToNotBeNull(column="received_at"),
    ]


SUITES: dict[str, list[Suite]] = {
    "mindex_inaturalist_observations": [Suite("mindex_observations_inaturalist",
                                              "SELECT * FROM observations WHERE source = 'inaturalist'", _observations,
                                              "iNaturalist rows of MINDEX observations")],
    "mindex_gbif_occurrences": [Suite("mindex_observations_gbif", "SELECT * FROM observations WHERE source = 'gbif'",
                                      _observations, "GBIF rows of MINDEX observations")],
    "mindex_observations_unified": [Suite("mindex_observations_unified", "SELECT * FROM observations_unified",
                                          _observations, "the unified observation view")],
    "mindex_taxa": [Suite("mindex_taxa", "SELECT * FROM taxa", _taxa, "MINDEX taxa")],
    "mindex_nws_alerts": [Suite("mindex_nws_alerts", "SELECT * FROM nws_alert_messages", _alerts,
                                "NWS alert messages")],
    "mindex_weather_forecasts": [
        Suite("mindex_weather_forecasts", "SELECT * FROM weather_forecasts", _forecasts, "weather forecasts"),
        Suite("mindex_weather_temperatures",
              "SELECT * FROM weather_forecasts WHERE variable IN ('temperature', 'temperature_max', 'temperature_min',"
              " 'apparent_temperature', 'dewpoint')", _temperatures, "forecast temperatures in °C"),
    ],
    "mindex_air_quality": [Suite("mindex_air_quality_stations", "SELECT * FROM aq_stations", _stations,
                                 "air-quality stations")],
    "mindex_aircraft_states": [Suite("mindex_aircraft_states", "SELECT * FROM aircraft_states", _aircraft,
                                     "OpenSky state vectors (flights)")],
    "mindex_vessel_positions": [Suite("mindex_vessel_positions", "SELECT * FROM vessel_positions", _vessels,
                                      "AIS vessel positions")],
    "mindex_vessel_static": [Suite("mindex_vessel_static", "SELECT * FROM vessel_static", _vessel_static,
                                   "AIS vessel static data")],
    "mindex_air_quality_measurements": [Suite("mindex_air_quality_measurements", "SELECT * FROM aq_measurements",
                                              _measurements, "air-quality measurements")],
}


def run_suite(db: MindexDatabase, suite: Suite) -> tuple[bool, dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from mycosoft_assets.mindex.schema import ensure_schema

    ensure_schema(db.engine)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_sql(name="mindex", connection_string=db.resolved_url)
    batch = source.add_query_asset(name=suite.name, query=suite.query).add_batch_definition_whole_table(
        "whole").get_batch()
    gx_suite = gx.ExpectationSuite(name=suite.name)
    for expectation in suite.expectations(gx):
        gx_suite.add_expectation(expectation)
    result = batch.validate(gx_suite, result_format="SUMMARY")
    failing = []
    for item in result.results:
        if not item.success:
            config = item.expectation_config
            failing.append({"expectation": config.type, "kwargs": {k: v for k, v in config.kwargs.items()
                                                                   if k != "batch_id"},
                            "unexpected_count": item.result.get("unexpected_count"),
                            "examples": (item.result.get("partial_unexpected_list") or [])[:5]})
    statistics = result.statistics
    return bool(result.success), {
        "suite": suite.name,
        "evaluated_expectations": statistics.get("evaluated_expectations"),
        "failed_expectations": dg.MetadataValue.json(failing),
    }


def expectation_checks() -> list[dg.AssetChecksDefinition]:
    checks = []
    for asset, suites in SUITES.items():
        for suite in suites:
            checks.append(_suite_check(asset, suite))
    return checks


def _suite_check(asset: str, suite: Suite) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=f"ge_{suite.name}",
                    description=f"great-expectations suite `{suite.name}` on {suite.description} "
                                f"(`{suite.query}`). Failing expectations and example values in the metadata.")
    def _check(mindex_db: MindexDatabase) -> dg.AssetCheckResult:
        passed, metadata = run_suite(mindex_db, suite)
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)

    return _check
