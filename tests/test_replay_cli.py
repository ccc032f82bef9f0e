"""`mindex replay` as a person runs it: every recorded source on loopback, the AIS websocket beside them, and its
faults switchable from the command line and over HTTP on the websocket's port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


@pytest.fixture
def replay_cli(fixtures_dir: Path):
    mindex = os.path.join(os.path.dirname(sys.executable), "mindex")
    process = subprocess.Popen([mindex, "replay", "--fixtures", str(fixtures_dir), "--ais-rate", "0",
                                "--ais-fault", "disconnect_after=5"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while "AISSTREAM_URL" not in urls and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        name, _, value = line.strip().partition("=")
        urls[name] = value
    try:
        assert "AISSTREAM_URL" in urls, urls
        yield urls
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _receive_until_closed(url: str) -> tuple[int, int | None]:
    received, code = 0, None
    async with connect(url) as ws:
        await ws.send(json.dumps({"APIKey": "replay-key", "BoundingBoxes": [[[-90, -180], [90, 180]]]}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=10)
                received += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
    return received, code


def test_replay_serves_every_source_and_the_ais_websocket_with_switchable_faults(replay_cli):
    assert {"INATURALIST_BASE_URL", "GBIF_BASE_URL", "NWS_BASE_URL", "OPEN_METEO_BASE_URL", "OPENAQ_BASE_URL",
            "OPENSKY_BASE_URL"} <= set(replay_cli)
    ws_url = replay_cli["AISSTREAM_URL"]
    assert ws_url.startswith("ws://127.0.0.1:") and ws_url.endswith("/v0/stream")
    control = ws_url.replace("ws://", "http://").removesuffix("/v0/stream") + "/_replay"

    status = httpx.get(f"{control}/status", timeout=5).json()
    assert status["envelopes"] > 4000 and status["faults"]["disconnect_after"] == 5

    # The fault given on the command line: five messages, then the TCP connection drops without a close frame.
    assert asyncio.run(_receive_until_closed(ws_url)) == (5, 1006)

    # Switched over HTTP: a silence, then cleared; an unknown fault is refused with the list of known ones.
    assert httpx.get(f"{control}/fault", params={"silence": "30"}, timeout=5).json()["faults"]["silent_for_s"] > 20
    refused = httpx.get(f"{control}/fault", params={"explode": "1"}, timeout=5)
    assert refused.status_code == 400 and "disconnect_after" in refused.text
    cleared = httpx.get(f"{control}/fault", params={"clear": "1"}, timeout=5).json()["faults"]
    assert cleared == {"disconnect_after": None, "malformed_pending": 0, "reject_pending": 0, "silent_for_s": 0.0}
    assert httpx.get(f"{control}/status", timeout=5).json()["served"] == 5
