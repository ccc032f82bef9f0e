"""NWS alerts, weather and OpenAQ materialized offline against the replay server of the real recordings, with
exact counts computed here from the fixture files; the alert lifecycle built from the recorded alerts' shape;
expired grids; OpenAQ auth, retirement and sentinels; and an instance history that stays bounded."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from mycosoft_assets import sla
from mycosoft_assets.mindex.environment import (
    mindex_air_quality,
    mindex_air_quality_measurements,
    mindex_nws_alerts,
    mindex_weather_forecasts,
)
from mycosoft_assets.mindex.schema import aq_measurements, ensure_schema
from mycosoft_assets.nws_alerts.assets import nws_alerts
from mycosoft_assets.openaq.assets import openaq_latest, openaq_locations, openaq_measurements
from mycosoft_assets.weather.assets import weather_forecasts
from mycosoft_assets.weather.normalize import nws_forecast_rows, open_meteo_rows
from resources.errors import AuthError, ClientRequestError
from resources.mindex_db import MindexDatabase
from resources.nws import NwsClient
from resources.open_meteo import OpenMeteoClient
from resources.openaq import OpenAqClient
from resources.storage import PartitionStore
from sensors.history import prune_run_history
from tests.conftest import FIXTURES, load_fixture

NATIONAL = "nws/ruthanno_alerts_active_national_2025-03-17T16-08Z.json"


def env_resources(replay, data_dir: Path, openaq_key: str | None = "test-key") -> dict:
    return {
        "nws": NwsClient(base_url=replay.base_url("nws"), contact="tests@example.org"),
        "open_meteo": OpenMeteoClient(base_url=replay.base_url("open_meteo"), contact="tests@example.org"),
        "openaq": OpenAqClient(base_url=replay.base_url("openaq"), api_key=openaq_key, max_retries=1),
        "mirror_store": PartitionStore(data_dir=str(data_dir)),
        "mindex_db": MindexDatabase(data_dir=str(data_dir)),
    }


def query(db: MindexDatabase, sql: str) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql)).all()]


def recorded_alert_ids() -> set[str]:
    ids = set()
    for path in (FIXTURES / "nws").glob("*alerts_active*.json"):
        body = json.loads(path.read_text(encoding="utf-8"))
        ids.update(f["properties"]["id"] for f in body.get("features") or [])
    return ids


# --- NWS alerts -----------------------------------------------------------------------------------------------
def test_recorded_alert_feed_lands_in_mindex_with_one_active_row_per_chain(replay, data_dir):
    resources = env_resources(replay, data_dir)
    result = dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources)
    assert result.success
    expected = recorded_alert_ids()
    assert len(expected) == 623
    db = resources["mindex_db"]
    assert {r[0] for r in query(db, "SELECT id FROM nws_alert_messages")} == expected
    # Independent of the code under test: every live head is active — a message no other message references, not
    # a Cancel, and not ended at the feed's updated time. (NWS splits products by area: several heads may share a
    # parent, and each is an active alert.)
    features = [f for p in (FIXTURES / "nws").glob("*alerts_active*.json")
                for f in json.loads(p.read_text(encoding="utf-8")).get("features") or []]
    unique = {f["properties"]["id"]: f for f in features}
    referenced = {ref["identifier"] for f in unique.values() for ref in f["properties"].get("references") or []}
    updated = datetime.fromisoformat(load_fixture(NATIONAL)["updated"])
    live = {i for i, f in unique.items() if i not in referenced and f["properties"]["messageType"] != "Cancel"
            and not (f["properties"].get("ends") and datetime.fromisoformat(f["properties"]["ends"]) <= updated)}
    active = query(db, "SELECT id, superseded_by, message_type FROM nws_active_alerts")
    assert {r[0] for r in active} == live and len(live) == 621
    assert all(r[1] is None and r[2] != "Cancel" for r in active)
    null_geometry = query(db, "SELECT COUNT(*) FROM nws_alert_messages WHERE geometry IS NULL")[0][0]
    assert null_geometry == sum(1 for f in unique.values() if f.get("geometry") is None) == 532
    zones = query(db, "SELECT code FROM nws_alert_zones WHERE alert_id = 'NWS-IDP-PROD-3965873-3369046' AND "
                      "code_type = 'UGC' ORDER BY code")
    recorded = unique["NWS-IDP-PROD-3965873-3369046"]["properties"]["geocode"]["UGC"]
    assert [z for (z,) in zones] == sorted(set(recorded)) and "ORZ004" in recorded


def _feature(base: dict, alert_id: str, message_type: str, sent: datetime, references: list[dict] | None = None,
             ends: datetime | None = None) -> dict:
    feature = copy.deepcopy(base)
    feature["id"] = f"https://api.weather.gov/alerts/{alert_id}"
    props = feature["properties"]
    props.update({"@id": feature["id"], "id": alert_id, "messageType": message_type, "sent": sent.isoformat(),
                  "references": references or [], "ends": ends.isoformat() if ends else None,
                  "expires": (sent + timedelta(hours=1)).isoformat()})
    return feature


def _ref(feature: dict) -> dict:
    props = feature["properties"]
    return {"@id": feature["id"], "identifier": props["id"], "sender": props["sender"], "sent": props["sent"]}


def test_alert_update_cancel_lifecycle_and_a_vanished_alert(replay, data_dir):
    """Built from a recorded alert's shape: Alert → Update → Cancel, and an alert that vanishes with no Cancel."""
    base = next(f for f in load_fixture(NATIONAL)["features"] if f["geometry"] is None)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    alert = _feature(base, "urn:test:chain.1", "Alert", t0, ends=t0 + timedelta(days=2))
    update = _feature(base, "urn:test:chain.2", "Update", t0 + timedelta(minutes=30), [_ref(alert)],
                      ends=t0 + timedelta(days=2))
    cancel = _feature(base, "urn:test:chain.3", "Cancel", t0 + timedelta(minutes=60), [_ref(update), _ref(alert)])
    other = _feature(base, "urn:test:other.1", "Alert", t0, ends=t0 + timedelta(days=2))
    ended = _feature(base, "urn:test:ended.1", "Alert", t0 - timedelta(hours=3), ends=t0 - timedelta(hours=1))
    nws = replay.source_object("nws")
    resources = env_resources(replay, data_dir)
    db = resources["mindex_db"]

    def fetch(features: list[dict], minutes: int) -> None:
        nws.set_active(features, updated=(t0 + timedelta(minutes=minutes)).isoformat())
        assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success

    fetch([alert, other, ended], 5)
    assert {r[0] for r in query(db, "SELECT id FROM nws_active_alerts")} == {"urn:test:chain.1", "urn:test:other.1"}
    fetch([update], 35)  # the Update replaces the Alert; `other` left the feed without a Cancel
    assert [r[0] for r in query(db, "SELECT id FROM nws_active_alerts")] == ["urn:test:chain.2"]
    row = query(db, "SELECT superseded_by, chain_id FROM nws_alert_messages WHERE id = 'urn:test:chain.1'")[0]
    assert row == ("urn:test:chain.2", "urn:test:chain.1")
    vanished = query(db, "SELECT vanished_at, chain_cancelled FROM nws_alert_messages WHERE id = 'urn:test:other.1'")
    assert vanished[0][0] is not None and not vanished[0][1]  # marked vanished, kept, not called cancelled
    fetch([cancel], 65)
    assert query(db, "SELECT id FROM nws_active_alerts") == []
    chain = query(db, "SELECT id, chain_cancelled FROM nws_alert_messages WHERE chain_id = 'urn:test:chain.1' "
                      "ORDER BY id")
    assert chain == [("urn:test:chain.1", 1), ("urn:test:chain.2", 1), ("urn:test:chain.3", 1)]
    assert query(db, "SELECT COUNT(*) FROM nws_alert_fetches")[0][0] == 3


def test_a_cancel_for_one_area_leaves_the_update_for_another_active(replay, data_dir):
    """NWS splits a product by area: an Update (area kept) and a Cancel (area dropped) both reference the Alert."""
    base = next(f for f in load_fixture(NATIONAL)["features"] if f["geometry"] is None)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    alert = _feature(base, "urn:test:split.1", "Alert", t0, ends=t0 + timedelta(days=1))
    update = _feature(base, "urn:test:split.2", "Update", t0 + timedelta(minutes=20), [_ref(alert)],
                      ends=t0 + timedelta(days=1))
    cancel = _feature(base, "urn:test:split.3", "Cancel", t0 + timedelta(minutes=20), [_ref(alert)])
    nws = replay.source_object("nws")
    resources = env_resources(replay, data_dir)
    nws.set_active([alert], updated=(t0 + timedelta(minutes=5)).isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    nws.set_active([update, cancel], updated=(t0 + timedelta(minutes=25)).isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    db = resources["mindex_db"]
    assert [r[0] for r in query(db, "SELECT id FROM nws_active_alerts")] == ["urn:test:split.2"]
    cancelled = dict(query(db, "SELECT id, chain_cancelled FROM nws_alert_messages"))
    assert cancelled == {"urn:test:split.1": 1, "urn:test:split.2": 0, "urn:test:split.3": 1}


def test_an_alert_dropped_between_two_fetches_with_the_same_updated_time(replay, data_dir):
    base = load_fixture(NATIONAL)["features"][0]
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    a = _feature(base, "urn:test:same.a", "Alert", t0)
    c = _feature(base, "urn:test:same.c", "Alert", t0)
    nws = replay.source_object("nws")
    resources = env_resources(replay, data_dir)
    nws.set_active([a, c], updated=t0.isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    nws.set_active([c], updated=t0.isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    db = resources["mindex_db"]
    assert [r[0] for r in query(db, "SELECT id FROM nws_active_alerts")] == ["urn:test:same.c"]
    assert query(db, "SELECT vanished_at IS NOT NULL FROM nws_alert_messages WHERE id = 'urn:test:same.a'") == [(1,)]


def test_an_older_feed_never_moves_mindex_backwards(replay, data_dir):
    """Case C06: an edge that serves a days-old feed must not overwrite newer state."""
    resources = env_resources(replay, data_dir)
    base = load_fixture(NATIONAL)["features"][0]
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    nws = replay.source_object("nws")
    nws.set_active([_feature(base, "urn:test:new.1", "Alert", t0)], updated=t0.isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    before = query(resources["mindex_db"], "SELECT * FROM nws_alert_messages ORDER BY id")
    nws.set_active([_feature(base, "urn:test:old.1", "Alert", t0 - timedelta(days=2))],
                   updated=(t0 - timedelta(days=2)).isoformat())
    result = dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources, raise_on_error=False)
    assert not result.success
    assert query(resources["mindex_db"], "SELECT * FROM nws_alert_messages ORDER BY id") == before


def test_alerts_past_the_24h_cache_are_removed(replay, data_dir):
    resources = env_resources(replay, data_dir)
    base = load_fixture(NATIONAL)["features"][0]
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    nws = replay.source_object("nws")
    nws.set_active([_feature(base, "urn:test:day1", "Alert", t0)], updated=t0.isoformat())
    assert dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources).success
    nws.set_active([_feature(base, "urn:test:day2", "Alert", t0 + timedelta(hours=25))],
                   updated=(t0 + timedelta(hours=25)).isoformat())
    result = dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources)
    assert [r[0] for r in query(resources["mindex_db"], "SELECT id FROM nws_alert_messages")] == ["urn:test:day2"]
    meta = result.asset_materializations_for_node("mindex_nws_alerts")[0].metadata
    assert meta["removed_by_retention"].value == 1


def test_nws_requests_carry_user_agent_and_geojson_accept(replay, data_dir):
    assert dg.materialize([nws_alerts], resources=env_resources(replay, data_dir)).success
    request = [r for r in replay.request_log("nws") if r["path"] == "/alerts/active"][0]
    assert "(tests@example.org)" in request["user_agent"] and request["accept"] == "application/geo+json"


# --- weather --------------------------------------------------------------------------------------------------
def expected_weather_rows() -> int:
    """Rows the recordings give for the default sites: NWS for DC (LWX) and the Florida panhandle (TAE, asked in
    SI units), Open-Meteo for Denver; the other site/provider pairs have no recording."""
    files = [("washington_dc", "boreas_nws_forecast_white_house.json"),
             ("washington_dc", "boreas_nws_forecast_hourly_white_house.json"),
             ("florida_panhandle", "pynws_gridpoints_forecast_si.json"),
             ("florida_panhandle", "pynws_gridpoints_forecast_hourly_si.json")]
    rows = sum(len(nws_forecast_rows(site, load_fixture(f"weather/{name}"), "x")) for site, name in files)
    denver = load_fixture("weather/openmeteo_v1_forecast_current_daily5_virga.json")
    return rows + len(open_meteo_rows("denver_co", denver))


def test_weather_forecasts_for_the_default_sites(replay, data_dir):
    resources = env_resources(replay, data_dir)
    result = dg.materialize([weather_forecasts, mindex_weather_forecasts], resources=resources)
    assert result.success
    rows = result.asset_materializations_for_node("weather_forecasts")[0].metadata["dagster/row_count"].value
    assert rows == expected_weather_rows()
    db = resources["mindex_db"]
    latest = query(db, "SELECT site, provider, COUNT(*) FROM weather_latest_forecast GROUP BY 1, 2 ORDER BY 1, 2")
    assert [(s, p) for s, p, _ in latest] == [("denver_co", "open_meteo"), ("florida_panhandle", "nws"),
                                              ("washington_dc", "nws")]
    assert sum(n for _, _, n in latest) == rows
    status = {(s, p): (stale, error) for s, p, stale, error in query(
        db, "SELECT site, provider, stale, last_error FROM weather_site_status")}
    # Case C06: the recorded DC forecast was issued in 2023: a 200 with an old forecast is stale, not fresh.
    stale, reason = status[("washington_dc", "nws")]
    assert stale == 1 and "forecast issued 2023-01-01" in reason
    assert status[("denver_co", "open_meteo")][0] == 1  # recorded 2026-08-08: also more than a day old
    assert status[("denver_co", "nws")][0] == 1 and "InvalidPoint" in status[("denver_co", "nws")][1]
    assert query(db, "SELECT COUNT(*) FROM weather_forecasts WHERE unit = '°F'")[0][0] == 0  # one unit per variable
    # The /points lookup is cached: a second run does not ask again.
    before = len([r for r in replay.request_log("nws") if r["path"].startswith("/points/")])
    assert dg.materialize([weather_forecasts], resources=resources).success
    after = len([r for r in replay.request_log("nws") if r["path"].startswith("/points/")])
    assert after - before == 1  # only Denver, which has no cached point because its lookup failed


def test_expired_grid_keeps_the_last_good_forecast_marked_stale(replay, data_dir):
    """Case C07: ForecastGridExpired is not retried; MINDEX keeps the last good forecast and says it is stale."""
    resources = env_resources(replay, data_dir)
    assert dg.materialize([weather_forecasts, mindex_weather_forecasts], resources=resources).success
    db = resources["mindex_db"]
    good = query(db, "SELECT COUNT(*) FROM weather_latest_forecast WHERE site = 'washington_dc' AND provider = 'nws'")
    replay.set_fault("nws", "problem_json", status=503, type="https://api.weather.gov/problems/ForecastGridExpired",
                     title="Forecast Grid Expired")
    before = len(replay.request_log("nws"))
    result = dg.materialize([weather_forecasts, mindex_weather_forecasts], resources=resources)
    assert result.success  # Open-Meteo for Denver still answered
    nws_requests = replay.request_log("nws")[before:]
    # DC and Florida ask their (cached) grids once each; Denver's points lookup failed before so it asks again.
    # Nothing is retried: an expired grid is not a transient error.
    assert sorted(r["path"] for r in nws_requests) == ["/gridpoints/LWX/97,71/forecast",
                                                       "/gridpoints/TAE/58,65/forecast", "/points/39.7469,-104.9871"]
    errors = result.asset_materializations_for_node("weather_forecasts")[0].metadata["site_errors"].value
    assert errors["washington_dc/nws"]["problem_type"] == "ForecastGridExpired" and errors["washington_dc/nws"]["stale"]
    assert query(db, "SELECT COUNT(*) FROM weather_latest_forecast WHERE site = 'washington_dc' AND "
                     "provider = 'nws'") == good
    stale = "SELECT stale FROM weather_site_status WHERE site = 'washington_dc' AND provider = 'nws'"
    assert query(db, stale) == [(1,)]


def test_weather_fails_only_when_every_request_failed(replay, data_dir):
    resources = env_resources(replay, data_dir)
    replay.set_fault("nws", "down")
    replay.set_fault("open_meteo", "down")
    resources["nws"] = NwsClient(base_url=replay.base_url("nws"), max_retries=0)
    resources["open_meteo"] = OpenMeteoClient(base_url=replay.base_url("open_meteo"), max_retries=0)
    result = dg.materialize([weather_forecasts], resources=resources, raise_on_error=False)
    assert not result.success
    assert resources["mirror_store"].manifest("weather_forecasts", "snapshot") is None


# --- OpenAQ ---------------------------------------------------------------------------------------------------
def test_openaq_stations_latest_and_measurements(replay, data_dir):
    resources = env_resources(replay, data_dir)
    assert dg.materialize([openaq_locations, openaq_latest, mindex_air_quality], resources=resources).success
    key = sla.partitions_def("openaq").get_partition_keys()[-1]
    result = dg.materialize([openaq_measurements, mindex_air_quality_measurements], resources=resources,
                            partition_key=key)
    assert result.success
    sensor_files = sorted((FIXTURES / "openaq").glob("memoortiz_v3_sensors_*_measurements_limit1000_page1.json"))
    expected = sum(len(json.loads(p.read_text(encoding="utf-8"))["results"]) for p in sensor_files)
    assert expected == 2546
    counts = {m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
              for m in (e.materialization for e in result.get_asset_materialization_events())}
    assert counts == {"openaq_measurements": expected, "mindex_air_quality_measurements": expected}
    db = resources["mindex_db"]
    bbox = load_fixture("openaq/memoortiz_v3_locations_bbox_guadalajara_results_only.json")["results"]
    assert query(db, "SELECT COUNT(*) FROM aq_stations")[0][0] == len(bbox) == 23
    assert query(db, "SELECT COUNT(*) FROM aq_sensors")[0][0] == sum(len(b["sensors"]) for b in bbox)
    latest = query(db, "SELECT parameter, unit, value FROM aq_latest_values WHERE station_id = 3309328 ORDER BY 1")
    assert [(p, u) for p, u, _ in latest] == [("co", "ppm"), ("no", "ppm"), ("no2", "ppm"), ("nox", "ppm"),
                                             ("pm10", "µg/m³"), ("pm25", "µg/m³")]
    pm10 = json.loads((FIXTURES / "openaq" / "memoortiz_v3_sensors_11602121_measurements_limit1000_page1.json")
                      .read_text(encoding="utf-8"))["results"]
    newest = max(pm10, key=lambda m: m["period"]["datetimeFrom"]["utc"])
    assert dict((p, v) for p, _, v in latest)["pm10"] == newest["value"]
    requests = replay.request_log("openaq")
    assert all(int(r["query"].get("limit", 100)) <= 1000 for r in requests)


def test_sentinels_are_excluded_from_aggregates(data_dir):
    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    t = datetime(2025, 9, 20, 18, tzinfo=UTC)
    rows = [{"sensor_id": 1, "datetime_from": t + timedelta(hours=i), "station_id": 9, "parameter": "pm25",
             "unit": "µg/m³", "value": v, "value_raw": raw, "is_missing_sentinel": raw == -999,
             "datetime_to": t + timedelta(hours=i + 1), "partition_key": "k", "qc_flags": None}
            for i, (v, raw) in enumerate([(10.0, 10.0), (None, -999.0), (20.0, 20.0)])]
    with db.engine.begin() as conn:
        conn.execute(aq_measurements.insert(), rows)
    assert query(db, "SELECT mean_value, n_values, n_sentinels FROM aq_daily_means") == [(15.0, 2, 1)]


def test_openaq_without_a_key_and_on_a_retired_version(replay, data_dir):
    """Case C08: 401 says 'missing or invalid API key', v1/v2 are refused before any request; neither retried."""
    resources = env_resources(replay, data_dir, openaq_key=None)
    result = dg.materialize([openaq_locations], resources=resources, raise_on_error=False)
    assert not result.success
    assert len(replay.request_log("openaq")) == 1
    with pytest.raises(AuthError, match="missing or invalid API key"):
        resources["openaq"].get_json("locations")
    retired = OpenAqClient(base_url=replay.base_url("openaq").replace("/v3", "/v2"), api_key="k")
    with pytest.raises(ClientRequestError, match="not the v3 API"):
        retired.get_json("locations")


# --- instance history -----------------------------------------------------------------------------------------
def test_frequent_refreshes_keep_the_instance_bounded(replay, data_dir):
    """A day of 5-minute alert refreshes is 360 runs; each adds a fixed number of events, and the prune job keeps
    only the last run_history (2 days for NWS) of them. Here: 6 runs, then a prune 3 days later."""
    resources = env_resources(replay, data_dir)
    with dg.instance_for_test() as instance:
        for _ in range(6):
            result = dg.materialize([nws_alerts, mindex_nws_alerts], resources=resources, instance=instance,
                                    tags={"source": "nws_alerts"})
            assert result.success
        records = instance.get_run_records(dg.RunsFilter(tags={"source": "nws_alerts"}))
        assert len(records) == 6
        events_per_run = len(instance.all_logs(records[0].dagster_run.run_id))
        deleted = prune_run_history(instance, now=datetime.now(UTC) + timedelta(days=3))
        assert deleted["nws_alerts"] == 5  # everything past 2 days except the latest success
        remaining = instance.get_run_records(dg.RunsFilter(tags={"source": "nws_alerts"}))
        assert len(remaining) == 1
        assert instance.get_latest_materialization_event(dg.AssetKey("mindex_nws_alerts")) is not None
        assert 10 <= events_per_run <= 60, events_per_run


def test_prune_keeps_every_partitions_latest_run(replay, data_dir):
    """Deleting a run deletes its materializations: a run that holds the latest materialization of a partition
    stays, or Dagster would forget the partition."""
    from mycosoft_assets.inaturalist.assets import inaturalist_observations
    from tests.test_materialize import make_resources

    resources = make_resources(replay, data_dir)
    with dg.instance_for_test() as instance:
        for key in ("2024-05-01", "2024-05-02", "2024-05-03"):
            assert dg.materialize([inaturalist_observations], resources=resources, partition_key=key,
                                  instance=instance, tags={"source": "inaturalist"}).success
        later = datetime.now(UTC) + timedelta(days=40)
        assert prune_run_history(instance, now=later)["inaturalist"] == 0
        assert dg.materialize([inaturalist_observations], resources=resources, partition_key="2024-05-01",
                              instance=instance, tags={"source": "inaturalist"}).success
        assert prune_run_history(instance, now=later)["inaturalist"] == 1  # the first 05-01 run
        assert instance.get_materialized_partitions(dg.AssetKey("inaturalist_observations")) == {
            "2024-05-01", "2024-05-02", "2024-05-03"}


def test_a_sentinel_latest_reading_keeps_the_newest_real_value(replay, data_dir):
    from mycosoft_assets.mindex.schema import aq_latest, aq_sensors, aq_stations

    db = MindexDatabase(data_dir=str(data_dir))
    ensure_schema(db.engine)
    with db.engine.begin() as conn:
        conn.execute(aq_stations.insert().values(id=9, name="S"))
        conn.execute(aq_sensors.insert().values(id=1, station_id=9, parameter="pm25", unit="µg/m³"))
        conn.execute(aq_latest.insert().values(sensor_id=1, station_id=9, value=10.0, value_raw=10.0,
                                               is_missing_sentinel=False,
                                               datetime_utc=datetime(2025, 9, 20, 18, tzinfo=UTC)))
    store = PartitionStore(data_dir=str(data_dir))
    from mycosoft_assets.openaq.assets import LATEST, LOCATIONS
    from mycosoft_assets.openaq.normalize import normalize_latest, normalize_location
    from resources.storage import PartitionWindow

    window = [PartitionWindow("snapshot", None, datetime.now(UTC))]
    location = {"id": 9, "name": "S", "sensors": [{"id": 1, "parameter": {"id": 2, "name": "pm25", "units": "µg/m³"}}]}
    with store.open_run(LOCATIONS.name, LOCATIONS.schema, window) as writer:
        writer.write(pa.RecordBatch.from_pylist([normalize_location(location)], schema=LOCATIONS.schema))
    sentinel = {"sensorsId": 1, "locationsId": 9, "value": -999, "datetime": {"utc": "2025-09-20T19:00:00Z"}}
    with store.open_run(LATEST.name, LATEST.schema, window) as writer:
        writer.write(pa.RecordBatch.from_pylist([normalize_latest(sentinel)], schema=LATEST.schema))
    assert dg.materialize([mindex_air_quality], resources={"mirror_store": store, "mindex_db": db}).success
    assert query(db, "SELECT value FROM aq_latest_values WHERE station_id = 9") == [(10.0,)]


def test_late_published_hours_land_in_their_partitions():
    """OpenAQ publishes an hour after it closes (here 30 minutes later). Following the schedule's own partition
    choice, every published hour must end up in its partition: measurement time is not an update cursor."""
    from sensors.schedules import RANGE_END_TAG, RANGE_START_TAG, refresh_partition_keys
    from tests.stub_server import StubServer, json_answer

    day = datetime(2025, 6, 1, tzinfo=UTC)
    published: list[datetime] = [day + timedelta(hours=h) for h in range(0, 9)]  # 00:00 .. 08:00 are out

    def measurement(start: datetime) -> dict:
        return {"value": 5.0, "parameter": {"id": 2, "name": "pm25", "units": "µg/m³"},
                "period": {"label": "raw", "interval": "01:00:00",
                           "datetimeFrom": {"utc": start.isoformat().replace("+00:00", "Z")},
                           "datetimeTo": {"utc": (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")}}}

    def handler(path: str):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(path)
        query_args = {k: v[0] for k, v in parse_qs(parts.query).items()}
        meta = {"name": "openaq-api", "website": "/", "page": 1, "limit": 1000}
        if parts.path.endswith("/locations"):
            location = {"id": 9, "name": "S", "sensors": [{"id": 1, "parameter": {"id": 2, "name": "pm25",
                                                                                   "units": "µg/m³"}}],
                        "datetimeLast": {"utc": published[-1].isoformat()}}
            return json_answer({"meta": {**meta, "found": 1}, "results": [location] if query_args["page"] == "1"
                                else []})
        start = datetime.fromisoformat(query_args["datetime_from"])
        end = datetime.fromisoformat(query_args["datetime_to"])
        rows = [measurement(t) for t in published if start <= t < end]
        return json_answer({"meta": {**meta, "found": len(rows)}, "results": rows})

    import tempfile

    with StubServer(handler) as stub, tempfile.TemporaryDirectory() as tmp:
        resources = {"openaq": OpenAqClient(base_url=stub.url.replace("/v1", "/v3"), api_key="k"),
                     "mirror_store": PartitionStore(data_dir=tmp)}
        store = resources["mirror_store"]
        assert dg.materialize([openaq_locations], resources=resources).success

        def tick(now: datetime) -> None:
            keys = refresh_partition_keys("openaq", now, set(store.synced_keys("openaq_measurements")))
            result = dg.materialize([openaq_measurements], resources=resources,
                                    tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
            assert result.success

        def hours_held() -> dict[str, list[int]]:
            import pyarrow.parquet as pq

            return {k: sorted(t.hour for t in pq.read_table(store.parquet_path("openaq_measurements", k))
                              .column("datetime_from").to_pylist()) for k in store.synced_keys("openaq_measurements")}

        tick(day + timedelta(hours=10, minutes=5))  # first sync: 00:00 .. 08:00 land in 10:00's partition
        published.append(day + timedelta(hours=9))  # 09:00 published at 10:30
        tick(day + timedelta(hours=10, minutes=35))
        published.append(day + timedelta(hours=10))  # 10:00 published at 11:30
        tick(day + timedelta(hours=11, minutes=5))
        tick(day + timedelta(hours=11, minutes=35))
        published.append(day + timedelta(hours=11))  # 11:00 published at 12:30
        tick(day + timedelta(hours=12, minutes=35))
        held = hours_held()
        assert held["2025-06-01-10:00"] == list(range(0, 11))
        assert held["2025-06-01-11:00"] == [11]
        assert sum(len(v) for v in held.values()) == len(published) == 12


def _rewrite_partition(store: PartitionStore, dataset: str, key: str, change) -> None:
    """The mirror partition on disk, answered again by the source with ``change`` applied to every row (manifest
    kept): what a later fetch of the same records would land."""
    import pyarrow.parquet as pq

    path = store.parquet_path(dataset, key)
    table = pq.read_table(path)
    rows = [change(dict(r)) for r in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def test_a_later_sentinel_or_zero_position_never_erases_a_real_value(replay, data_dir):
    """Case C09, over time: the source first sends real values, then the same hours as -999 and its stations at
    0,0. Loading that into MINDEX keeps every real value and every known position (the sentinels stay in the
    mirror and the raw archive); a new name is still taken, and a real value replaces a stored sentinel."""
    resources = env_resources(replay, data_dir)
    store, db = resources["mirror_store"], resources["mindex_db"]
    key = sla.partitions_def("openaq").get_partition_keys()[-1]
    assert dg.materialize([openaq_locations, openaq_latest, mindex_air_quality], resources=resources).success
    assert dg.materialize([openaq_measurements, mindex_air_quality_measurements], resources=resources,
                          partition_key=key).success
    values = "SELECT sensor_id, datetime_from, value, is_missing_sentinel FROM aq_measurements ORDER BY 1, 2"
    positions = "SELECT id, name, latitude, longitude FROM aq_stations ORDER BY id"
    real_values, real_positions = query(db, values), query(db, positions)
    assert len(real_values) == 2546 and all(v is not None for _, _, v, _ in real_values)
    assert all(lat is not None for _, _, lat, _ in real_positions)

    _rewrite_partition(store, "openaq_measurements", key, lambda r: {
        **r, "value": None, "value_raw": -999.0, "is_missing_sentinel": True})
    _rewrite_partition(store, "openaq_locations", "snapshot", lambda r: {
        **r, "latitude": None, "longitude": None, "name": f"{r['name']} (renamed)"})
    assert dg.materialize([mindex_air_quality_measurements], resources=resources, partition_key=key).success
    assert dg.materialize([mindex_air_quality], resources=resources).success
    assert query(db, values) == real_values
    assert [(i, lat, lon) for i, _, lat, lon in query(db, positions)] == [
        (i, lat, lon) for i, _, lat, lon in real_positions]
    assert all(name.endswith("(renamed)") for _, name, _, _ in query(db, positions))

    # The other way round is an update like any other: a real value replaces a stored sentinel.
    sensor, start = real_values[0][:2]
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE aq_measurements SET value = NULL, is_missing_sentinel = 1 "
                             "WHERE sensor_id = :s AND datetime_from = :d"), {"s": sensor, "d": start})
    _rewrite_partition(store, "openaq_measurements", key, lambda r: {
        **r, "value": 1.0, "value_raw": 1.0, "is_missing_sentinel": False})
    assert dg.materialize([mindex_air_quality_measurements], resources=resources, partition_key=key).success
    assert query(db, f"SELECT value FROM aq_measurements WHERE sensor_id = {sensor} AND "
                     f"datetime_from = '{start}'") == [(1.0,)]
