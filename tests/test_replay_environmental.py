"""The replay server's environmental sources (NWS, Open-Meteo, OpenAQ v3) against the recorded fixtures.

httpx on loopback only. Expected values are computed here from the fixture files, independently of the
sources' loaders, so a loader or filter bug makes these tests fail.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mindex.replay import ReplayServer, registered_sources

ENV_SOURCES = ["nws", "open_meteo", "openaq"]
UA = {"User-Agent": "(mindex-tests, ops@example.org)"}
KEY = {"X-API-Key": "test-key"}
GUADALAJARA_BBOX = "-103.50,20.50,-103.20,20.80"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- servers -----
@pytest.fixture(scope="module")
def env(fixtures_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(fixtures_dir, sources=ENV_SOURCES) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "env" in request.fixturenames:
        server = request.getfixturevalue("env")
        for source in server.sources:
            server.clear_fault(source)
        server.source_object("nws").reset_active()


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


# --- expected values, straight from the files -----
def recorded_alerts(fixtures_dir: Path) -> tuple[dict[str, dict[str, Any]], str, dict[str, Any]]:
    """Distinct alerts by properties.id, the newest feed `updated`, and the national file."""
    national = _load(fixtures_dir / "nws" / "ruthanno_alerts_active_national_2025-03-17T16-08Z.json")
    alerts: dict[str, dict[str, Any]] = {}
    updated = []
    for path in [fixtures_dir / "nws" / "ruthanno_alerts_active_national_2025-03-17T16-08Z.json"] + sorted(
        (fixtures_dir / "nws").glob("pynws_alerts_active_zone*.json")
    ):
        body = _load(path)
        updated.append(body["updated"])
        for feature in body["features"]:
            alerts.setdefault(feature["properties"]["id"], feature)
    return alerts, max(updated, key=_utc), national


def _in_polygon(lon: float, lat: float, rings: list[list[list[float]]]) -> bool:
    inside = False
    for ring in rings:
        for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside


# --- shape -----
def test_environmental_sources_and_base_urls(env: ReplayServer, fixtures_dir: Path) -> None:
    assert env.sources == sorted(ENV_SOURCES)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env.base_url("nws"))
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", env.base_url("open_meteo"))
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v3", env.base_url("openaq"))
    every = ReplayServer(fixtures_dir, sources=["all"])
    assert set(ENV_SOURCES) <= set(every.sources) <= set(registered_sources())


# --- NWS -----
def test_nws_user_agent_gate(env: ReplayServer, client: httpx.Client) -> None:
    url = f"{env.base_url('nws')}/alerts/active/count"
    for agent in ("", "python-httpx/0.27.0", "curl/8.5.0", "python-requests/2.32"):
        r = client.get(url, headers={"User-Agent": agent})
        assert r.status_code == 403, agent
        assert r.headers["content-type"].startswith("text/html")
        assert "<TITLE>Access Denied</TITLE>" in r.text
    assert client.get(url).status_code == 403  # httpx's own default User-Agent
    for agent in (UA["User-Agent"], "python-httpx/0.27.0 (mindex, ops@example.org)", "mindex/1.0 ops@example.org"):
        assert client.get(url, headers={"User-Agent": agent}).status_code == 200, agent
    statuses = [e["status"] for e in env.request_log("nws")[-8:]]
    assert statuses == [403] * 5 + [200] * 3


def test_nws_active_alerts_are_every_recorded_alert(
    env: ReplayServer, client: httpx.Client, fixtures_dir: Path
) -> None:
    alerts, updated, national = recorded_alerts(fixtures_dir)
    r = client.get(f"{env.base_url('nws')}/alerts/active", headers=UA)
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    body = r.json()
    ids = [f["properties"]["id"] for f in body["features"]]
    assert len(ids) == len(set(ids)) == len(alerts) >= 621
    assert set(ids) == set(alerts)
    assert body["updated"] == updated and body["title"] == national["title"]
    assert body["@context"] == national["@context"] and "pagination" not in body
    # links point back at the replay, identifiers stay as recorded
    base = env.base_url("nws")
    feature = body["features"][0]
    assert feature["id"] == f"{base}/alerts/{feature['properties']['id']}"
    assert all(z.startswith(f"{base}/zones/") for f in body["features"] for z in f["properties"]["affectedZones"])
    assert "https://api.weather.gov" not in r.text.replace("https://api.weather.gov/ontology#", "")
    assert sum(f["geometry"] is None for f in body["features"]) == sum(a["geometry"] is None for a in alerts.values())


def test_nws_alert_filters(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    alerts, _, _ = recorded_alerts(fixtures_dir)
    base = env.base_url("nws")

    def ids(path: str, **params: str) -> set[str]:
        r = client.get(f"{base}{path}", params=params, headers=UA)
        assert r.status_code == 200, r.text
        return {f["properties"]["id"] for f in r.json()["features"]}

    def ugc(a: dict[str, Any]) -> list[str]:
        return a["properties"]["geocode"]["UGC"]

    iowa = {i for i, a in alerts.items() if any(u.startswith("IA") for u in ugc(a))}
    assert iowa and ids("/alerts/active", area="IA") == iowa == ids("/alerts/active/area/IA")
    two = {i for i, a in alerts.items() if any(u[:2] in ("IA", "NE") for u in ugc(a))}
    assert ids("/alerts/active", area="IA,NE") == two
    oregon = {i for i, a in alerts.items() if "ORZ004" in ugc(a)}
    assert len(oregon) >= 2 and ids("/alerts/active", zone="ORZ004") == oregon == ids("/alerts/active/zone/ORZ004")
    updates = {i for i, a in alerts.items() if a["properties"]["messageType"] == "Update"}
    assert ids("/alerts/active", message_type="update") == updates
    floods = {i for i, a in alerts.items() if a["properties"]["event"] in ("Flood Warning", "Red Flag Warning")}
    assert ids("/alerts/active", event="Flood Warning,red flag warning") == floods
    severe_iowa = {i for i in iowa if alerts[i]["properties"]["severity"] == "Severe"}
    assert ids("/alerts/active", area="IA", severity="Severe") == severe_iowa

    polygon = next(a for a in alerts.values() if a["geometry"] and a["geometry"]["type"] == "Polygon")
    ring = polygon["geometry"]["coordinates"][0]
    lon = sum(p[0] for p in ring[:-1]) / (len(ring) - 1)
    lat = sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
    inside = {
        i
        for i, a in alerts.items()
        if a["geometry"] and a["geometry"]["type"] == "Polygon" and _in_polygon(lon, lat, a["geometry"]["coordinates"])
    }
    assert inside and ids("/alerts/active", point=f"{lat},{lon}") == inside
    assert ids("/alerts/active", point="0,0") == set()  # null-geometry alerts never match a point


def test_nws_replaceable_feed_alert_update_cancel(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    alerts, _, _ = recorded_alerts(fixtures_dir)
    base = env.base_url("nws")
    original = next(a for a in alerts.values() if a["properties"]["messageType"] == "Alert")

    def message(suffix: str, kind: str, sent: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        feature = copy.deepcopy(original)
        props = feature["properties"]
        props["id"] = f"urn:oid:2.49.0.1.840.0.replaytest.{suffix}"
        feature["id"] = props["@id"] = f"https://api.weather.gov/alerts/{props['id']}"
        props.update(messageType=kind, sent=sent, effective=sent, expires="2025-03-18T12:00:00-05:00")
        props["ends"] = "2025-03-18T18:00:00-05:00"
        props["references"] = (
            []
            if previous is None
            else [
                {
                    "@id": previous["id"],
                    "identifier": previous["properties"]["id"],
                    "sender": previous["properties"]["sender"],
                    "sent": previous["properties"]["sent"],
                }
            ]
        )
        return feature

    alert = message("001.1", "Alert", "2025-03-17T10:00:00-05:00", None)
    update = message("002.1", "Update", "2025-03-17T14:00:00-05:00", alert)
    cancel = message("003.1", "Cancel", "2025-03-17T16:00:00-05:00", update)

    def put(features: list[dict[str, Any]], updated: str) -> None:
        r = client.put(
            f"{base}/_replay/nws/active", json={"type": "FeatureCollection", "features": features, "updated": updated}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"recorded": False, "features": len(features), "updated": updated}

    def active() -> dict[str, Any]:
        return client.get(f"{base}/alerts/active", headers=UA).json()

    put([alert], "2025-03-17T15:00:00+00:00")
    body = active()
    assert [f["properties"]["id"] for f in body["features"]] == [alert["properties"]["id"]]
    assert body["updated"] == "2025-03-17T15:00:00+00:00"
    assert body["features"][0]["id"].startswith(base)  # the edited links are rewritten too

    env.source_object("nws").set_active([update], "2025-03-17T19:00:00+00:00")  # the Python switch
    body = active()
    (served,) = body["features"]
    assert served["properties"]["messageType"] == "Update"
    assert served["properties"]["references"][0]["identifier"] == alert["properties"]["id"]
    count = client.get(f"{base}/alerts/active/count", headers=UA).json()
    zones = original["properties"]["geocode"]["UGC"]
    assert count["total"] == 1 and count["land"] + count["marine"] == 1
    assert count["zones"] == {z: 1 for z in sorted(set(zones))}

    put([cancel], "2025-03-17T21:00:00+00:00")
    assert [f["properties"]["messageType"] for f in active()["features"]] == ["Cancel"]
    gone = client.get(f"{base}/alerts/{alert['properties']['id']}", headers=UA)  # no longer active, still known
    assert gone.status_code == 200 and gone.json()["properties"]["messageType"] == "Alert"

    put([], "2025-03-17T22:00:00+00:00")
    assert active()["features"] == []
    assert client.put(f"{base}/_replay/nws/active", json={"features": [alert, alert]}).status_code == 400

    assert client.delete(f"{base}/_replay/nws/active").json()["recorded"] is True
    assert len(active()["features"]) == len(alerts)
    recorded_count = _load(fixtures_dir / "nws" / "nws_alerts_ha_alerts_active_count.json")
    assert client.get(f"{base}/alerts/active/count", headers=UA).json() == recorded_count


def test_nws_alert_by_id(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    alerts, _, _ = recorded_alerts(fixtures_dir)
    alert_id, feature = next(iter(alerts.items()))
    r = client.get(f"{env.base_url('nws')}/alerts/{alert_id}", headers=UA)
    assert r.status_code == 200 and r.json()["properties"] == json.loads(
        json.dumps(feature["properties"]).replace("https://api.weather.gov", env.base_url("nws"))
    )
    missing = client.get(f"{env.base_url('nws')}/alerts/urn:oid:2.49.0.1.840.0.nope", headers=UA)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_nws_points_to_forecasts_stays_on_loopback(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    weather = fixtures_dir / "weather"
    base = env.base_url("nws")
    daily = _load(weather / "boreas_nws_forecast_white_house.json")
    hourly = _load(weather / "boreas_nws_forecast_hourly_white_house.json")
    point = _load(weather / "boreas_nws_points_white_house.json")
    lon, lat = point["geometry"]["coordinates"]

    r = client.get(f"{base}/points/{lat},{lon}", headers=UA)
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    props = r.json()["properties"]
    assert (props["gridId"], props["gridX"], props["gridY"]) == ("LWX", 97, 71)
    for link in ("forecast", "forecastHourly", "forecastGridData", "observationStations"):
        assert props[link] == point["properties"][link].replace("https://api.weather.gov", base)

    forecast = client.get(props["forecast"], headers=UA)
    assert forecast.status_code == 200
    periods = forecast.json()["properties"]["periods"]
    assert len(periods) == len(daily["properties"]["periods"]) == 14
    assert periods == json.loads(json.dumps(daily["properties"]["periods"]).replace("https://api.weather.gov", base))
    hourly_r = client.get(props["forecastHourly"], params={"units": "si"}, headers=UA)
    assert len(hourly_r.json()["properties"]["periods"]) == len(hourly["properties"]["periods"]) == 156
    assert hourly_r.headers["X-Replay-Ignored-Params"] == "units"  # LWX was recorded in us units only
    assert hourly_r.json()["properties"]["units"] == "us"

    # the pynws chain: TAE/58,65 with both unit systems
    tae = client.get(f"{base}/points/30,-85", headers=UA).json()["properties"]
    si = client.get(tae["forecast"], params={"units": "si"}, headers=UA).json()["properties"]
    assert si == _load(weather / "pynws_gridpoints_forecast_si.json")["properties"] | {"periods": si["periods"]}
    assert si["periods"][0]["temperatureUnit"] == "C"
    raw = client.get(tae["forecastGridData"], headers=UA)
    assert raw.status_code == 200 and raw.json()["properties"]["gridId"] == "TAE"
    assert [e["path"] for e in env.request_log("nws")][-1] == "/gridpoints/TAE/58,65"


def test_nws_points_redirect_and_invalid_point(env: ReplayServer, client: httpx.Client) -> None:
    base = env.base_url("nws")
    r = client.get(f"{base}/points/38.89881,-77.03534", headers=UA)
    assert r.status_code == 301 and r.headers["Location"] == f"{base}/points/38.8988,-77.0353"
    followed = client.get(f"{base}/points/38.89881,-77.03534", headers=UA, follow_redirects=True)
    assert followed.status_code == 200 and followed.json()["properties"]["gridId"] == "LWX"

    missing = client.get(f"{base}/points/51.5,-0.12", headers=UA)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    problem = missing.json()
    assert problem["type"] == "https://api.weather.gov/problems/InvalidPoint" and problem["status"] == 404
    grid = client.get(f"{base}/gridpoints/LWX/1,1/forecast", headers=UA)
    assert grid.status_code == 404 and grid.headers["content-type"] == "application/problem+json"


def test_nws_forecast_grid_expired_through_the_problem_fault(env: ReplayServer, client: httpx.Client) -> None:
    expired = "https://api.weather.gov/problems/ForecastGridExpired"
    env.set_fault("nws", "problem_json", status=503, type=expired, count=1)
    url = f"{env.base_url('nws')}/gridpoints/LWX/97,71/forecast"
    r = client.get(url, headers=UA)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == expired and r.json()["title"] == "Forecast Grid Expired"
    assert client.get(url, headers=UA).status_code == 200


# --- Open-Meteo -----
def test_open_meteo_near_far_and_errors(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    recorded = _load(fixtures_dir / "weather" / "openmeteo_v1_forecast_current_daily5_virga.json")
    url = f"{env.base_url('open_meteo')}/forecast"
    params = {
        "latitude": recorded["latitude"] + 0.05,
        "longitude": recorded["longitude"] - 0.05,
        "current": "temperature_2m,weather_code",
        "daily": "temperature_2m_max,precipitation_sum",
        "hourly": "temperature_2m",
        "timezone": "GMT",
        "forecast_days": 5,
    }
    r = client.get(url, params=params)
    assert r.status_code == 200 and r.json() == recorded
    assert r.json()["utc_offset_seconds"] == -21600 and r.json()["timezone"] == "America/Denver"
    ignored = r.headers["X-Replay-Ignored-Params"].split(",")
    assert set(ignored) == {"timezone", "daily:precipitation_sum", "hourly:temperature_2m"}

    far = client.get(url, params={"latitude": recorded["latitude"] + 0.2, "longitude": recorded["longitude"]})
    assert far.status_code == 400 and far.json()["error"] is True and "(replay)" in far.json()["reason"]
    missing = client.get(url, params={"longitude": 10})
    assert missing.status_code == 400 and missing.json() == {
        "error": True,
        "reason": "Value of type 'Float' required for key 'latitude'.",
    }


# --- OpenAQ -----
def guadalajara(fixtures_dir: Path) -> list[dict[str, Any]]:
    return _load(fixtures_dir / "openaq" / "memoortiz_v3_locations_bbox_guadalajara_results_only.json")["results"]


def measurements(fixtures_dir: Path, sensor: int) -> list[dict[str, Any]]:
    name = f"memoortiz_v3_sensors_{sensor}_measurements_limit1000_page1.json"
    return _load(fixtures_dir / "openaq" / name)["results"]


def test_openaq_key_and_retired_versions(env: ReplayServer, client: httpx.Client) -> None:
    base = env.base_url("openaq")
    for headers in ({}, {"X-API-Key": ""}):
        r = client.get(f"{base}/locations", params={"limit": 1}, headers=headers)
        assert r.status_code == 401 and "x-ratelimit-limit" not in r.headers
        assert r.json() == {"detail": "Unauthorized. A valid API key must be provided in the X-API-Key header."}
    root = base.removesuffix("/v3")
    for path in ("/v2/measurements", "/v1/latest", "/v2/locations"):
        gone = client.get(root + path, headers=KEY)
        assert gone.status_code == 410 and "Version 3" in gone.json()["message"]


def test_openaq_key_can_be_pinned(fixtures_dir: Path, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINDEX_REPLAY_OPENAQ_KEY", "the-right-key")
    with ReplayServer(fixtures_dir, sources=["openaq"]) as server:
        url = f"{server.base_url('openaq')}/parameters"
        assert client.get(url, headers={"X-API-Key": "another-key"}).status_code == 401
        assert client.get(url, headers={"X-API-Key": "the-right-key"}).status_code == 200


def test_openaq_bbox_locations_and_envelope(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    expected = sorted(loc["id"] for loc in guadalajara(fixtures_dir))
    url = f"{env.base_url('openaq')}/locations"
    r = client.get(url, params={"bbox": GUADALAJARA_BBOX, "limit": 1000}, headers=KEY)
    assert r.status_code == 200
    body = r.json()
    assert [loc["id"] for loc in body["results"]] == expected and len(expected) == 23
    assert body["meta"] == {"name": "openaq-api", "website": "/", "page": 1, "limit": 1000, "found": 23}
    page2 = client.get(url, params={"bbox": GUADALAJARA_BBOX, "limit": 10, "page": 3}, headers=KEY).json()
    assert [loc["id"] for loc in page2["results"]] == expected[20:]
    mexico = client.get(url, params={"iso": "MX", "limit": 1000}, headers=KEY).json()["results"]
    assert {loc["id"] for loc in mexico} == set(expected)  # every recorded Mexican location is in Guadalajara
    too_big = client.get(url, params={"limit": 1001}, headers=KEY)
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["query", "limit"]


def test_openaq_measurement_paging_and_found(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    recorded = measurements(fixtures_dir, 11602121)
    assert len(recorded) == 426
    url = f"{env.base_url('openaq')}/sensors/11602121/measurements"
    seen: list[dict[str, Any]] = []
    founds = []
    page = 1
    while True:
        body = client.get(url, params={"limit": 100, "page": page}, headers=KEY).json()
        founds.append(body["meta"]["found"])
        seen.extend(body["results"])
        if len(body["results"]) < 100:
            break
        page += 1
    assert page == 5 and founds[:4] == [">100"] * 4 and isinstance(founds[4], int)
    stamps = [m["period"]["datetimeFrom"]["utc"] for m in seen]
    assert len(stamps) == len(set(stamps)) == 426
    assert seen == recorded  # values, units and periods exactly as recorded
    whole = client.get(url, params={"limit": 1000}, headers=KEY).json()["meta"]["found"]
    assert whole == 426  # one short page: an int


def test_openaq_measurement_date_filters(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    cassette = _load(fixtures_dir / "openaq" / "openaq-r_v3_list_sensor_measurements_3.json")
    url = f"{env.base_url('openaq')}/sensors/3/measurements"
    params = {"datetime_from": "2023-03-07T00:00:00-0500", "datetime_to": "2023-03-08T00:00:00-0500", "limit": 100}
    body = client.get(url, params=params, headers=KEY).json()
    assert body["results"] == cassette["results"] and body["meta"]["found"] == cassette["meta"]["found"] == 48

    recorded = measurements(fixtures_dir, 11602122)
    start, end = "2025-10-01T00:00:00Z", "2025-10-02T00:00:00-0600"
    lo, hi = _utc(start), datetime.fromisoformat(end).timestamp()
    expected = [m for m in recorded if lo < _utc(m["period"]["datetimeTo"]["utc"]) <= hi]
    url = f"{env.base_url('openaq')}/sensors/11602122/measurements"
    got = client.get(url, params={"datetime_from": start, "datetime_to": end, "limit": 1000}, headers=KEY).json()
    assert got["results"] == expected and 0 < len(expected) < len(recorded)
    backwards = client.get(url, params={"datetime_from": end, "datetime_to": start}, headers=KEY)
    assert backwards.status_code == 422


def test_openaq_latest_recorded_and_derived(env: ReplayServer, client: httpx.Client, fixtures_dir: Path) -> None:
    base = env.base_url("openaq")
    recorded = _load(fixtures_dir / "openaq" / "openaq-r_v3_list_location_latest_1.json")
    assert client.get(f"{base}/locations/1/latest", headers=KEY).json() == recorded
    empty = _load(fixtures_dir / "openaq" / "openaq-r_v3_list_location_latest_1_min.json")
    after = client.get(f"{base}/locations/1/latest", params={"datetime_min": "2025-07-20T00:00:00+0000"}, headers=KEY)
    assert after.json() == empty

    location = next(loc for loc in guadalajara(fixtures_dir) if loc["id"] == 3309328)
    expected = {}
    for sensor in location["sensors"]:
        path = fixtures_dir / "openaq" / f"memoortiz_v3_sensors_{sensor['id']}_measurements_limit1000_page1.json"
        if path.is_file():
            newest = max(_load(path)["results"], key=lambda m: _utc(m["period"]["datetimeTo"]["utc"]))
            expected[sensor["id"]] = (newest["period"]["datetimeTo"], newest["value"])
    body = client.get(f"{base}/locations/3309328/latest", headers=KEY).json()
    got = {r["sensorsId"]: (r["datetime"], r["value"]) for r in body["results"]}
    assert got == expected and len(expected) == 6
    assert all(r["locationsId"] == 3309328 and r["coordinates"] == location["coordinates"] for r in body["results"])
    newest = max(_utc(d["utc"]) for d, _ in expected.values())
    lo = _utc("2025-10-10T22:30:00Z")
    later = client.get(
        f"{base}/locations/3309328/latest", params={"datetime_min": "2025-10-10T22:30:00Z"}, headers=KEY
    ).json()
    assert {r["sensorsId"] for r in later["results"]} == {s for s, (d, _) in expected.items() if _utc(d["utc"]) > lo}
    at_newest = datetime.fromtimestamp(newest, UTC).isoformat()
    none = client.get(f"{base}/locations/3309328/latest", params={"datetime_min": at_newest}, headers=KEY).json()
    assert none["results"] == [] and none["meta"]["found"] == 0  # datetime_min is exclusive, as in production
    sensors = client.get(f"{base}/locations/3309328/sensors", headers=KEY).json()["results"]
    assert sorted(s["id"] for s in sensors) == sorted(s["id"] for s in location["sensors"])


def test_openaq_rate_limit_headers(env: ReplayServer, client: httpx.Client) -> None:
    url = f"{env.base_url('openaq')}/parameters"
    first = client.get(url, headers=KEY)
    second = client.get(url, headers=KEY)
    for r in (first, second):
        assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "60"
        used, remaining = int(r.headers["x-ratelimit-used"]), int(r.headers["x-ratelimit-remaining"])
        assert used + remaining == 60 and 0 < int(r.headers["x-ratelimit-reset"]) <= 60
    assert int(second.headers["x-ratelimit-used"]) == int(first.headers["x-ratelimit-used"]) + 1

    env.set_fault("openaq", "rate_limit", count=1, body={"detail": "Too Many Requests"})
    limited = client.get(url, headers=KEY)
    assert limited.status_code == 429
    assert not [h for h in limited.headers if h.lower().startswith("x-ratelimit")]
    assert client.get(url, headers=KEY).status_code == 200
