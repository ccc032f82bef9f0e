"""The AISStream.io websocket collector: envelopes into the durable spool, disconnects into gap records (case C13).

    mindex collect aisstream --data-dir data --duration 30        (wired by mindex/cli.py)
    python -m mindex.collectors.aisstream --data-dir data --duration 30

Every frame is landed as received: a JSON object as ``kind = "message"`` (the raw envelope, unchanged), anything
else as ``kind = "malformed"`` (kept and flagged, never dropped). An ``{"error": ...}`` frame from the service
(a bad subscription) is logged and ends the connection like a disconnect; a rejected API key stops the collector
(exit 1), since retrying cannot help. Normalizing and deduplication on
``(mmsi, message_type, time_utc_raw)`` happen downstream (``mycosoft_assets.aisstream.normalize``).

Connection discipline:

* the subscription is sent right after the websocket opens; if it cannot be sent within ``subscribe_deadline_s``
  (the service closes at 3 s) the attempt counts as a failed connect;
* an idle watchdog closes and reconnects after ``idle_timeout_s`` without any frame (aisstream/issues#179, #258);
* after every disconnect the spool is flushed, then the collector sleeps ``max(backoff_min_s, rng() * min(max,
  base * 2**failures))`` (exponential backoff, full jitter, never a tight loop; aisstream/issues#291). ``failures``
  resets once a connection has delivered frames for ``stable_after_s`` (30 s), so a server that drops every
  socket after one message still sees reconnects slow down;
* a gap is one outage: it opens at the first disconnect (for ``idle``, at the last frame received) and is written
  with ``spool.record_gap`` once a new connection delivers its first frame, with ``reconnected_at`` = when that
  connection's subscription was sent. Failed attempts in between count in ``attempts``. A gap still open at
  shutdown is written with ``reconnected_at = None``;
* a heartbeat (``_health/heartbeat.json``) every ``heartbeat_every_s``; SIGTERM/SIGINT, ``stop_after_s`` and
  ``stop_after_messages`` stop cleanly: close, flush, final heartbeat.

The API key is sent only inside the subscription message; it is never logged, never in ``repr`` and never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from mycosoft_assets.settings import DEFAULT_DATA_DIR
from resources.spool import SpoolWriter, utc_now

log = logging.getLogger("mindex.collectors.aisstream")

SOURCE = "aisstream"
DEFAULT_URL = "wss://stream.aisstream.io/v0/stream"
WORLD = [[[-90.0, -180.0], [90.0, 180.0]]]
REPLAY_API_KEY = "local-replay"  # sent only to a loopback URL when no key is configured
MALFORMED_TEXT_LIMIT = 2000


def _env_url() -> str:
    return os.environ.get("AISSTREAM_URL") or DEFAULT_URL


def _env_key() -> str | None:
    return os.environ.get("AISSTREAM_API_KEY") or None


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")


@dataclass
class AisCollectorConfig:
    url: str = field(default_factory=_env_url)
    api_key: str | None = field(default_factory=_env_key, repr=False)
    bounding_boxes: list[Any] = field(default_factory=lambda: copy.deepcopy(WORLD))
    filter_message_types: list[str] | None = None
    filter_mmsi: list[str] | None = None
    subscribe_deadline_s: float = 3.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    idle_timeout_s: float = 60.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_min_s: float = 0.05
    # The backoff resets only after a connection has delivered frames this long: a server that drops every
    # socket right after its first message still sees reconnects slow down (aisstream/issues#291).
    stable_after_s: float = 30.0
    batch_size: int = 500  # used by collect_main to build the SpoolWriter
    max_batch_seconds: float = 2.0
    heartbeat_every_s: float = 10.0
    stop_after_s: float | None = None
    stop_after_messages: int | None = None
    max_frame_bytes: int = 2**20

    def __post_init__(self) -> None:
        if self.filter_mmsi is not None:
            cleaned = []
            for value in self.filter_mmsi:
                text = str(value).strip()
                if not text.isdigit() or len(text) > 9:
                    raise ValueError(f"filter_mmsi entry {value!r} is not an MMSI (up to 9 digits)")
                cleaned.append(text.zfill(9))
            self.filter_mmsi = cleaned
        for box in self.bounding_boxes:
            (lat1, lon1), (lat2, lon2) = box
            if not (-90 <= lat1 <= 90 and -90 <= lat2 <= 90 and -180 <= lon1 <= 180 and -180 <= lon2 <= 180):
                raise ValueError(f"bounding box {box!r} is not [[lat, lon], [lat, lon]]")
        if self.backoff_min_s <= 0 or self.backoff_base_s <= 0:
            raise ValueError("backoff_min_s and backoff_base_s must be > 0 (no tight reconnect loop)")

    def effective_api_key(self) -> str:
        if self.api_key:
            return self.api_key
        if _is_loopback(self.url):
            return REPLAY_API_KEY
        raise ValueError("AISSTREAM_API_KEY is not set (required for a non-loopback AISStream URL)")

    def subscription(self) -> dict[str, Any]:
        message: dict[str, Any] = {"APIKey": self.effective_api_key(), "BoundingBoxes": self.bounding_boxes}
        if self.filter_message_types:
            message["FilterMessageTypes"] = list(self.filter_message_types)
        if self.filter_mmsi:
            message["FiltersShipMMSI"] = list(self.filter_mmsi)
        return message

    def backoff_delay(self, failures: int, rng: Callable[[], float]) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(failures, 32)))
        return min(self.backoff_max_s, max(self.backoff_min_s, rng() * cap))


@dataclass
class CollectorStats:
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    stop_reason: str | None = None
    messages: int = 0
    malformed: int = 0
    server_errors: int = 0
    connects: int = 0  # websocket opens with the subscription sent
    connect_failures: int = 0
    reconnects: int = 0  # connects after the first
    gaps: int = 0  # gap records written (closed and open)
    last_message_at: datetime | None = None
    subscribe_delays_s: list[float] = field(default_factory=list)
    backoff_delays_s: list[float] = field(default_factory=list)
    disconnect_reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("subscribe_delays_s")
        out["backoff_delays_s"] = [round(d, 3) for d in self.backoff_delays_s[-10:]]
        out["disconnect_reasons"] = self.disconnect_reasons[-10:]
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in out.items()}


@dataclass
class _Gap:
    disconnected_at: datetime
    reason: str
    close_code: int | None = None
    detected_at: datetime | None = None
    attempts: int = 0
    last_reason: str | None = None
    error: str | None = None


class _Disconnected(Exception):
    def __init__(self, reason: str, *, close_code: int | None = None, at: datetime | None = None,
                 error: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
        self.at = at
        self.error = error


class _Collector:
    def __init__(self, config: AisCollectorConfig, spool: SpoolWriter, *, clock: Callable[[], datetime],
                 sleep: Callable[[float], Awaitable[Any]], rng: Callable[[], float], stop: asyncio.Event) -> None:
        self.config = config
        self.spool = spool
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.stop = stop
        self.stats = CollectorStats(started_at=clock())
        self.gap: _Gap | None = None
        self.connected = False
        self.failures = 0
        self.delivering_since: float | None = None  # loop time of this connection's first frame
        self.loop = asyncio.get_running_loop()
        self._stop_task: asyncio.Future[Any] | None = None

    # ---- top level --------------------------------------------------------------------------------------
    async def run(self) -> CollectorStats:
        subscription = self.config.subscription()  # fails fast on a missing key
        self._stop_task = asyncio.ensure_future(self.stop.wait())
        ticker = asyncio.create_task(self._tick())
        self._heartbeat()
        try:
            while not self.stop.is_set():
                try:
                    await self._session(subscription)
                except _Disconnected as exc:
                    self._on_disconnect(exc)
                    if exc.reason == "server_error" and is_key_rejection(exc.error):
                        # Retrying a rejected key cannot help and looks like a retry storm to the service.
                        log.error("aisstream: stopping: the service rejected the API key (%s)", exc.error)
                        self.stats.stop_reason = f"fatal: {exc.error}"
                        break
                if self.delivering_since is not None:
                    if self.loop.time() - self.delivering_since >= self.config.stable_after_s:
                        self.failures = 0  # that connection was stable: start the backoff over
                    self.delivering_since = None
                if self.stop.is_set():
                    break
                delay = self.config.backoff_delay(self.failures, self.rng)
                self.failures += 1
                self.stats.backoff_delays_s.append(delay)
                log.info("aisstream: reconnecting in %.2f s (failure %d)", delay, self.failures)
                await self._wait_or_stop(self.sleep(delay))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._stop_task.cancel()
            self._shutdown()
        return self.stats

    def _shutdown(self) -> None:
        self.connected = False
        if self.gap is not None:
            self._write_gap(None)
        self.spool.flush()
        self.stats.stopped_at = self.clock()
        self.stats.stop_reason = self.stats.stop_reason or "stopped"
        self._heartbeat(stopped=True, stop_reason=self.stats.stop_reason)
        log.info("aisstream collector stopped: %s", json.dumps(self.stats.summary(), default=str))

    async def _wait_or_stop(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait({task, self._stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        every = max(0.01, min(self.config.heartbeat_every_s, self.spool.max_batch_seconds / 2 or 0.5, 1.0))
        next_beat = self.loop.time() + self.config.heartbeat_every_s
        while True:
            await asyncio.sleep(every)
            self.spool.maybe_flush()
            if self.loop.time() >= next_beat:
                self._heartbeat()
                next_beat = self.loop.time() + self.config.heartbeat_every_s

    def _heartbeat(self, **extra: Any) -> None:
        self.spool.heartbeat(
            last_message_at=self.stats.last_message_at.isoformat() if self.stats.last_message_at else None,
            connected=self.connected, reconnects=self.stats.reconnects, gaps=self.stats.gaps,
            gap_open=self.gap is not None,
            gap_open_since=self.gap.disconnected_at.isoformat() if self.gap is not None else None,
            messages=self.stats.messages, malformed=self.stats.malformed,
            connect_failures=self.stats.connect_failures, **extra)

    # ---- one connection ---------------------------------------------------------------------------------
    async def _open(self, subscription: dict[str, Any]) -> tuple[ClientConnection, datetime]:
        config = self.config
        try:
            ws = await connect(config.url, open_timeout=config.open_timeout_s, close_timeout=config.close_timeout_s,
                               ping_interval=20, ping_timeout=20, max_size=config.max_frame_bytes)
        except InvalidURI:
            raise
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.stats.connect_failures += 1
            raise _Disconnected("connect_failed", error=f"{type(exc).__name__}: {exc}") from exc
        opened = self.loop.time()
        try:
            # The service closes a socket that has not subscribed within 3 s of the open.
            await asyncio.wait_for(ws.send(json.dumps(subscription)), timeout=config.subscribe_deadline_s)
        except (TimeoutError, ConnectionClosed, OSError) as exc:
            self.stats.connect_failures += 1
            ws.transport.abort()
            raise _Disconnected("subscribe_failed", error=type(exc).__name__) from exc
        self.stats.subscribe_delays_s.append(self.loop.time() - opened)
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.connected = True
        self._heartbeat()
        return ws, self.clock()

    async def _session(self, subscription: dict[str, Any]) -> None:
        ws, subscribed_at = await self._open(subscription)
        delivered = False
        last_frame_mono = self.loop.time()
        last_frame_wall = subscribed_at
        try:
            while True:
                if self.stop.is_set():
                    await self._close(ws)
                    return
                remaining = last_frame_mono + self.config.idle_timeout_s - self.loop.time()
                if remaining <= 0:
                    raise _Disconnected("idle", at=last_frame_wall)
                recv = asyncio.ensure_future(ws.recv())
                await asyncio.wait({recv, self._stop_task}, timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    recv.cancel()  # cancelling recv() is safe in websockets: no frame is lost
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await recv
                    if self.stop.is_set():
                        await self._close(ws)
                        return
                    continue
                try:
                    frame = recv.result()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else 1006
                    raise _Disconnected("connection_closed", close_code=code) from exc
                except OSError as exc:
                    raise _Disconnected("os_error", error=str(exc)) from exc
                received = self.clock()
                last_frame_mono, last_frame_wall = self.loop.time(), received
                error = self._land(frame, received)
                if error is not None:
                    self.stats.server_errors += 1
                    log.error("aisstream: the server sent an error: %s", error)
                    raise _Disconnected("server_error", error=error)
                if not delivered:
                    delivered = True
                    self.delivering_since = self.loop.time()
                    if self.gap is not None:
                        self._write_gap(subscribed_at)
                limit = self.config.stop_after_messages
                if limit is not None and self.stats.messages >= limit:
                    self.stats.stop_reason = "stop_after_messages"
                    self.stop.set()
                    await self._close(ws)
                    return
        except _Disconnected:
            self.connected = False
            if ws.transport is not None:
                ws.transport.abort()
            raise

    async def _close(self, ws: ClientConnection) -> None:
        """A normal close (1000). Frames still queued behind our close are not read, so the server's close frame
        can be stuck behind them: wait briefly, then drop the socket (nothing more is landed after a stop)."""
        self.connected = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), timeout=min(self.config.close_timeout_s, 0.5))
        if ws.transport is not None and not ws.transport.is_closing():
            ws.transport.abort()

    def _land(self, frame: str | bytes, received: datetime) -> str | None:
        """Spool one frame; returns the server's error text for an ``{"error": ...}`` frame."""
        try:
            envelope = json.loads(frame)
            if not isinstance(envelope, dict):
                raise ValueError(f"frame is JSON {type(envelope).__name__}, not an object")
        except ValueError as exc:
            text = frame.decode("utf-8", errors="replace") if isinstance(frame, bytes) else frame
            self.spool.append("malformed", {"text": text[:MALFORMED_TEXT_LIMIT], "error": str(exc)},
                              received_at=received)
            self.stats.malformed += 1
            log.warning("aisstream: malformed frame kept (%s)", exc)
            return None
        if "error" in envelope and "MessageType" not in envelope:
            return str(envelope.get("error"))
        self.spool.append("message", envelope, received_at=received)
        self.stats.messages += 1
        self.stats.last_message_at = received
        return None

    # ---- gaps -------------------------------------------------------------------------------------------
    def _on_disconnect(self, exc: _Disconnected) -> None:
        now = self.clock()
        self.connected = False
        self.spool.flush()  # what arrived before the drop is durable before we reconnect
        self.stats.disconnect_reasons.append(exc.reason)
        log.warning("aisstream: disconnected (%s%s%s)", exc.reason,
                    f", close code {exc.close_code}" if exc.close_code else "", f": {exc.error}" if exc.error else "")
        if self.gap is None:
            started = exc.at or (now if self.stats.connects else self.stats.started_at or now)
            self.gap = _Gap(disconnected_at=started, reason=exc.reason, close_code=exc.close_code,
                            detected_at=now, error=exc.error)
        else:
            self.gap.attempts += 1
            self.gap.last_reason = exc.reason
            if exc.error and not self.gap.error:
                self.gap.error = exc.error
        self._heartbeat()

    def _write_gap(self, reconnected_at: datetime | None) -> None:
        gap = self.gap
        assert gap is not None
        detail: dict[str, Any] = {"close_code": gap.close_code, "attempts": gap.attempts,
                                  "detected_at": gap.detected_at.isoformat() if gap.detected_at else None}
        if gap.last_reason:
            detail["last_reason"] = gap.last_reason
        if gap.error:
            detail["error"] = gap.error[:500]
        self.spool.record_gap(gap.disconnected_at, reconnected_at, gap.reason, **detail)
        self.stats.gaps += 1
        self.gap = None


async def run_collector(config: AisCollectorConfig, spool: SpoolWriter, *, clock: Callable[[], datetime] = utc_now,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                        rng: Callable[[], float] = random.random, stop_event: asyncio.Event | None = None,
                        handle_signals: bool = False) -> CollectorStats:
    """Collect until stopped (``stop_event``, SIGTERM/SIGINT when ``handle_signals``, ``stop_after_s``,
    ``stop_after_messages``). ``sleep`` and ``rng`` drive only the reconnect backoff."""
    loop = asyncio.get_running_loop()
    stop = stop_event or asyncio.Event()
    collector = _Collector(config, spool, clock=clock, sleep=sleep, rng=rng, stop=stop)
    handlers: list[signal.Signals] = []
    timer = None
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, _stop_with_reason, collector, stop, sig.name)
                handlers.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    if config.stop_after_s is not None:
        timer = loop.call_later(config.stop_after_s, _stop_with_reason, collector, stop, "stop_after_s")
    try:
        return await collector.run()
    finally:
        if timer is not None:
            timer.cancel()
        for sig in handlers:
            loop.remove_signal_handler(sig)


def _stop_with_reason(collector: _Collector, stop: asyncio.Event, reason: str) -> None:
    if not stop.is_set():
        collector.stats.stop_reason = reason
        log.info("aisstream: stopping (%s)", reason)
    stop.set()


def _bbox(text: str) -> list[list[float]]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("a box is lat1,lon1,lat2,lon2")
    return [[parts[0], parts[1]], [parts[2], parts[3]]]


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindex collect aisstream",
                                     description="Collect AISStream.io messages into the spool (key from "
                                                 "AISSTREAM_API_KEY, URL from AISSTREAM_URL or --url).")
    parser.add_argument("--data-dir", default=os.environ.get("MINDEX_DATA_DIR") or str(DEFAULT_DATA_DIR),
                        help="spool root (default: $MINDEX_DATA_DIR or ./data)")
    parser.add_argument("--url", default=None, help="websocket URL (default AISSTREAM_URL or the real service)")
    parser.add_argument("--duration", type=float, default=None, help="stop cleanly after this many seconds")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--bbox", type=_bbox, action="append", help="lat1,lon1,lat2,lon2 (repeatable; default world)")
    parser.add_argument("--types", type=_csv, default=None, help="FilterMessageTypes, comma separated")
    parser.add_argument("--mmsi", type=_csv, default=None, help="FiltersShipMMSI, comma separated")
    parser.add_argument("--batch-size", type=int, default=500, help="flush the spool every N messages (default 500)")
    parser.add_argument("--max-batch-seconds", type=float, default=2.0,
                        help="... or when the oldest unflushed message is this old (default 2)")
    parser.add_argument("--heartbeat-every", type=float, default=10.0,
                        help="heartbeat interval in seconds (default 10)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="reconnect after this many seconds without a frame (default 60)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser


def is_key_rejection(error: str | None) -> bool:
    """AISStream answers a bad or missing key with ``{"error": "Api Key Is Not Valid"}``."""
    return bool(error) and "api key" in error.lower()


def collect_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = AisCollectorConfig(
            url=args.url or _env_url(), bounding_boxes=args.bbox or copy.deepcopy(WORLD),
            filter_message_types=args.types, filter_mmsi=args.mmsi, batch_size=args.batch_size,
            max_batch_seconds=args.max_batch_seconds, heartbeat_every_s=args.heartbeat_every,
            idle_timeout_s=args.idle_timeout, stop_after_s=args.duration, stop_after_messages=args.max_messages)
        config.effective_api_key()
    except ValueError as exc:
        print(f"mindex collect aisstream: {exc}", file=sys.stderr)
        return 2
    spool = SpoolWriter(Path(args.data_dir), SOURCE, batch_size=config.batch_size,
                        max_batch_seconds=config.max_batch_seconds)
    log.info("aisstream collector: %s -> %s", config.url, spool.dir)
    stats = asyncio.run(run_collector(config, spool, handle_signals=True))
    print(json.dumps(stats.summary(), default=str))
    return 1 if (stats.stop_reason or "").startswith("fatal") else 0


if __name__ == "__main__":
    sys.exit(collect_main(sys.argv[1:]))
