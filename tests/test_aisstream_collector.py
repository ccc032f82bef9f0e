"""The AISStream collector against the loopback replay websocket (case C13): disconnects, silence, malformed
frames, the 3 s subscription rule, backoff, and a kill -9 mid-stream. Loopback only; no timed assertions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mindex.collectors.aisstream import AisCollectorConfig, run_collector
from mindex.replay.ais_ws import API_KEY_ERROR, SUBSCRIBE_TIMEOUT_S, AisReplayServer
from mycosoft_assets.aisstream.assets import (
    aisstream_vessel_positions,
    aisstream_vessel_static,
    mindex_vessel_positions,
    mindex_vessel_static,
)
from mycosoft_assets.aisstream.normalize import natural_key, normalize_envelope
from resources.mindex_db import MindexDatabase
from resources.spool import TEMP_PREFIX, SpoolReader, SpoolWriter, partition_key_of_hour
from resources.storage import PartitionStore
from sensors.schedules import RANGE_END_TAG, RANGE_START_TAG
from tests.conftest import FIXTURES, REPO_ROOT

AIS = FIXTURES / "aisstream"
pytestmark = pytest.mark.skipif(not AIS.exists(), reason="aisstream fixtures not available")
SAFETY_S = 60  # an upper bound so a broken collector fails instead of hanging; never asserted on


def _lines(root: Path) -> list[dict]:
    reader = SpoolReader(root, "aisstream")
    return [line for hour in reader.hours() for line in reader.read_hour(hour)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _until(predicate, limit: float = SAFETY_S) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def _fast_config(url: str, **overrides) -> AisCollectorConfig:
    values = dict(url=url, api_key="test-key", idle_timeout_s=0.3, backoff_base_s=0.01, backoff_min_s=0.005,
                  heartbeat_every_s=0.05, stop_after_s=SAFETY_S)
    values.update(overrides)
    return AisCollectorConfig(**values)


def test_no_loss_through_disconnects_silence_and_malformed_frames(tmp_path):
    with AisReplayServer(FIXTURES, rate_per_s=20_000) as server:
        total = len(server.envelopes)
        config = _fast_config(server.url, stop_after_messages=total)
        spool = SpoolWriter(tmp_path, "aisstream", batch_size=200, max_batch_seconds=0.05)

        async def scenario():
            collector = asyncio.create_task(run_collector(config, spool))
            server.disconnect_after(400)                       # forced disconnect 1
            await _until(lambda: server.served >= 900)
            server.disconnect_after(300)                       # forced disconnect 2
            await _until(lambda: server.served >= 1500)
            server.malformed(2)
            server.silence(1.0)                                # > idle_timeout: the watchdog reconnects
            await _until(lambda: server.served >= 2500)
            server.disconnect_after(100)                       # forced disconnect 3
            return await collector

        stats = asyncio.run(scenario())
        served = server.served_messages()
        connections = list(server.connections)

    assert stats.stop_reason == "stop_after_messages"
    assert len(served) == total  # the whole recording went out
    lines = _lines(tmp_path)
    kinds = Counter(line["kind"] for line in lines)
    assert "corrupt" not in kinds

    stored_keys = [natural_key(line["record"]) for line in lines if line["kind"] == "message"]
    served_keys = {natural_key(envelope) for envelope in served}
    assert len(served_keys) == total
    assert set(stored_keys) == served_keys  # every message, nothing the server did not send
    assert len(stored_keys) == len(served_keys)  # and each once: no replay across the three reconnects

    gaps = [line["record"] for line in lines if line["kind"] == "gap"]
    dropped = sum(1 for c in connections if c.closed_reason == "dropped")
    assert dropped == 3
    reasons = Counter(gap["reason"] for gap in gaps)
    assert reasons == Counter({"connection_closed": 3, "idle": 1})
    assert stats.gaps == len(gaps) == dropped + 1
    for gap in gaps:
        assert gap["disconnected_at"] and gap["reconnected_at"]
        assert gap["disconnected_at"] <= gap["reconnected_at"]
    assert {gap["close_code"] for gap in gaps if gap["reason"] == "connection_closed"} == {1006}

    malformed = [line["record"] for line in lines if line["kind"] == "malformed"]
    assert len(malformed) == 2 and all(m["text"] and m["error"] for m in malformed)

    beat = SpoolReader(tmp_path, "aisstream").heartbeat()
    assert beat["stopped"] is True and beat["connected"] is False and beat["gaps"] == 4
    assert beat["reconnects"] == stats.reconnects >= 4 and beat["last_message_at"]
    assert "test-key" not in json.dumps(beat)
    assert all("test-key" not in json.dumps(c.subscription) for c in connections if c.subscription)

    # Downstream, as the schedule compacts it: every distinct position and static report once in MINDEX.
    expected = {"position": set(), "static": set()}
    for envelope in served:
        normalized = normalize_envelope(envelope, "2026-01-01T00:00:00+00:00")
        if normalized is not None:
            kind, row = normalized
            expected[kind].add((row["mmsi"], row["message_type"], row["time_utc_raw"]))
    assert len(expected["position"]) > 2000 and len(expected["static"]) > 1500
    hours = sorted(partition_key_of_hour(h) for h in SpoolReader(tmp_path, "aisstream").hours())
    store = PartitionStore(data_dir=str(tmp_path))
    db = MindexDatabase(data_dir=str(tmp_path))
    assert dg.materialize([aisstream_vessel_positions, aisstream_vessel_static, mindex_vessel_positions,
                           mindex_vessel_static], resources={"mirror_store": store, "mindex_db": db},
                          tags={RANGE_START_TAG: hours[0], RANGE_END_TAG: hours[-1]}).success
    with db.engine.connect() as conn:
        for table, kind in (("vessel_positions", "position"), ("vessel_static", "static")):
            held = {tuple(r) for r in conn.execute(sa.text(f"SELECT mmsi, message_type, time_utc_raw FROM {table}"))}
            count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
            assert held == expected[kind] and count == len(expected[kind]), table


def test_subscription_sent_within_deadline_and_filters_honoured(tmp_path):
    with AisReplayServer(FIXTURES, rate_per_s=None) as server:
        leixoes_box = [[[40.0, -10.0], [45.0, -5.0]]]
        config = _fast_config(server.url, bounding_boxes=leixoes_box, filter_message_types=["PositionReport"],
                              stop_after_messages=11)
        stats = asyncio.run(run_collector(config, SpoolWriter(tmp_path, "aisstream", max_batch_seconds=0.05)))
        connection = server.connections[0]
    assert connection.subscribed_after_s is not None and connection.subscribed_after_s < SUBSCRIBE_TIMEOUT_S
    assert stats.subscribe_delays_s and max(stats.subscribe_delays_s) < config.subscribe_deadline_s
    assert connection.subscription["APIKey"] == "***"
    messages = [line["record"] for line in _lines(tmp_path) if line["kind"] == "message"]
    # Only the 11 Leixões PositionReports are inside that box with that type (the flattened static file has no
    # position, but its type is filtered out).
    assert len(messages) == 11
    assert {m["MessageType"] for m in messages} == {"PositionReport"}
    assert all(40 <= m["MetaData"]["latitude"] <= 45 and -10 <= m["MetaData"]["longitude"] <= -5 for m in messages)


def test_server_closes_a_client_that_does_not_subscribe():
    assert SUBSCRIBE_TIMEOUT_S == 3.0

    async def silent_client(url: str) -> int | None:
        async with connect(url, ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=SAFETY_S)
            return closed.value.rcvd.code if closed.value.rcvd else None

    with AisReplayServer(FIXTURES, subscribe_timeout_s=0.2) as server:
        code = asyncio.run(silent_client(server.url))
        assert server.connections[0].closed_reason == "subscribe_timeout"
        assert server.served == 0
    assert code == 1008


def test_bad_api_key_gets_error_frame_and_stops(tmp_path):
    delays: list[float] = []

    with AisReplayServer(FIXTURES, api_keys={"the-good-key"}) as server:
        async def scenario():
            stop = asyncio.Event()

            async def fake_sleep(seconds: float) -> None:
                delays.append(seconds)
                if len(delays) >= 4:
                    stop.set()

            config = _fast_config(server.url, api_key="a-bad-key", backoff_base_s=1.0, backoff_max_s=60.0)
            return await run_collector(config, SpoolWriter(tmp_path, "aisstream"), sleep=fake_sleep,
                                       rng=lambda: 1.0, stop_event=stop)

        stats = asyncio.run(scenario())
        reasons = [c.closed_reason for c in server.connections]
    # A rejected key stops the collector at once: retrying cannot help (and looks like a retry storm).
    assert stats.server_errors == 1 and stats.messages == 0 and delays == []
    assert reasons == [f"error: {API_KEY_ERROR}"]
    assert stats.stop_reason == f"fatal: {API_KEY_ERROR}"
    gaps = [line["record"] for line in _lines(tmp_path) if line["kind"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["reconnected_at"] is None  # still open at shutdown
    assert gaps[0]["reason"] == "server_error" and gaps[0]["error"] == API_KEY_ERROR
    spool_text = "".join(p.read_text() for p in tmp_path.rglob("*.json*"))
    assert "a-bad-key" not in spool_text


def test_backoff_grows_is_capped_and_never_zero_when_server_down(tmp_path):
    url = f"ws://127.0.0.1:{_free_port()}/v0/stream"  # nothing listens: connection refused

    def run(rng) -> tuple[list[float], object]:
        delays: list[float] = []

        async def scenario():
            stop = asyncio.Event()

            async def fake_sleep(seconds: float) -> None:
                delays.append(seconds)
                if len(delays) >= 10:
                    stop.set()

            return await run_collector(_fast_config(url, backoff_base_s=1.0, backoff_max_s=60.0, backoff_min_s=0.1),
                                       SpoolWriter(tmp_path, "aisstream"), sleep=fake_sleep, rng=rng,
                                       stop_event=stop)

        return delays, asyncio.run(scenario())

    delays, stats = run(lambda: 0.999999)
    assert stats.connect_failures == 10
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert delays[0] < 1.0 < delays[3] and max(delays) <= 60.0 and delays[-1] == pytest.approx(60.0, rel=1e-3)

    delays, _ = run(lambda: 0.0)  # full jitter may draw 0: the floor still keeps it from a tight loop
    assert delays == [0.1] * 10

    draws = iter([0.5, 0.25, 0.75, 0.1, 0.9, 0.6, 0.3, 0.8, 0.2, 0.4])
    delays, _ = run(lambda: next(draws))
    caps = [min(60.0, 2.0**n) for n in range(10)]
    assert delays == [pytest.approx(max(0.1, d * c)) for d, c in
                      zip([0.5, 0.25, 0.75, 0.1, 0.9, 0.6, 0.3, 0.8, 0.2, 0.4], caps, strict=True)]
    gaps = [line["record"] for line in _lines(tmp_path) if line["kind"] == "gap"]
    assert all(g["reason"] == "connect_failed" and g["reconnected_at"] is None for g in gaps)


def test_a_server_that_drops_every_socket_after_one_message_still_sees_the_backoff_grow(tmp_path):
    delays: list[float] = []
    with AisReplayServer(FIXTURES, rate_per_s=None) as server:
        server.disconnect_after(1)

        async def scenario():
            stop = asyncio.Event()

            async def fake_sleep(seconds: float) -> None:
                delays.append(seconds)
                server.disconnect_after(1)  # the next connection too: one message, then 1006
                if len(delays) >= 5:
                    stop.set()

            config = _fast_config(server.url, backoff_base_s=1.0, backoff_max_s=60.0)
            return await run_collector(config, SpoolWriter(tmp_path, "aisstream"), sleep=fake_sleep,
                                       rng=lambda: 1.0, stop_event=stop)

        stats = asyncio.run(scenario())
    # Each connection delivered a message but none stayed up for stable_after_s: no reset, no reconnect storm.
    assert stats.messages == 5 and delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_rejected_connections_back_off_then_reset_after_messages(tmp_path):
    delays: list[float] = []
    with AisReplayServer(FIXTURES, rate_per_s=None) as server:
        server.reject_next(4)

        async def scenario():
            async def fake_sleep(seconds: float) -> None:
                delays.append(seconds)

            config = _fast_config(server.url, backoff_base_s=1.0, backoff_max_s=60.0, stop_after_messages=50)
            return await run_collector(config, SpoolWriter(tmp_path, "aisstream"), sleep=fake_sleep,
                                       rng=lambda: 1.0)

        stats = asyncio.run(scenario())
        rejected = [c for c in server.connections if c.closed_reason == "rejected"]
    assert len(rejected) == 4 and stats.messages == 50
    assert delays == [1.0, 2.0, 4.0, 8.0]
    gaps = [line["record"] for line in _lines(tmp_path) if line["kind"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["attempts"] == 3 and gaps[0]["reconnected_at"] is not None


def _spawn_collector(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "AISSTREAM_API_KEY": "subprocess-key", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("AISSTREAM_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mindex.collectors.aisstream", "--data-dir", str(data_dir), "--url", url,
         "--heartbeat-every", "0.05", "--duration", str(SAFETY_S), "--log-level", "WARNING", *extra],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _batch_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool" / "aisstream").glob("hour=*/*.jsonl"))


def _assert_spool_is_a_prefix_of(data_dir: Path, served: list[dict]) -> list[dict]:
    files = [p for p in _batch_files(data_dir) if not p.name.startswith(TEMP_PREFIX)]
    on_disk = 0
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")  # no torn last line
        for line in data.splitlines():
            json.loads(line)  # every line of every flushed batch parses
            on_disk += 1
    lines = _lines(data_dir)
    assert len(lines) == on_disk and "corrupt" not in {line["kind"] for line in lines}
    messages = [line["record"] for line in lines if line["kind"] == "message"]
    # Flushed in arrival order: what is on disk is exactly the first K messages served, nothing torn or reordered.
    assert [natural_key(m) for m in messages] == [natural_key(e) for e in served[:len(messages)]]
    return messages


def test_kill_9_mid_stream_loses_at_most_the_batch_in_flight(tmp_path):
    with AisReplayServer(FIXTURES, rate_per_s=3000, loop_messages=True) as server:
        proc = _spawn_collector(server.url, tmp_path, "--batch-size", "100000", "--max-batch-seconds", "0.05")
        try:
            deadline = time.monotonic() + SAFETY_S
            while len(_batch_files(tmp_path)) < 4 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(SAFETY_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        served = server.served_messages()

    assert proc.returncode == -signal.SIGKILL
    beat = SpoolReader(tmp_path, "aisstream").heartbeat()
    assert beat is not None and beat.get("stopped") is None  # it never got to say goodbye
    messages = _assert_spool_is_a_prefix_of(tmp_path, served)
    assert len(messages) >= beat["flushed_records"] > 0  # every batch the collector reported flushed is there
    assert len(messages) <= len(served)
    # A temp file left by a crash is never read as data.
    hour_dir = _batch_files(tmp_path)[0].parent
    (hour_dir / f"{TEMP_PREFIX}00000000000000000001-1-000001.jsonl.1").write_bytes(b'{"torn":')
    assert all(not p.name.startswith(TEMP_PREFIX) for p in SpoolReader(tmp_path, "aisstream").batch_files(
        hour_dir.name.split("=", 1)[1]))
    assert len(_lines(tmp_path)) == len(messages) + sum(1 for line in _lines(tmp_path) if line["kind"] != "message")


def test_sigterm_flushes_and_writes_a_final_heartbeat(tmp_path):
    with AisReplayServer(FIXTURES, rate_per_s=3000, loop_messages=True) as server:
        proc = _spawn_collector(server.url, tmp_path, "--batch-size", "100000", "--max-batch-seconds", "5")
        try:
            deadline = time.monotonic() + SAFETY_S
            while server.served < 300 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=SAFETY_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        served = server.served_messages()

    assert proc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["stop_reason"] == "SIGTERM"
    beat = SpoolReader(tmp_path, "aisstream").heartbeat()
    assert beat["stopped"] is True and beat["stop_reason"] == "SIGTERM" and beat["pending_records"] == 0
    messages = _assert_spool_is_a_prefix_of(tmp_path, served)
    assert len(messages) == summary["messages"] == beat["messages"] >= 300  # nothing received was lost
    assert "subprocess-key" not in err.decode() and "subprocess-key" not in out.decode()
