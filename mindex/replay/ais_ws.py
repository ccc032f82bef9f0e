"""AisReplayServer: the AISStream.io websocket (``/v0/stream``) answered on loopback from recorded envelopes.

    with AisReplayServer(fixtures_dir, rate_per_s=5000) as server:
        config = AisCollectorConfig(url=server.url, api_key="any")
        server.disconnect_after(100)

It runs its own asyncio event loop in a background thread, so sync tests (and ``mindex replay``) can start and stop
it. Behaviour, as the real service documents it (API_NOTES.md section 4):

* the client must send its subscription within ``subscribe_timeout_s`` (3 s) of the open, or the connection is
  closed (code 1008);
* a subscription without ``APIKey`` (any capitalisation), or with a key not in ``api_keys`` when that is given,
  gets ``{"error": "Api Key Is Not Valid"}`` and a close; one without ``BoundingBoxes`` or with a malformed filter
  gets an ``{"error": ...}`` frame too (the real wording for those is unverified);
* ``BoundingBoxes`` (corners ``[lat, lon]``, any order; no antimeridian wrap), ``FilterMessageTypes`` and
  ``FiltersShipMMSI`` are honoured. The flattened 2025 static recording carries no position, so an envelope
  without MetaData latitude/longitude passes every bounding box.

Stream semantics (chosen to make no-loss tests exact): the server holds ONE global position in the recording, like
a live feed that remembers what it has handed out. Each connection takes the next envelope not yet delivered; an
envelope that does not match that connection's subscription is consumed (skipped) as a live feed would. A message
counts as served only once ``send`` returned; a send that fails puts it back at the head of the queue, so a
reconnecting client gets every message exactly once. (A message written just as the client itself dropped the
connection could be lost or, with ``loop_messages``, seen twice; downstream dedupes on the natural key.) When the
recording is exhausted the connection stays open and silent, unless ``loop_messages`` starts it over.

Fault injection (thread-safe, callable from any thread):

* ``disconnect_after(n)``: after the next ``n`` served messages, drop the TCP connection with no close frame
  (the client sees 1006), after the bytes already sent have left the process;
* ``silence(seconds)``: send nothing for that long, connections kept open;
* ``malformed(n)``: send ``n`` non-JSON text frames before the next messages;
* ``reject_next(n)``: drop the next ``n`` connections right after the websocket open;
* ``set_rate(r)``: messages per second (``None`` or 0 = as fast as possible).

People switch the same faults over HTTP on the websocket's port (``GET /_replay/fault?disconnect_after=100``,
``?silence=30``, ``?malformed=2``, ``?reject=3``, ``?rate=5``, ``?clear=1``; ``GET /_replay/status``), or with
``mindex replay --ais-fault disconnect_after=100``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from mycosoft_assets.aisstream.normalize import load_recorded_envelopes, mmsi_text, natural_key

log = logging.getLogger("mindex.replay.ais")

STREAM_PATH = "/v0/stream"
CONTROL_PATH = "/_replay"  # GET /_replay/status, GET /_replay/fault?disconnect_after=100 (see apply_faults)
SUBSCRIBE_TIMEOUT_S = 3.0
API_KEY_ERROR = "Api Key Is Not Valid"
MALFORMED_FRAME = "{not json: truncated AIS frame"


@dataclass
class ConnectionLog:
    id: int
    opened_at: float  # time.time()
    subscribed_after_s: float | None = None  # delay between the open and the subscription message
    subscription: dict[str, Any] | None = None  # APIKey redacted
    served: list[tuple[Any, ...]] = field(default_factory=list)  # natural keys, in send order
    malformed_sent: int = 0
    closed_reason: str | None = None


def _redact(subscription: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if k.lower() == "apikey" else v) for k, v in subscription.items()}


def _in_boxes(envelope: dict[str, Any], boxes: list[Any]) -> bool:
    meta = envelope.get("MetaData") if isinstance(envelope.get("MetaData"), dict) else {}
    lat, lon = meta.get("latitude"), meta.get("longitude")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return True  # recorded without a position (flattened static file): cannot be filtered out
    for box in boxes:
        (lat1, lon1), (lat2, lon2) = box
        if min(lat1, lat2) <= lat <= max(lat1, lat2) and min(lon1, lon2) <= lon <= max(lon1, lon2):
            return True
    return False


class _Subscription:
    def __init__(self, message: dict[str, Any]) -> None:
        self.boxes = message["BoundingBoxes"]
        self.types = set(message.get("FilterMessageTypes") or [])
        self.mmsi = set(message.get("FiltersShipMMSI") or [])

    def matches(self, envelope: dict[str, Any]) -> bool:
        if self.types and envelope.get("MessageType") not in self.types:
            return False
        if self.mmsi and natural_key(envelope)[0] not in self.mmsi:
            return False
        return _in_boxes(envelope, self.boxes)


def validate_subscription(message: Any, api_keys: set[str] | None) -> str | None:
    """The error text the server answers with, or ``None`` when the subscription is accepted."""
    if not isinstance(message, dict):
        return "Subscription Message Is Not Valid"
    key = next((v for k, v in message.items() if k.lower() == "apikey"), None)
    if not isinstance(key, str) or not key.strip() or (api_keys is not None and key not in api_keys):
        return API_KEY_ERROR
    boxes = message.get("BoundingBoxes")
    try:
        if not isinstance(boxes, list) or not boxes:
            raise ValueError
        for box in boxes:
            (a, b), (c, d) = box
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b, c, d)):
                raise ValueError
    except (TypeError, ValueError):
        return "Bounding Boxes Are Not Valid"
    mmsi = message.get("FiltersShipMMSI")
    if mmsi is not None and (not isinstance(mmsi, list) or not all(
            isinstance(m, str) and len(m) == 9 and mmsi_text(m) == m for m in mmsi)):
        return "FiltersShipMMSI Must Be 9-Character Strings"
    types = message.get("FilterMessageTypes")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        return "FilterMessageTypes Is Not Valid"
    return None


class AisReplayServer:
    def __init__(self, fixtures_dir: Path | str, host: str = "127.0.0.1", port: int = 0, *,
                 rate_per_s: float | None = 1000.0, loop_messages: bool = False,
                 subscribe_timeout_s: float = SUBSCRIBE_TIMEOUT_S, api_keys: set[str] | None = None,
                 envelopes: list[dict[str, Any]] | None = None) -> None:
        self.envelopes = envelopes if envelopes is not None else load_recorded_envelopes(fixtures_dir)
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.loop_messages = loop_messages
        self.subscribe_timeout_s = subscribe_timeout_s
        self.api_keys = api_keys
        self._lock = threading.Lock()
        self._rate = rate_per_s
        self._cursor = 0
        self._loops = 0
        self._requeue: deque[int] = deque()
        self._silent_until = 0.0
        self._malformed_pending = 0
        self._reject_pending = 0
        self._drop_after: int | None = None
        self._served: list[dict[str, Any]] = []
        self.connections: list[ConnectionLog] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("AisReplayServer is not started")
        return f"ws://{self.host}:{self.port}{STREAM_PATH}"

    def start(self) -> AisReplayServer:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="ais-replay-ws", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"AisReplayServer failed to start: {self._error}") from self._error
        if self.port is None:
            raise RuntimeError("AisReplayServer did not start within 10 s")
        log.info("AIS replay websocket on %s (%d envelopes)", self.url, len(self.envelopes))
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> AisReplayServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self._requested_port, ping_interval=None,
                         close_timeout=1, process_request=self._check_path) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close(close_connections=True)
            await server.wait_closed()

    def _check_path(self, connection: ServerConnection, request: Any) -> Any:
        path, _, query = request.path.partition("?")
        if path == CONTROL_PATH + "/status":
            return connection.respond(200, json.dumps(self.status()) + "\n")
        if path == CONTROL_PATH + "/fault":
            try:
                self.apply_faults(dict(parse_qsl(query)))
            except (KeyError, ValueError) as exc:
                return connection.respond(400, f"{exc}\n")
            return connection.respond(200, json.dumps(self.status()) + "\n")
        if path != STREAM_PATH:
            return connection.respond(404, "Not Found\n")
        return None

    def apply_faults(self, faults: dict[str, str]) -> None:
        """Faults by name, as ``mindex replay --fault aisstream=...`` and ``GET /_replay/fault?...`` give them:
        ``disconnect_after=N``, ``silence=SECONDS``, ``malformed=N``, ``reject=N``, ``rate=PER_S`` (0: unlimited),
        ``clear`` (any value). The websocket server speaks HTTP only for GET, hence a query string."""
        actions = {"disconnect_after": lambda v: self.disconnect_after(int(v)),
                   "silence": lambda v: self.silence(float(v)), "malformed": lambda v: self.malformed(int(v)),
                   "reject": lambda v: self.reject_next(int(v)), "rate": lambda v: self.set_rate(float(v) or None),
                   "clear": lambda v: self.clear_faults()}
        unknown = sorted(set(faults) - set(actions))
        if unknown:
            raise KeyError(f"unknown AIS fault(s) {unknown}; choose from {sorted(actions)}")
        for name, value in faults.items():
            actions[name](value)

    # ---- fault injection (any thread) ---------------------------------------------------------------------
    def disconnect_after(self, n_messages: int) -> None:
        with self._lock:
            self._drop_after = max(0, int(n_messages))

    def silence(self, seconds: float) -> None:
        with self._lock:
            self._silent_until = time.monotonic() + seconds

    def malformed(self, n: int) -> None:
        with self._lock:
            self._malformed_pending += n

    def reject_next(self, n: int) -> None:
        with self._lock:
            self._reject_pending += n

    def set_rate(self, rate_per_s: float | None) -> None:
        with self._lock:
            self._rate = rate_per_s

    def clear_faults(self) -> None:
        with self._lock:
            self._drop_after = None
            self._silent_until = 0.0
            self._malformed_pending = 0
            self._reject_pending = 0

    # ---- what was served ----------------------------------------------------------------------------------
    @property
    def served(self) -> int:
        with self._lock:
            return len(self._served)

    def served_messages(self) -> list[dict[str, Any]]:
        """Every envelope served, in send order (across connections)."""
        with self._lock:
            return list(self._served)

    @property
    def exhausted(self) -> bool:
        """Every envelope of the recording has been handed out (never true with ``loop_messages``)."""
        with self._lock:
            return not self.loop_messages and self._cursor >= len(self.envelopes) and not self._requeue

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.url if self.port else None, "envelopes": len(self.envelopes),
                    "cursor": self._cursor, "loops": self._loops, "served": len(self._served),
                    "connections": len(self.connections), "rate_per_s": self._rate,
                    "faults": {"disconnect_after": self._drop_after, "malformed_pending": self._malformed_pending,
                               "reject_pending": self._reject_pending,
                               "silent_for_s": round(max(0.0, self._silent_until - time.monotonic()), 1)}}

    # ---- the connection handler ---------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        with self._lock:
            entry = ConnectionLog(id=len(self.connections) + 1, opened_at=time.time())
            self.connections.append(entry)
            reject = self._reject_pending > 0
            if reject:
                self._reject_pending -= 1
        opened = time.monotonic()
        if reject:
            entry.closed_reason = "rejected"
            ws.transport.abort()  # no close frame: the client sees 1006, as in aisstream/issues#186
            return
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=self.subscribe_timeout_s)
        except TimeoutError:
            entry.closed_reason = "subscribe_timeout"
            await ws.close(1008, "subscription not received in time")
            return
        except ConnectionClosed:
            entry.closed_reason = "client_closed_before_subscribing"
            return
        entry.subscribed_after_s = time.monotonic() - opened
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        error = validate_subscription(message, self.api_keys)
        entry.subscription = _redact(message) if isinstance(message, dict) else None
        if error:
            entry.closed_reason = f"error: {error}"
            try:
                await ws.send(json.dumps({"error": error}))
                await ws.close(1008, error)
            except ConnectionClosed:
                pass
            return
        try:
            await self._stream(ws, _Subscription(message), entry)
        except ConnectionClosed:
            entry.closed_reason = entry.closed_reason or "client_closed"

    def _take(self, subscription: _Subscription) -> int | None:
        """Under the lock: the index of the next envelope for this subscription, consuming skipped ones."""
        while True:
            if self._requeue:
                index = self._requeue.popleft()
            elif self._cursor < len(self.envelopes):
                index = self._cursor
                self._cursor += 1
            elif self.loop_messages and self.envelopes:
                self._cursor = 0
                self._loops += 1
                continue
            else:
                return None
            if subscription.matches(self.envelopes[index]):
                return index

    async def _stream(self, ws: ServerConnection, subscription: _Subscription, entry: ConnectionLog) -> None:
        next_at = time.monotonic()
        while True:
            if ws.state is not State.OPEN:  # the client left (or the server stops) while we were quiet
                entry.closed_reason = entry.closed_reason or "client_closed"
                return
            now = time.monotonic()
            with self._lock:
                silent_for = self._silent_until - now
                malformed = self._malformed_pending > 0
                if malformed and silent_for <= 0:
                    self._malformed_pending -= 1
                rate = self._rate
            if silent_for > 0:
                await asyncio.sleep(min(silent_for, 0.05))
                next_at = time.monotonic()
                continue
            if malformed:
                await ws.send(MALFORMED_FRAME)
                entry.malformed_sent += 1
                continue
            if rate:
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(next_at, time.monotonic() - 0.1) + 1.0 / rate
            with self._lock:
                index = self._take(subscription)
            if index is None:
                await asyncio.sleep(0.05)  # recording exhausted: keep the connection open and quiet
                continue
            envelope = self.envelopes[index]
            try:
                await ws.send(json.dumps(envelope, separators=(",", ":")))
            except BaseException:
                with self._lock:
                    self._requeue.appendleft(index)  # not delivered: the next connection gets it first
                raise
            with self._lock:
                self._served.append(envelope)
                entry.served.append(natural_key(envelope))
                drop = False
                if self._drop_after is not None:
                    self._drop_after -= 1
                    if self._drop_after <= 0:
                        self._drop_after = None
                        drop = True
            if drop:
                entry.closed_reason = "dropped"
                await self._drop(ws)
                return

    @staticmethod
    async def _drop(ws: ServerConnection) -> None:
        """Close the TCP connection without a close frame, after what was sent has left the process."""
        transport = ws.transport
        for _ in range(1000):
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.001)
        transport.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m mindex.replay.ais_ws``: serve until SIGINT/SIGTERM; stdout gets ``AISSTREAM_URL=...`` only."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m mindex.replay.ais_ws")
    parser.add_argument("--fixtures-dir", default=None, help="default: as `mindex replay` ($MINDEX_REPLAY_DIR, ...)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second (0 = unlimited)")
    parser.add_argument("--loop", action="store_true", help="start the recording over when it ends")
    args = parser.parse_args(argv)
    if args.fixtures_dir is None:
        from mindex.replay.cli import default_fixtures_dir

        args.fixtures_dir = default_fixtures_dir()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with AisReplayServer(args.fixtures_dir, port=args.port, rate_per_s=args.rate or None,
                         loop_messages=args.loop) as server:
        print(f"AISSTREAM_URL={server.url}", flush=True)
        done.wait()
        print(json.dumps(server.status()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
