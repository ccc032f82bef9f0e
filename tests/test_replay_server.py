"""The replay server (mindex.replay) against the real recorded fixtures in ../shared/fixtures, loopback only.

Expected values are computed here from the fixture files, independently of the server's loader, so a loader
or filter bug makes these tests fail.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from mindex.replay import FAULT_KINDS, ReplayServer
from mindex.replay.cli import main as replay_main
from mindex.replay.cli import parse_fault

FUNGI_INAT = 47170
FUNGI_GBIF = 5
INAT_VOLUME = 10_250
GBIF_VOLUME = 100_300


@cache
def fixtures_dir() -> Path:
    """The repo's sibling ``../shared/fixtures`` (read-only recorded API responses)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _load(path: Path) -> Any:
    data = json.loads(path.read_text(encoding="utf-8"))
    return json.loads(data) if isinstance(data, str) else data


# --- expected values, straight from the files -----
@cache
def inat_observations() -> dict[int, dict[str, Any]]:
    """Distinct v1 observations, latest updated_at per id."""
    best: dict[int, dict[str, Any]] = {}
    for path in sorted((fixtures_dir() / "inaturalist").glob("*.json")):
        if path.name.startswith("pyinat_v2_"):
            continue
        data = _load(path)
        for rec in data.get("results", []) if isinstance(data, dict) else []:
            if isinstance(rec, dict) and ("quality_grade" in rec or "observed_on" in rec):
                old = best.get(rec["id"])
                if old is None or _instant(rec["updated_at"]) > _instant(old["updated_at"]):
                    best[rec["id"]] = rec
    return best


@cache
def inat_taxon_ids() -> set[int]:
    ids: set[int] = set()

    def walk(obj: Any, key: str = "") -> None:
        if isinstance(obj, dict):
            if key in (
                "taxon",
                "community_taxon",
                "previous_observation_taxon",
                "ancestors",
                "children",
            ) and (isinstance(obj.get("id"), int) and "name" in obj):
                ids.add(obj["id"])
            for k, v in obj.items():
                walk(v, k)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, key)  # list items inherit the list's key (ancestors[], children[])

    for path in sorted((fixtures_dir() / "inaturalist").glob("*.json")):
        if path.name.startswith("pyinat_v2_"):
            continue
        data = _load(path)
        if path.name.startswith("pyinat_v1_taxa"):
            ids.update(t["id"] for t in data["results"])
        walk(data)
    return ids


@cache
def gbif_occurrences() -> dict[int, dict[str, Any]]:
    folder = fixtures_dir() / "gbif"
    records = [json.loads((folder / "occurrence_142316497.json").read_text())]
    for path in [*folder.glob("occurrence_search_*.json"), *folder.glob("spocc_*.json")]:
        records += json.loads(path.read_text())["results"]
    return {r["key"]: r for r in records}


@cache
def gbif_species_keys() -> set[int]:
    folder = fixtures_dir() / "gbif"
    keys = {json.loads((folder / "species_1.json").read_text())["key"]}
    for name in ("species_limit10", "species_datasetKey_limit100", "species_search_q_mammalia_limit100"):
        keys.update(r["key"] for r in json.loads((folder / f"{name}.json").read_text())["results"])
    return keys


# --- servers -----
@pytest.fixture(scope="module")
def srv() -> Any:
    with ReplayServer(fixtures_dir()) as server:
        yield server


@pytest.fixture(scope="module")
def big() -> Any:
    with ReplayServer(fixtures_dir(), volumes={"inaturalist": INAT_VOLUME, "gbif": GBIF_VOLUME}) as server:
        yield server


@pytest.fixture()
def client() -> Any:
    with httpx.Client(timeout=30) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Any:
    yield
    if "srv" in request.fixturenames:
        server = request.getfixturevalue("srv")
        for source in server.sources:
            server.clear_fault(source)


# --- shape and counts -----
def test_one_port_per_source_and_real_base_paths(srv: ReplayServer) -> None:
    assert srv.sources == ["gbif", "inaturalist", "nws", "open_meteo", "openaq", "opensky"]
    urls = {s: srv.base_url(s) for s in srv.sources}
    # The real APIs' base paths: api.weather.gov has no version; OpenAQ is /v3.
    suffix = {"gbif": "/v1", "inaturalist": "/v1", "nws": "", "open_meteo": "/v1", "openaq": "/v3", "opensky": "/api"}
    for source, url in urls.items():
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+" + suffix[source], url), url
    assert len({url.rsplit(":", 1)[1].split("/")[0] for url in urls.values()}) == len(urls)


def test_inat_observation_counts_and_fungi(srv: ReplayServer, client: httpx.Client) -> None:
    expected = inat_observations()
    fungi = {i for i, r in expected.items() if FUNGI_INAT in (r.get("taxon") or {}).get("ancestor_ids", [])}
    assert len(fungi) == 22  # SOURCES.md: 22 distinct fungal observations
    assert srv.record_count("inaturalist", "observations") == len(expected) == 59

    base = srv.base_url("inaturalist")
    r = client.get(f"{base}/observations", params={"taxon_id": FUNGI_INAT, "per_page": 200})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert list(body) == ["total_results", "page", "per_page", "results"]
    assert body["total_results"] == 22
    assert {o["id"] for o in body["results"]} == fungi
    assert [o["id"] for o in body["results"]] == sorted(fungi, reverse=True)  # default: id desc

    # Every served record is the latest recorded version of its id.
    everything = client.get(f"{base}/observations", params={"per_page": 200}).json()["results"]
    assert {o["id"]: o["updated_at"] for o in everything} == {i: r["updated_at"] for i, r in expected.items()}
    # Duplicate id 16227955 is recorded twice; the later updated_at wins, compared as instants.
    r = client.get(f"{base}/observations/16227955")
    assert (
        r.json()["results"][0]["updated_at"]
        == expected[16227955]["updated_at"]
        == "2023-12-05T11:33:06+01:00"
    )


def test_inat_filters(srv: ReplayServer, client: httpx.Client) -> None:
    base, expected = srv.base_url("inaturalist"), inat_observations()
    since = "2024-06-01T00:00:00+00:00"
    want = {i for i, r in expected.items() if _instant(r["updated_at"]) >= _instant(since)}
    r = client.get(f"{base}/observations", params={"updated_since": since, "per_page": 200})
    assert {o["id"] for o in r.json()["results"]} == want and 0 < len(want) < len(expected)

    research = {i for i, r in expected.items() if r["quality_grade"] == "research"}
    r = client.get(f"{base}/observations", params={"quality_grade": "research", "per_page": 200})
    assert {o["id"] for o in r.json()["results"]} == research

    r = client.get(
        f"{base}/observations", params={"id": "24970904,12826267", "order_by": "id", "order": "asc"}
    )
    assert [o["id"] for o in r.json()["results"]] == [12826267, 24970904]

    ids = ",".join(str(i) for i in range(1, 32))
    assert client.get(f"{base}/observations/{ids}").status_code == 422  # at most 30 ids


def test_inat_taxa_counts_and_descendants(srv: ReplayServer, client: httpx.Client) -> None:
    expected = inat_taxon_ids()
    assert srv.record_count("inaturalist", "taxa") == len(expected)
    base = srv.base_url("inaturalist")
    seen: list[int] = []
    above = 0
    while True:
        params = {"order_by": "id", "order": "asc", "id_above": above, "per_page": 200}
        page = client.get(f"{base}/taxa", params=params).json()["results"]
        if not page:
            break
        seen += [t["id"] for t in page]
        above = seen[-1]
    assert set(seen) == expected and len(seen) == len(expected)

    fungi = client.get(f"{base}/taxa", params={"taxon_id": FUNGI_INAT, "per_page": 200}).json()
    assert fungi["total_results"] > 0
    for taxon in fungi["results"]:
        assert taxon["id"] == FUNGI_INAT or FUNGI_INAT in taxon["ancestor_ids"]
    r = client.get(f"{base}/taxa/{FUNGI_INAT}").json()
    assert r["results"][0]["name"] == "Fungi"


def test_gbif_counts(srv: ReplayServer, client: httpx.Client) -> None:
    occurrences = gbif_occurrences()
    fungi = {k for k, r in occurrences.items() if r.get("kingdomKey") == FUNGI_GBIF}
    assert srv.record_count("gbif", "occurrences") == len(occurrences) == 624
    assert srv.record_count("gbif", "species") == len(gbif_species_keys())
    base = srv.base_url("gbif")
    r = client.get(f"{base}/occurrence/search", params={"taxonKey": FUNGI_GBIF, "limit": 300})
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["offset", "limit", "endOfRecords", "count", "results", "facets"]
    assert body["count"] == len(fungi) and body["endOfRecords"] is False
    r = client.get(f"{base}/occurrence/search", params={"taxonKey": FUNGI_GBIF, "limit": 300, "offset": 300})
    assert {o["key"] for o in body["results"] + r.json()["results"]} == fungi
    assert r.json()["endOfRecords"] is True
    count = client.get(f"{base}/occurrence/count", params={"taxonKey": FUNGI_GBIF})
    assert count.text == str(len(fungi))
    assert client.get(f"{base}/occurrence/142316497").json()["key"] == 142316497
    assert client.get(f"{base}/species/1").json()["scientificName"] == "Animalia"
    missing = client.get(f"{base}/no/such/path")
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_gbif_last_interpreted_filter(srv: ReplayServer, client: httpx.Client) -> None:
    base, occurrences = srv.base_url("gbif"), gbif_occurrences()

    def utc_day(rec: dict[str, Any]) -> date:
        return _instant(rec["lastInterpreted"]).astimezone(UTC).date()

    sample = next(iter(occurrences.values()))["lastInterpreted"]
    cases = {
        "2024-10-01,2024-10-03": lambda r: date(2024, 10, 1) <= utc_day(r) <= date(2024, 10, 3),
        "2022-11": lambda r: (utc_day(r).year, utc_day(r).month) == (2022, 11),
        "*,2023": lambda r: utc_day(r).year <= 2023,
        "2024-09,*": lambda r: utc_day(r) >= date(2024, 9, 1),
        # A full timestamp is an instant: the records interpreted at that millisecond.
        sample: lambda r: _instant(r["lastInterpreted"]) == _instant(sample),
    }
    for value, keep in cases.items():
        want = {k for k, r in occurrences.items() if keep(r)}
        got: set[int] = set()
        offset = 0
        while True:
            params = {"lastInterpreted": value, "limit": 300, "offset": offset}
            body = client.get(f"{base}/occurrence/search", params=params).json()
            got |= {o["key"] for o in body["results"]}
            offset += len(body["results"])
            if body["endOfRecords"]:
                break
        assert body["count"] == len(want) and got == want, value
        assert 0 < len(want) < len(occurrences), value


# --- the caps -----
def test_page_size_caps(big: ReplayServer, client: httpx.Client) -> None:
    r = client.get(f"{big.base_url('inaturalist')}/observations", params={"per_page": 500})
    body = r.json()
    assert (body["per_page"], len(body["results"]), body["total_results"]) == (200, 200, INAT_VOLUME)
    r = client.get(f"{big.base_url('gbif')}/occurrence/search", params={"limit": 1000})
    body = r.json()
    assert (body["limit"], len(body["results"]), body["count"]) == (300, 300, GBIF_VOLUME)
    assert body["endOfRecords"] is False


def test_inat_10k_result_window(big: ReplayServer, client: httpx.Client) -> None:
    base = big.base_url("inaturalist")
    ok = client.get(f"{base}/observations", params={"per_page": 200, "page": 50})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 200
    r = client.get(f"{base}/observations", params={"per_page": 200, "page": 51})
    assert r.status_code == 500
    body = r.json()
    assert body["status"] == "500"
    assert body["errors"][0]["message"].startswith(
        "Result window is too large, from + size must be less than or equal to: [10000] but was [10200]."
    )


def test_gbif_deep_paging_cap(big: ReplayServer, client: httpx.Client) -> None:
    base = big.base_url("gbif")
    r = client.get(f"{base}/occurrence/search", params={"offset": 99_800, "limit": 300})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "Max offset of 100001 exceeded: 99800 + 300"
    assert client.get(f"{base}/occurrence/search", params={"offset": 99_700, "limit": 300}).status_code == 200


# --- volume: derived records -----
def test_inat_keyset_paging_yields_every_record_once(big: ReplayServer, client: httpx.Client) -> None:
    base, real = big.base_url("inaturalist"), inat_observations()
    max_real, now, real_ids = max(real), datetime.now(UTC), sorted(real)
    ids: list[int] = []
    above = 0
    while True:
        params = {"order_by": "id", "order": "asc", "id_above": above, "per_page": 200}
        r = client.get(f"{base}/observations", params=params)
        assert r.status_code == 200
        page = r.json()["results"]
        if not page:
            break
        for obs in page:
            derived = obs.get("_replay_derived", False)
            assert derived == (obs["id"] > max_real)
            assert _instant(obs["updated_at"]) <= now and _instant(obs["created_at"]) <= now
            if derived:  # copy of real record k % R, moved back 1 + k // R whole days
                k = obs["id"] - max_real - 1
                twin = real[real_ids[k % len(real_ids)]]
                shift = (_instant(twin["updated_at"]) - _instant(obs["updated_at"])).total_seconds()
                assert shift == 86_400 * (1 + k // len(real_ids))
                assert obs["taxon"] == twin["taxon"]
                assert "uuid" not in twin or obs["uuid"] != twin["uuid"]
        ids += [o["id"] for o in page]
        above = ids[-1]
    assert len(ids) == len(set(ids)) == INAT_VOLUME
    assert ids == sorted(ids) and set(real) <= set(ids)
    assert min(i for i in ids if i not in real) == max_real + 1


def test_derived_records_are_older_copies(big: ReplayServer, client: httpx.Client) -> None:
    real_obs, real_occ = inat_observations(), gbif_occurrences()
    real_keys = sorted(real_occ)
    now = datetime.now(UTC)
    base = big.base_url("inaturalist")
    last = client.get(f"{base}/observations", params={"order_by": "id", "order": "desc", "per_page": 200})
    for obs in last.json()["results"]:
        assert obs["_replay_derived"] is True and obs["id"] > max(real_obs)
        for field in ("updated_at", "created_at", "time_observed_at"):
            if obs.get(field):
                assert _instant(obs[field]) <= now
        assert obs["observed_on"] is None or date.fromisoformat(obs["observed_on"]) <= now.date()
        twin = [r for r in real_obs.values() if r.get("uuid") == obs["uuid"]] if "uuid" in obs else []
        assert not twin  # a derived copy never reuses a real uuid

    gbase = big.base_url("gbif")
    body = client.get(f"{gbase}/occurrence/search", params={"offset": 99_700, "limit": 300}).json()
    for occ in body["results"]:
        assert occ["_replay_derived"] is True and occ["key"] > max(real_occ)
        assert occ["gbifID"] == str(occ["key"])
        assert occ.get("catalogNumber") is None and occ.get("occurrenceID") is None
        k = occ["key"] - max(real_occ) - 1  # a copy of real record k % R, moved back 1 + k // R days
        twin = real_occ[real_keys[k % len(real_keys)]]
        assert occ["scientificName"] == twin["scientificName"] and occ["year"] == twin["year"]
        for field in ("lastInterpreted", "lastParsed", "lastCrawled", "modified"):
            if twin.get(field):
                moved = _instant(twin[field]) - _instant(occ[field])
                assert moved.total_seconds() == 86_400 * (1 + k // len(real_keys)), field
                assert _instant(occ[field]) <= now
    first_real = client.get(f"{gbase}/occurrence/{min(real_occ)}").json()
    assert "_replay_derived" not in first_real


def test_gbif_windowed_paging_yields_every_record_once(big: ReplayServer, client: httpx.Client) -> None:
    """C02: each lastInterpreted window stays under the offset cap; offset advances by what arrived."""
    base = big.base_url("gbif")
    keys: list[int] = []
    for window in ("*,2024-06", "2024-07,*"):
        count = client.get(f"{base}/occurrence/search", params={"lastInterpreted": window, "limit": 0})
        assert count.json()["count"] <= 100_000
        offset = 0
        while True:
            params = {"lastInterpreted": window, "limit": 300, "offset": offset}
            body = client.get(f"{base}/occurrence/search", params=params).json()
            keys += [o["key"] for o in body["results"]]
            offset += len(body["results"])
            if body["endOfRecords"]:
                break
    assert len(keys) == len(set(keys)) == GBIF_VOLUME


# --- faults -----
def test_fault_kinds_are_the_documented_set() -> None:
    assert set(FAULT_KINDS) == {
        "down",
        "slow",
        "rate_limit",
        "http_5xx",
        "problem_json",
        "truncated",
        "non_json",
        "html_error",
    }


def test_unknown_fault_kind_or_param_is_rejected(srv: ReplayServer) -> None:
    with pytest.raises(ValueError):
        srv.set_fault("gbif", "earthquake")
    with pytest.raises(ValueError):
        srv.set_fault("gbif", "http_5xx", cuont=3)


def test_down_refuses_connections_then_same_port_comes_back(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('gbif')}/occurrence/search"
    assert client.get(url).status_code == 200  # leaves a keep-alive connection in the pool
    srv.set_fault("gbif", "down")
    with pytest.raises(httpx.ConnectError):
        client.get(url)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    # Only that source is down.
    assert client.get(f"{srv.base_url('inaturalist')}/observations").status_code == 200
    srv.clear_fault("gbif")
    assert srv.base_url("gbif") + "/occurrence/search" == url
    assert client.get(url).status_code == 200


def test_rate_limit_429_with_retry_after(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('inaturalist')}/observations"
    srv.set_fault("inaturalist", "rate_limit", retry_after=7, count=1)
    r = client.get(url)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json() == {
        "error": True,
        "reason": "Hourly API request limit exceeded. Please try again in the next hour.",
    }
    assert client.get(url).status_code == 200  # count=1 cleared it

    # OpenSky's flavour (C11): its own header and a body that is not JSON.
    srv.set_fault(
        "inaturalist",
        "rate_limit",
        retry_after=38715,
        header="X-Rate-Limit-Retry-After-Seconds",
        body="Too many requests",
    )
    r = client.get(url)
    assert r.status_code == 429 and r.headers["x-rate-limit-retry-after-seconds"] == "38715"
    assert "retry-after" not in r.headers and r.text == "Too many requests"
    assert client.get(url).status_code == 429  # no count: until cleared
    srv.clear_fault("inaturalist")
    assert client.get(url).status_code == 200


def test_http_5xx_burst_then_ok(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('gbif')}/occurrence/search"
    srv.set_fault("gbif", "http_5xx")  # default: a burst of 3 x 503
    statuses = [client.get(url).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]
    log = srv.request_log("gbif")[-4:]
    assert [e["status"] for e in log] == statuses and log[0]["path"] == "/v1/occurrence/search"


def test_truncated_body_is_invalid_json(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('gbif')}/occurrence/search"
    full = client.get(url, params={"limit": 5}).content
    srv.set_fault("gbif", "truncated", count=1)
    r = client.get(url, params={"limit": 5})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) == len(r.content) == len(full) // 2
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_non_json_html_and_problem_json(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('inaturalist')}/observations"
    srv.set_fault("inaturalist", "non_json", count=1)
    r = client.get(url)
    assert r.status_code == 200 and r.text == "not json at all"
    with pytest.raises(json.JSONDecodeError):
        r.json()

    srv.set_fault("inaturalist", "html_error", count=1)
    r = client.get(url)
    assert r.status_code == 403 and r.headers["content-type"] == "text/html"
    assert "<TITLE>Access Denied</TITLE>" in r.text and re.search(r"Reference #18\.\w+", r.text)

    srv.set_fault(
        "inaturalist", "problem_json", count=1, type="https://api.weather.gov/problems/ForecastGridExpired"
    )
    r = client.get(url)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/ForecastGridExpired") and problem["title"] == "Forecast Grid Expired"
    assert problem["status"] == 503 and problem["correlationId"] and problem["detail"]
    assert client.get(url).status_code == 200


def test_slow_delays_the_answer(srv: ReplayServer, client: httpx.Client) -> None:
    url = f"{srv.base_url('gbif')}/species/1"
    srv.set_fault("gbif", "slow", delay_s=0.3, count=1)
    started = time.monotonic()
    assert client.get(url).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_control_endpoint_switches_faults(srv: ReplayServer, client: httpx.Client) -> None:
    gbif = srv.base_url("gbif").removesuffix("/v1")
    inat = srv.base_url("inaturalist").removesuffix("/v1")
    status = client.get(f"{gbif}/_replay/status").json()
    assert status["source"] == "gbif" and status["fault"] is None
    assert status["record_counts"] == {"occurrences": 624, "species": srv.record_count("gbif", "species")}

    r = client.post(f"{gbif}/_replay/fault", json={"kind": "http_5xx", "status": 502, "count": 2})
    assert r.status_code == 200 and r.json()["fault"]["kind"] == "http_5xx"
    assert client.get(f"{gbif}/_replay/status").status_code == 200  # control paths are never faulted
    assert client.get(f"{gbif}/v1/species/1").status_code == 502
    client.delete(f"{gbif}/_replay/fault")
    assert client.get(f"{gbif}/v1/species/1").status_code == 200
    assert client.post(f"{gbif}/_replay/fault", json={"kind": "nope"}).status_code == 400

    # "down" over HTTP, brought back through the other source's port.
    assert client.post(f"{gbif}/_replay/fault", json={"kind": "down"}).status_code == 200
    with pytest.raises(httpx.ConnectError):
        client.get(f"{gbif}/v1/species/1")
    assert client.delete(f"{inat}/_replay/fault", params={"source": "gbif"}).status_code == 200
    assert client.get(f"{gbif}/v1/species/1").status_code == 200


# --- CLI -----
def test_parse_fault_option() -> None:
    assert parse_fault("gbif=http_5xx:count=3,status=500") == (
        "gbif",
        "http_5xx",
        {"count": 3, "status": 500},
    )
    assert parse_fault("inaturalist=rate_limit:retry_after=none") == (
        "inaturalist",
        "rate_limit",
        {"retry_after": None},
    )


def test_cli_prints_base_urls_and_applies_options(client: httpx.Client) -> None:
    stop, out = threading.Event(), io.StringIO()
    argv = [
        "--fixtures",
        str(fixtures_dir()),
        "--volume",
        "inaturalist=100",
        "--fault",
        "gbif=http_5xx:count=1",
    ]
    result: list[int] = []

    def run() -> None:
        with redirect_stdout(out):
            result.append(replay_main(argv, stop_event=stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while out.getvalue().count("\n") < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = dict(line.split("=", 1) for line in out.getvalue().splitlines() if "_BASE_URL=" in line)
        assert set(lines) == {"GBIF_BASE_URL", "INATURALIST_BASE_URL", "NWS_BASE_URL", "OPEN_METEO_BASE_URL",
                              "OPENAQ_BASE_URL", "OPENSKY_BASE_URL"}
        body = client.get(f"{lines['INATURALIST_BASE_URL']}/observations", params={"per_page": 1}).json()
        assert body["total_results"] == 100
        assert client.get(f"{lines['GBIF_BASE_URL']}/species/1").status_code == 503
        assert client.get(f"{lines['GBIF_BASE_URL']}/species/1").status_code == 200
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
