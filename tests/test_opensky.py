"""OpenSky: normalizer, client, replay ``/api/states/all`` and the polling collector (case C11).

Loopback only, fake clock and sleep (no wall-clock waits, no timing assertions). Expected values are computed here
from the recorded files, independently of the replay source and the normalizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from mindex.collectors.opensky import CollectorConfig, effective_interval, run_collector
from mindex.replay import ReplayServer
from mindex.replay.sources.opensky import VENDOR_429_FAULT, token_url
from mycosoft_assets.opensky.normalize import NATURAL_KEY, STATE_SCHEMA, deduplicate, normalize_snapshot
from resources.errors import RateLimited
from resources.opensky import OpenSkyClient, credits_per_call, poll_interval_s
from resources.spool import SpoolReader, SpoolWriter

GLOBAL = "opensky/states_all_global_2025-12-28T02-14-19Z.json"
DENVER = "opensky/states_all_bbox_denver_2021-03-07T18-30-30Z.json"
DENVER_BBOX = (39.66, -105.72, 40.36, -104.81)
SECRET = "s3cr3t-DO-NOT-LEAK-42"
RECEIVED = "2026-01-01T00:00:05+00:00"


def _load(fixtures_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((fixtures_dir / name).read_text(encoding="utf-8"))


def _state(**overrides: Any) -> list[Any]:
    """A synthetic 17-field vector in the documented order."""
    base = {"icao24": "ABC123", "callsign": "TEST1   ", "origin_country": "Nowhere", "time_position": 1700000000,
            "last_contact": 1700000001, "longitude": 0.0, "latitude": 0.0, "baro_altitude": 0.0, "on_ground": True,
            "velocity": 0.0, "true_track": 0.0, "vertical_rate": 0.0, "sensors": None, "geo_altitude": 0.0,
            "squawk": "1200", "spi": False, "position_source": 0}
    base.update(overrides)
    return list(base.values())


class FakeClock:
    def __init__(self, start: float = 1_766_888_100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture()
def captured_logs() -> Iterator[Capture]:
    """Every log line of every logger at DEBUG (works with ``-p no:logging``, unlike caplog)."""
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(scope="module")
def sky(fixtures_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(fixtures_dir, sources=["opensky"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sky" in request.fixturenames:
        server = request.getfixturevalue("sky")
        server.clear_fault("opensky")
        server.source_object("opensky").reset()


def _client(sky: ReplayServer, clock: FakeClock, **kw: Any) -> OpenSkyClient:
    client = OpenSkyClient(base_url=sky.base_url("opensky"), **kw)
    client.with_sleep(clock.sleep)
    client.with_clock(clock)
    return client


def _states_requests(sky: ReplayServer) -> list[dict[str, Any]]:
    return [e for e in sky.request_log("opensky") if e["path"] == "/api/states/all"]


# --- normalizer ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [(GLOBAL, 6553), (DENVER, 38)])
def test_normalize_recorded_snapshots(fixtures_dir: Path, name: str, expected: int) -> None:
    body = _load(fixtures_dir, name)
    raw = body["states"]
    assert len(raw) == expected
    rows, rejects = normalize_snapshot(body, RECEIVED)
    assert rejects == []
    assert len(rows) == len(raw)
    table = pa.Table.from_pylist(rows, schema=STATE_SCHEMA)  # every row fits the schema
    assert table.num_rows == len(raw)
    snapshot = datetime.fromtimestamp(body["time"], UTC)
    for row, state in zip(rows, raw, strict=True):
        assert row["icao24"] == state[0].lower()
        assert row["callsign"] == ((state[1] or "").strip() or None)
        assert row["last_contact"] == datetime.fromtimestamp(state[4], UTC)
        assert row["latitude"] == state[6] and row["longitude"] == state[5]
        assert row["baro_altitude"] == state[7] and row["geo_altitude"] == state[13]
        assert row["on_ground"] is state[8] and row["squawk"] == state[14]
        assert row["category"] is None and row["snapshot_time"] == snapshot
        assert row["received_at"] == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    null_positions = sum(1 for s in raw if s[5] is None or s[6] is None)
    flagged = sum(1 for r in rows if "no_position" in (r["qc_flags"] or ""))
    assert flagged == null_positions
    if name == GLOBAL:
        assert null_positions == 67
        blank = sum(1 for s in raw if s[1] is None or s[1].strip() == "")
        assert blank > 0 and sum(1 for r in rows if r["callsign"] is None) == blank
    keys = {tuple(r[k] for k in NATURAL_KEY) for r in rows}
    assert len(keys) == len(rows) == len(deduplicate(rows + rows))


def test_normalize_values_kept_exactly() -> None:
    rows, rejects = normalize_snapshot({"time": 1700000005, "states": [_state()]}, RECEIVED)
    assert rejects == []
    row = rows[0]
    for name in ("longitude", "latitude", "baro_altitude", "velocity", "true_track", "vertical_rate", "geo_altitude"):
        assert row[name] == 0.0 and row[name] is not None, name
    assert row["icao24"] == "abc123" and row["callsign"] == "TEST1" and row["qc_flags"] is None
    nulls = _state(callsign=None, time_position=None, longitude=None, latitude=None, baro_altitude=None,
                   velocity=None, squawk=None, on_ground=None)
    row = normalize_snapshot({"time": 1700000005, "states": [nulls]}, RECEIVED)[0][0]
    assert all(row[k] is None for k in ("callsign", "time_position", "longitude", "latitude", "baro_altitude",
                                        "velocity", "squawk", "on_ground"))
    assert row["qc_flags"] == "no_position"


def test_normalize_category_rejects_and_flags() -> None:
    extended = [*_state(), 3]
    bad = _state(latitude=95.0, longitude=10.0, velocity=-4.0, true_track=400.0, icao24="ZZZZ", squawk="9999")
    body = {"time": 1700000005, "states": [extended, _state()[:16], [*_state(), 1, 2], _state(icao24=None),
                                           _state(icao24="  "), "not a list", bad]}
    rows, rejects = normalize_snapshot(body, RECEIVED)
    assert [r["category"] for r in rows] == [3, None]
    assert len(rejects) == 5
    assert rejects[0]["record"] == _state()[:16] and "16 fields" in rejects[0]["reason"]
    assert "19 fields" in rejects[1]["reason"]
    assert all("icao24" in r["reason"] for r in rejects[2:4])
    flags = set(rows[1]["qc_flags"].split(","))
    assert flags == {"coordinates_out_of_range", "negative_velocity", "true_track_out_of_range", "invalid_icao24",
                     "invalid_squawk"}
    assert rows[1]["latitude"] is None and rows[1]["velocity"] == -4.0
    assert normalize_snapshot({"time": 1700000005, "states": None}, RECEIVED) == ([], [])


# --- intervals ----------------------------------------------------------------------------------------------------
def test_credits_and_poll_intervals() -> None:
    assert credits_per_call(None) == 4
    assert credits_per_call((0, 0, 5, 5)) == 1
    assert credits_per_call((0, 0, 10, 10)) == 2
    assert credits_per_call((0, 0, 20, 20)) == 3
    assert credits_per_call((0, 0, 20.5, 20)) == 4
    assert poll_interval_s(None, authenticated=False) == 864
    assert poll_interval_s(DENVER_BBOX, authenticated=False) == 216
    assert poll_interval_s(None, authenticated=True) == pytest.approx(86.4)
    assert poll_interval_s(DENVER_BBOX, authenticated=True) == pytest.approx(21.6)
    assert poll_interval_s(DENVER_BBOX, authenticated=True, min_interval_s=1) >= 10
    client = OpenSkyClient(base_url="https://opensky-network.org/api")
    assert effective_interval(CollectorConfig(interval_s=5), client) == 864  # raised to the minimum
    assert effective_interval(CollectorConfig(interval_s=2000), client) == 2000
    with pytest.raises(ValueError, match="loopback"):
        effective_interval(CollectorConfig(interval_s=1, allow_fast_replay=True), client)


# --- replay /api/states/all -----------------------------------------------------------------------------------------
def test_replay_served_by_default(fixtures_dir: Path) -> None:
    assert "opensky" in ReplayServer(fixtures_dir).sources


def test_replay_bbox_icao24_extended(sky: ReplayServer, fixtures_dir: Path) -> None:
    glob = _load(fixtures_dir, GLOBAL)
    box = (30.0, -110.0, 40.0, -100.0)  # 100 sq deg
    inside = [s for s in glob["states"] if s[5] is not None and s[6] is not None
              and box[0] <= s[6] <= box[2] and box[1] <= s[5] <= box[3]]
    assert inside
    base = sky.base_url("opensky")
    query = dict(zip(("lamin", "lomin", "lamax", "lomax"), box, strict=True))
    r = httpx.get(f"{base}/states/all", params=query)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {"time": glob["time"], "states": inside}
    assert r.headers["x-rate-limit-remaining"] == str(400 - 2)

    r = httpx.get(f"{base}/states/all", params={**query, "extended": 1})
    assert [s[:17] for s in r.json()["states"]] == inside
    assert {len(s) for s in r.json()["states"]} == {18} and {s[17] for s in r.json()["states"]} == {None}

    wanted = [glob["states"][0][0], glob["states"][5][0].upper()]
    r = httpx.get(f"{base}/states/all", params={"icao24": wanted})
    assert [s[0] for s in r.json()["states"]] == [glob["states"][0][0], glob["states"][5][0]]
    r = httpx.get(f"{base}/states/all", params={"icao24": "000000"})
    assert r.json() == {"time": glob["time"], "states": None}

    r = httpx.get(f"{base}/states/all", params={"lamin": 30, "lomin": -110, "lamax": 40})
    assert r.status_code == 400


def test_replay_time_semantics(sky: ReplayServer, fixtures_dir: Path) -> None:
    glob, denver = _load(fixtures_dir, GLOBAL), _load(fixtures_dir, DENVER)
    url = f"{sky.base_url('opensky')}/states/all"
    assert httpx.get(url).json() == glob  # no time: the newest recording, times exactly as recorded
    assert httpx.get(url, params={"time": glob["time"]}).json() == glob
    assert httpx.get(url, params={"time": glob["time"] - 1}).json() == denver
    assert httpx.get(url, params={"time": denver["time"]}).json() == denver
    assert httpx.get(url, params={"time": denver["time"] - 1}).json() == {"time": denver["time"] - 1, "states": None}
    assert httpx.get(url, params={"time": "soon"}).status_code == 400
    sky.source_object("opensky").set_mode("rotate")
    assert [httpx.get(url).json()["time"] for _ in range(3)] == [denver["time"], glob["time"], denver["time"]]


def test_replay_rate_limit_like_production(sky: ReplayServer) -> None:
    source = sky.source_object("opensky")
    source.set_remaining(5)
    source.enforce_credits(True, retry_after_s=38715)
    url = f"{sky.base_url('opensky')}/states/all"
    assert httpx.get(url).headers["x-rate-limit-remaining"] == "1"
    r = httpx.get(url)
    assert r.status_code == 429 and r.text == "Too many requests"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-rate-limit-retry-after-seconds"] == "38715"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    assert httpx.get(url, params=dict(zip(("lamin", "lomin", "lamax", "lomax"), DENVER_BBOX, strict=True))
                     ).status_code == 200  # 1 credit still fits


# --- client -------------------------------------------------------------------------------------------------------
def test_client_429_typed_and_not_retried(sky: ReplayServer) -> None:
    clock = FakeClock()
    client = _client(sky, clock)
    sky.set_fault("opensky", "rate_limit", retry_after=38715, count=1, **VENDOR_429_FAULT)
    before = len(_states_requests(sky))
    with pytest.raises(RateLimited) as info:
        client.get_states()
    assert info.value.retry_after == 38715 and info.value.status == 429
    assert len(_states_requests(sky)) == before + 1 and clock.sleeps == []
    body, meta = client.get_states(DENVER_BBOX)
    assert meta.credits == 1 and meta.rate_limit_remaining is not None and meta.states_count == len(body["states"])


# --- collector ----------------------------------------------------------------------------------------------------
def _spool(tmp_path: Path, clock: FakeClock) -> SpoolWriter:
    return SpoolWriter(tmp_path, "opensky", clock=clock.utc)


def _spooled(tmp_path: Path) -> list[dict[str, Any]]:
    reader = SpoolReader(tmp_path, "opensky")
    return [line for hour in reader.hours() for line in reader.read_hour(hour)]


def _batches(tmp_path: Path) -> int:
    reader = SpoolReader(tmp_path, "opensky")
    return sum(len(reader.batch_files(hour)) for hour in reader.hours())


def test_collector_n_polls_n_batches(sky: ReplayServer, tmp_path: Path, fixtures_dir: Path) -> None:
    clock = FakeClock()
    client = _client(sky, clock)
    before = len(_states_requests(sky))
    stats = run_collector(CollectorConfig(), client, _spool(tmp_path, clock), clock=clock, sleep=clock.sleep,
                          stop_after_polls=3)
    assert stats.polls == stats.batches == 3 and stats.stopped_by == "polls"
    assert clock.sleeps == [864, 864]  # anonymous global
    assert len(_states_requests(sky)) == before + 3
    assert _batches(tmp_path) == 3
    lines = _spooled(tmp_path)
    assert [line["kind"] for line in lines] == ["states"] * 3
    glob = _load(fixtures_dir, GLOBAL)
    assert all(line["record"] == {"params": {}, "body": glob} for line in lines)
    beat = SpoolReader(tmp_path, "opensky").heartbeat()
    assert beat["state"] == "stopped" and beat["credits_used_today"] == 12 and beat["batches"] == 3
    assert beat["rate_limit_remaining"] == 400 - 12 and beat["last_error"] is None


def test_collector_429_sleeps_header_seconds(sky: ReplayServer, tmp_path: Path) -> None:
    clock = FakeClock()
    start = clock.now
    client = _client(sky, clock)
    sky.set_fault("opensky", "rate_limit", retry_after=38715, count=1, **VENDOR_429_FAULT)
    before = len(_states_requests(sky))
    stats = run_collector(CollectorConfig(bbox=DENVER_BBOX), client, _spool(tmp_path, clock), clock=clock,
                          sleep=clock.sleep, stop_after_polls=3)
    log = _states_requests(sky)[before:]
    assert [e["status"] for e in log] == [429, 200, 200]  # nothing between the 429 and the wait's end
    assert clock.sleeps == [38715, 216]
    assert stats.rate_limited == 1 and stats.batches == 2 and stats.gaps == 1
    lines = _spooled(tmp_path)
    gaps = [line["record"] for line in lines if line["kind"] == "gap"]
    assert gaps == [{"disconnected_at": datetime.fromtimestamp(start, UTC).isoformat(),
                     "reconnected_at": datetime.fromtimestamp(start + 38715, UTC).isoformat(),
                     "reason": "rate_limited", "retry_after_s": 38715.0}]
    assert sum(1 for line in lines if line["kind"] == "states") == 2


def test_collector_5xx_backoff_then_recovers(sky: ReplayServer, tmp_path: Path) -> None:
    clock = FakeClock()
    client = _client(sky, clock)
    sky.set_fault("opensky", "http_5xx", count=3)  # the client's 3 attempts of the first poll
    stats = run_collector(CollectorConfig(bbox=DENVER_BBOX), client, _spool(tmp_path, clock), clock=clock,
                          sleep=clock.sleep, stop_after_polls=2)
    assert stats.errors == 1 and stats.batches == 1 and stats.gaps == 1
    backoff = [s for s in clock.sleeps if s >= 216]
    assert len(backoff) == 1 and 216 <= backoff[0] <= 216 * 4
    gap = next(line["record"] for line in _spooled(tmp_path) if line["kind"] == "gap")
    assert gap["reason"] == "server_error" and gap["reconnected_at"] is not None


def test_collector_stops_on_duration_with_open_gap(sky: ReplayServer, tmp_path: Path) -> None:
    clock = FakeClock()
    client = _client(sky, clock)
    sky.set_fault("opensky", "rate_limit", retry_after=38715, count=1, **VENDOR_429_FAULT)
    stats = run_collector(CollectorConfig(), client, _spool(tmp_path, clock), clock=clock, sleep=clock.sleep,
                          stop_after_s=3600)
    assert stats.polls == 1 and stats.stopped_by == "duration" and clock.sleeps == [3600]
    gap = next(line["record"] for line in _spooled(tmp_path) if line["kind"] == "gap")
    assert gap["reason"] == "rate_limited" and gap["reconnected_at"] is None


def test_oauth_token_cached_refreshed_and_secret_never_leaks(sky: ReplayServer, tmp_path: Path,
                                                             captured_logs: Capture) -> None:
    clock = FakeClock()
    base = sky.base_url("opensky")
    client = _client(sky, clock, client_id="mindex-test", client_secret=SECRET, token_url=token_url(base))
    assert client.authenticated and SECRET not in repr(client) and SECRET not in str(client)
    source = sky.source_object("opensky")
    config = CollectorConfig(bbox=DENVER_BBOX, interval_s=300)  # 5 polls span 1200 s: one token (refresh at 1500)
    stats = run_collector(config, client, _spool(tmp_path, clock), clock=clock, sleep=clock.sleep,
                          stop_after_polls=5)
    assert stats.batches == 5 and client.token_fetches == 1 and source.token_requests == 1
    tokens = [client._token]
    assert source.remaining("authenticated") == 4000 - 5 and source.remaining("anonymous") == 400
    stats = run_collector(config, client, _spool(tmp_path, clock), clock=clock, sleep=clock.sleep,
                          stop_after_polls=2)  # now past 25 min: refreshed once before expiry
    assert stats.batches == 2 and client.token_fetches == 2
    tokens.append(client._token)
    source.expire_tokens()  # the server says 401: a fresh token, one retry
    body, meta = client.get_states(DENVER_BBOX)
    assert meta.authenticated and client.token_fetches == 3 and body["states"]
    tokens.append(client._token)
    assert len(set(tokens)) == 3 and all(tokens)

    wrong = _client(sky, clock, client_id="mindex-test", client_secret=SECRET, token_url=token_url(base))
    source.expected_secret = "something-else"
    try:
        stats = run_collector(config, wrong, _spool(tmp_path, clock), clock=clock, sleep=clock.sleep,
                              stop_after_polls=3)
    finally:
        source.expected_secret = None
    assert stats.fatal_error and stats.polls == 1 and stats.stopped_by == "fatal"

    assert captured_logs.lines  # the capture works (httpx and the collector log at INFO/DEBUG)
    for line in captured_logs.lines:
        assert SECRET not in line and not any(t in line for t in tokens)
    for path in (tmp_path / "spool").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert SECRET not in text and "replay-" not in text and "Bearer" not in text


@pytest.mark.parametrize("fault, params, reason", [
    ("html_error", {"count": 1}, "blocked_by_edge"),  # an edge's HTML 403: it may pass, back off
    ("problem_json", {"status": 503, "count": 3}, "error"),  # a 5xx as problem+json: an outage too
])
def test_collector_backs_off_on_passing_refusals(sky: ReplayServer, tmp_path: Path, fault: str, params: dict,
                                                 reason: str) -> None:
    clock = FakeClock()
    sky.set_fault("opensky", fault, **params)
    stats = run_collector(CollectorConfig(bbox=DENVER_BBOX), _client(sky, clock), _spool(tmp_path, clock),
                          clock=clock, sleep=clock.sleep, stop_after_polls=2)
    assert stats.stopped_by == "polls" and stats.errors == 1 and stats.batches == 1 and stats.gaps == 1
    gap = next(line["record"] for line in _spooled(tmp_path) if line["kind"] == "gap")
    assert gap["reconnected_at"] is not None and gap["last_error"] in (reason, "server_error")


def test_collector_stops_on_a_4xx_problem(sky: ReplayServer, tmp_path: Path) -> None:
    clock = FakeClock()
    sky.set_fault("opensky", "problem_json", status=400, count=1)
    stats = run_collector(CollectorConfig(bbox=DENVER_BBOX), _client(sky, clock), _spool(tmp_path, clock),
                          clock=clock, sleep=clock.sleep, stop_after_polls=3)
    assert stats.stopped_by == "fatal" and stats.polls == 1 and stats.batches == 0
    assert "HTTP 400" in stats.fatal_error
    beat = SpoolReader(tmp_path, "opensky").heartbeat()
    assert beat["state"] == "failed"


def test_a_poller_is_running_until_a_minute_past_its_announced_poll(tmp_path: Path) -> None:
    from mycosoft_assets.streams import collector_health
    from resources.storage import PartitionStore

    store = PartitionStore(data_dir=str(tmp_path))
    now = datetime.now(UTC)
    beat_at = now - timedelta(minutes=40)  # far older than the warn window (22 min): but it announced a long wait
    clock = FakeClock(beat_at.timestamp())
    spool = _spool(tmp_path, clock)
    spool.heartbeat(state="rate_limited", next_poll_at=(beat_at + timedelta(hours=1)).isoformat())
    assert collector_health(store, "opensky", now)["collector_status"] == "running"
    late = beat_at + timedelta(hours=1, minutes=2)
    assert collector_health(store, "opensky", late)["collector_status"] == "stopped"
    spool.heartbeat(state="stopped", next_poll_at=None)  # said goodbye: stopped at once
    assert collector_health(store, "opensky", beat_at + timedelta(seconds=1))["collector_status"] == "stopped"
