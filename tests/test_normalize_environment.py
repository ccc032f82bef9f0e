"""Normalizers for NWS alerts, weather forecasts and OpenAQ on the recorded responses and the failure cases
(C07, C09, C12). Pure functions: no server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from mycosoft_assets.common import RecordRejected
from mycosoft_assets.nws_alerts.normalize import ALERT_SCHEMA, chain_states, normalize_alert
from mycosoft_assets.openaq.normalize import (
    LOCATION_SCHEMA,
    MEASUREMENT_SCHEMA,
    normalize_latest,
    normalize_location,
    normalize_measurement,
)
from mycosoft_assets.weather.normalize import FORECAST_SCHEMA, canonical, nws_forecast_rows, open_meteo_rows
from tests.conftest import load_fixture

NATIONAL = "nws/ruthanno_alerts_active_national_2025-03-17T16-08Z.json"


def test_every_recorded_national_alert_normalizes():
    features = load_fixture(NATIONAL)["features"]
    rows = [normalize_alert(f) for f in features]
    pa.RecordBatch.from_pylist(rows, schema=ALERT_SCHEMA)
    assert len({r["id"] for r in rows}) == len(features) == 621
    assert sum(1 for r in rows if r["geometry"] is None) == 621 - 91
    assert sum(1 for r in rows if r["message_type"] == "Update") == 265
    updates = [r for r in rows if r["message_type"] == "Update"]
    assert all(r["references"] for r in updates)
    first = rows[0]
    assert first["id"].startswith("urn:oid:2.49.0.1.840.0.")
    assert first["ugc_codes"].split(",")[:2] == ["IAZ002", "IAZ003"]
    assert first["sent"].tzinfo == UTC


def test_c12_null_geometry_alert_is_kept_with_its_zones():
    feature = {"id": "urn:oid:2.49.0.1.840.0.aaaa.001.1", "type": "Feature", "geometry": None,
               "properties": {"messageType": "Alert", "affectedZones": ["https://api.weather.gov/zones/forecast/XXZ001"],
                              "geocode": {"UGC": ["XXZ001"], "SAME": ["099001"]}, "sent": "2025-03-17T10:00:00-05:00"}}
    row = normalize_alert(feature)
    assert row["geometry"] is None and row["ugc_codes"] == "XXZ001" and row["same_codes"] == "099001"
    assert "no_geometry" in row["qc_flags"]
    no_geocode = copy.deepcopy(feature)
    del no_geocode["properties"]["geocode"]
    assert normalize_alert(no_geocode)["ugc_codes"] == "XXZ001"  # from affectedZones


def test_old_style_alert_ids_are_opaque_strings():
    feature = load_fixture("nws/pynws_alerts_active_zone.json")["features"][0]
    row = normalize_alert(feature)
    assert row["id"].startswith("NWS-IDP-PROD-")


def test_alert_without_any_id_is_rejected():
    with pytest.raises(RecordRejected):
        normalize_alert({"type": "Feature", "properties": {"messageType": "Alert"}})


def _t(minutes: int) -> datetime:
    return datetime(2025, 3, 17, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def test_alert_update_cancel_chain():
    states = chain_states([
        ("a1", "Alert", _t(0), None),
        ("a2", "Update", _t(30), "a1"),
        ("a3", "Cancel", _t(60), "a2,a1"),
        ("b1", "Alert", _t(5), None),
        ("b2", "Update", _t(20), "b1"),
    ])
    assert {states[m].chain_id for m in ("a1", "a2", "a3")} == {"a1"}
    assert states["a1"].superseded_by == "a3"  # the newest message that references it
    assert states["a2"].superseded_by == "a3"
    assert states["a3"].superseded_by is None and states["a3"].cancelled
    assert states["b2"].superseded_by is None and not states["b2"].cancelled
    assert states["b1"].superseded_by == "b2" and states["b1"].chain_id == "b1"


def test_chains_join_through_a_reference_we_never_saw():
    states = chain_states([("x2", "Update", _t(10), "x0"), ("x3", "Update", _t(20), "x0,x2")])
    assert states["x2"].chain_id == states["x3"].chain_id == "x2"
    assert states["x2"].superseded_by == "x3"


def test_nws_forecast_rows_from_the_full_recorded_forecasts():
    daily = nws_forecast_rows("washington_dc", load_fixture("weather/boreas_nws_forecast_white_house.json"), "period")
    hourly = nws_forecast_rows("washington_dc", load_fixture("weather/boreas_nws_forecast_hourly_white_house.json"),
                               "hourly")
    pa.RecordBatch.from_pylist(daily + hourly, schema=FORECAST_SCHEMA)
    temps = [r for r in daily if r["variable"] == "temperature"]
    assert len(temps) == 14
    assert len([r for r in hourly if r["variable"] == "temperature"]) == 156
    first = temps[0]
    assert first["issued_at"] == datetime(2023, 1, 1, 16, 46, 57, tzinfo=UTC)
    assert first["valid_from"] == datetime(2023, 1, 1, 17, 0, tzinfo=UTC)  # 12:00-05:00
    assert first["unit"] == "°C" and first["unit_raw"] == "F"
    assert first["value"] == pytest.approx((float(first["value_raw"]) - 32) * 5 / 9, abs=1e-3)
    winds = [r for r in daily if r["variable"] == "wind_speed"]
    assert all(r["unit"] == "km/h" for r in winds)


def test_unit_conversions_are_explicit():
    assert canonical(32.0, "F") == (0.0, "°C")
    assert canonical(10.0, "mph") == (pytest.approx(16.09344), "km/h")
    assert canonical(5.0, "%") == (5.0, "%")


def test_open_meteo_local_times_become_utc_and_nulls_stay_null():
    payload = load_fixture("weather/openmeteo_v1_forecast_current_daily5_virga.json")
    rows = open_meteo_rows("denver_co", payload)
    pa.RecordBatch.from_pylist(rows, schema=FORECAST_SCHEMA)
    current = [r for r in rows if r["resolution"] == "current"]
    # 2026-08-07T21:30 at utc_offset_seconds -21600 is 2026-08-08 03:30 UTC.
    assert {r["valid_from"] for r in current} == {datetime(2026, 8, 8, 3, 30, tzinfo=UTC)}
    assert all(r["issued_at"] == datetime(2026, 8, 8, 3, 30, tzinfo=UTC) for r in rows)
    daily_max = [r for r in rows if r["variable"] == "temperature_max"]
    assert len(daily_max) == len(payload["daily"]["time"])
    assert daily_max[0]["valid_from"] == datetime(2026, 8, 7, 6, 0, tzinfo=UTC)
    with_null = copy.deepcopy(payload)
    with_null["daily"]["temperature_2m_max"][1] = None
    nulled = [r for r in open_meteo_rows("denver_co", with_null) if r["variable"] == "temperature_max"][1]
    assert nulled["value"] is None and "null_value" in nulled["qc_flags"]


def test_c09_sentinels_zero_coordinates_and_units():
    base = {"parameter": {"id": 2, "name": "pm25", "units": "µg/m³"},
            "period": {"datetimeFrom": {"utc": "2025-09-20T18:00:00Z"}, "datetimeTo": {"utc": "2025-09-20T19:00:00Z"}}}
    sentinel = normalize_measurement({**base, "value": -999, "coordinates": {"latitude": 0, "longitude": 0}}, 1, 9)
    assert sentinel["value"] is None and sentinel["value_raw"] == -999 and sentinel["is_missing_sentinel"]
    assert sentinel["latitude"] is None and "zero_coordinates" in sentinel["qc_flags"]
    negative = normalize_measurement({**base, "value": -0.25}, 1, 9)
    assert negative["value"] == -0.25 and "negative_value" in negative["qc_flags"]
    ppm = normalize_measurement({**base, "parameter": {"name": "o3", "units": "ppm"}, "value": 0.031}, 2, 9)
    ugm3 = normalize_measurement({**base, "parameter": {"name": "o3", "units": "µg/m³"}, "value": 62.0}, 3, 9)
    assert (ppm["unit"], ppm["value"]) == ("ppm", 0.031) and (ugm3["unit"], ugm3["value"]) == ("µg/m³", 62.0)
    text = normalize_measurement({**base, "value": "n/a"}, 1, 9)
    assert text["value"] is None and "non_numeric_value" in text["qc_flags"]
    pa.RecordBatch.from_pylist([sentinel, negative, ppm, ugm3, text], schema=MEASUREMENT_SCHEMA)


def test_recorded_openaq_records_normalize():
    locations = load_fixture("openaq/memoortiz_v3_locations_bbox_guadalajara_results_only.json")["results"]
    rows = [normalize_location(r) for r in locations]
    pa.RecordBatch.from_pylist(rows, schema=LOCATION_SCHEMA)
    assert len(rows) == 23 and all(r["country_code"] == "MX" for r in rows)
    measurements = load_fixture("openaq/memoortiz_v3_sensors_11602121_measurements_limit1000_page1.json")["results"]
    parsed = [normalize_measurement(m, 11602121, 3309328) for m in measurements]
    assert len({p["datetime_from"] for p in parsed}) == 426
    assert {p["unit"] for p in parsed} == {"µg/m³"} and {p["parameter"] for p in parsed} == {"pm10"}
    latest = load_fixture("openaq/openaq-r_v3_list_location_latest_1.json")["results"][0]
    row = normalize_latest(latest)
    assert row["sensor_id"] == 1 and row["value"] == 8.15
    assert row["datetime_utc"] == datetime(2025, 7, 9, 1, 30, tzinfo=UTC)
