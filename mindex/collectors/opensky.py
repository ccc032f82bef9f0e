"""The OpenSky polling collector: ``mindex collect opensky`` polls ``/states/all`` and lands each answer in the spool.

One successful poll = one spool batch: ``spool.append("states", {"params": {...}, "body": <raw JSON body>})`` then
``flush``. The body is kept exactly as received (``states: null`` included); normalizing happens downstream.

Pacing (case C11): the interval is ``resources.opensky.poll_interval_s`` (from the credit cost of the bbox and the
daily credits: anonymous global 864 s, anonymous bbox <= 25 sq deg 216 s, never below 10 s). ``--interval`` can make
it longer, never shorter; a shorter one is raised to the minimum with a warning, unless ``allow_fast_replay`` is
set, which is for replay demos and tests against a loopback server only (refused for any other host).

Failures:

* 429 (credits spent): the collector sleeps exactly ``X-Rate-Limit-Retry-After-Seconds`` (the poll interval when
  the header is missing) without polling in between, and when a poll succeeds again records the pause as a gap
  ``spool.record_gap(disconnected_at, reconnected_at, "rate_limited", retry_after_s=...)``.
* Connection errors, timeouts, 5xx and bad payloads (after the client's own retries): a gap with reason
  ``unreachable`` / ``server_error`` / ``bad_payload``, and exponential backoff with jitter: interval x 2^(n-1)
  x (1 + U(0, 0.25)), capped at ``backoff_cap_factor`` (4) x the interval, never below the interval.
* Rejected credentials (401 from the token endpoint or twice from the API) and 4xx planning errors (bad bbox) stop
  the collector: retrying cannot help and would only burn credits.

A gap still open at shutdown is recorded with ``reconnected_at = null``. The heartbeat (``spool.heartbeat``) is
replaced after every poll attempt: ``state``, ``last_poll_at``, ``last_success_at``, ``last_error``,
``credits_used_today`` (by the docs' area rule, reset at UTC midnight), ``rate_limit_remaining`` (the server's
``X-Rate-Limit-Remaining``), ``next_poll_at``, ``interval_s``, ``polls``, ``batches``, ``authenticated``.
SIGTERM / SIGINT (``collect_main``) set the stop event: the current sleep ends and the loop exits after flushing.
No secret (client secret, bearer token) is ever logged or written to the spool.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mycosoft_assets.settings import DEFAULT_DATA_DIR
from resources.errors import (
    ApiError,
    BadPayload,
    BlockedByEdge,
    ProblemDetail,
    RateLimited,
    ServerError,
    SourceUnreachable,
)
from resources.opensky import OpenSkyClient, credits_per_call, poll_interval_s, states_params, validate_bbox
from resources.spool import SpoolWriter

log = logging.getLogger("mindex.collectors.opensky")

SOURCE = "opensky"
KIND = "states"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class CollectorConfig:
    bbox: tuple[float, float, float, float] | None = None  # (lamin, lomin, lamax, lomax); None = global
    extended: bool = False
    icao24: tuple[str, ...] = ()
    interval_s: float | None = None  # None = the derived minimum; shorter values are raised to it
    allow_fast_replay: bool = False  # intervals below the minimum, loopback base URLs only (replay demos, tests)
    backoff_cap_factor: float = 4.0


@dataclass
class CollectorStats:
    polls: int = 0  # requests made (successful or not)
    batches: int = 0  # successful polls = spool batches of states
    states: int = 0  # state vectors received in total
    rate_limited: int = 0
    errors: int = 0
    gaps: int = 0
    credits_used: int = 0
    slept_s: float = 0.0
    interval_s: float = 0.0
    stopped_by: str = ""
    fatal_error: str | None = None
    sleeps: list[float] = field(default_factory=list)


def effective_interval(config: CollectorConfig, client: OpenSkyClient) -> float:
    """The poll interval the collector uses: the derived minimum, or the configured one if longer."""
    minimum = poll_interval_s(config.bbox, client.authenticated)
    if config.interval_s is None:
        return minimum
    if config.allow_fast_replay:
        host = urlsplit(client.base_url).hostname or ""
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"allow_fast_replay is only for a loopback replay server, not {host!r}")
        return max(0.0, float(config.interval_s))
    if config.interval_s < minimum:
        log.warning("opensky: interval %.1f s is below the credit budget's minimum %.1f s; using %.1f s",
                    config.interval_s, minimum, minimum)
        return minimum
    return float(config.interval_s)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def passes(error: ApiError) -> bool:
    """Whether a failed poll may succeed later without anyone changing anything: outages, 5xx (also as
    problem+json), bad payloads and an edge's HTML refusal back off; rejected credentials and 4xx stop."""
    if isinstance(error, ProblemDetail):
        return (error.status or 0) >= 500
    return error.transient or isinstance(error, BlockedByEdge)


def _reason(error: ApiError) -> str:
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, SourceUnreachable):
        return "unreachable"
    if isinstance(error, ServerError):
        return "server_error"
    if isinstance(error, BadPayload):
        return "bad_payload"
    if isinstance(error, BlockedByEdge):
        return "blocked_by_edge"
    return "error"


def run_collector(config: CollectorConfig, client: OpenSkyClient, spool: SpoolWriter, *,
                  clock: Callable[[], float] = time.time, sleep: Callable[[float], Any] | None = None,
                  stop_event: threading.Event | None = None, stop_after_polls: int | None = None,
                  stop_after_s: float | None = None, rng: random.Random | None = None) -> CollectorStats:
    """Poll until ``stop_event`` is set, ``stop_after_polls`` requests were made, or ``stop_after_s`` elapsed
    (by ``clock``, epoch seconds). ``sleep`` defaults to waiting on the stop event, so a signal wakes it."""
    stop_event = stop_event or threading.Event()
    wait = sleep if sleep is not None else stop_event.wait
    rng = rng or random.Random()
    bbox = validate_bbox(config.bbox)
    params = states_params(bbox, config.extended, None, config.icao24)
    interval = effective_interval(config, client)
    cost = credits_per_call(bbox)
    stats = CollectorStats(interval_s=interval)
    started = clock()
    deadline = None if stop_after_s is None else started + stop_after_s
    beat: dict[str, Any] = {"state": "starting", "last_poll_at": None, "last_success_at": None, "last_error": None,
                            "credits_used_today": 0, "rate_limit_remaining": None, "next_poll_at": _iso(started),
                            "interval_s": interval, "authenticated": client.authenticated, "polls": 0, "batches": 0}
    credit_day = datetime.fromtimestamp(started, UTC).date()
    gap: dict[str, Any] | None = None  # the open pause: {"start": epoch, "reason": str, "detail": {...}}
    failures = 0
    log.info("opensky: polling %s every %.1f s (%s, %d credit(s) per call)", "globally" if bbox is None else bbox,
             interval, "authenticated" if client.authenticated else "anonymous", cost)

    def heartbeat(**changes: Any) -> None:
        beat.update(changes, polls=stats.polls, batches=stats.batches)
        spool.heartbeat(**beat)

    def stop_reason() -> str | None:
        if stop_event.is_set():
            return "stop_event"
        if stop_after_polls is not None and stats.polls >= stop_after_polls:
            return "polls"
        if deadline is not None and clock() >= deadline:
            return "duration"
        return None

    def pause(seconds: float) -> None:
        """Sleep ``seconds`` (cut at the deadline), in one call."""
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - clock()))
        if seconds > 0 and not stop_event.is_set():
            stats.sleeps.append(seconds)
            stats.slept_s += seconds
            wait(seconds)

    next_poll = started
    heartbeat()
    while (reason := stop_reason()) is None:
        now = clock()
        if now < next_poll:
            pause(next_poll - now)
            continue  # re-check the stop conditions after every sleep
        polled_at = clock()
        stats.polls += 1
        day = datetime.fromtimestamp(polled_at, UTC).date()
        if day != credit_day:
            credit_day, beat["credits_used_today"] = day, 0
        try:
            body, meta = client.get_states(bbox, config.extended, None, config.icao24 or None)
        except RateLimited as error:
            stats.rate_limited += 1
            stats.errors += 1
            retry_after = error.retry_after if error.retry_after is not None else interval
            if gap is None:
                gap = {"start": polled_at, "reason": "rate_limited", "detail": {"retry_after_s": retry_after}}
            else:
                gap["detail"]["retry_after_s"] = retry_after
            next_poll = clock() + retry_after  # exactly the server's wait, from when it answered
            log.warning("opensky: rate limited; waiting %.0f s as the server asked", retry_after)
            heartbeat(state="rate_limited", last_poll_at=_iso(polled_at), last_error=f"rate_limited: {error}",
                      rate_limited_until=_iso(next_poll), next_poll_at=_iso(next_poll),
                      gap_open_since=_iso(gap["start"]))
            pause(max(0.0, next_poll - clock()))
            continue
        except ApiError as error:
            if not passes(error):  # credentials rejected, our own bad request: retrying cannot help
                stats.errors += 1
                stats.fatal_error = str(error)
                log.error("opensky: stopping: %s", error)
                heartbeat(state="failed", last_poll_at=_iso(polled_at), last_error=str(error), next_poll_at=None)
                reason = "fatal"
                break
            stats.errors += 1
            failures += 1
            if gap is None:
                gap = {"start": polled_at, "reason": _reason(error), "detail": {}}
            gap["detail"]["failures"] = failures
            gap["detail"]["last_error"] = _reason(error)
            cap = interval * config.backoff_cap_factor
            delay = max(interval, min(cap, interval * 2 ** (failures - 1) * (1 + rng.uniform(0, 0.25))))
            next_poll = polled_at + delay
            log.warning("opensky: poll failed (%s); next try in %.0f s", error, delay)
            heartbeat(state="backoff", last_poll_at=_iso(polled_at), last_error=str(error),
                      next_poll_at=_iso(next_poll), gap_open_since=_iso(gap["start"]))
            continue
        received = clock()
        received_dt = datetime.fromtimestamp(received, UTC)
        if gap is not None:
            spool.record_gap(datetime.fromtimestamp(gap["start"], UTC), received_dt, gap["reason"], **gap["detail"])
            stats.gaps += 1
            gap = None
        spool.append(KIND, {"params": params, "body": body}, received_at=received_dt)
        spool.flush()
        failures = 0
        stats.batches += 1
        stats.states += meta.states_count
        stats.credits_used += meta.credits
        next_poll = polled_at + interval
        heartbeat(state="polling", last_poll_at=_iso(polled_at), last_success_at=received_dt.isoformat(),
                  last_error=None, credits_used_today=beat["credits_used_today"] + meta.credits,
                  rate_limit_remaining=meta.rate_limit_remaining, rate_limited_until=None,
                  next_poll_at=_iso(next_poll), last_states=meta.states_count, gap_open_since=None)
    if gap is not None:  # stopped while paused: keep the pause on record, still open
        spool.record_gap(datetime.fromtimestamp(gap["start"], UTC), None, gap["reason"], **gap["detail"])
        stats.gaps += 1
    spool.flush()
    stats.stopped_by = reason
    heartbeat(state="failed" if reason == "fatal" else "stopped", next_poll_at=None)
    log.info("opensky: stopped (%s) after %d polls, %d batches", reason, stats.polls, stats.batches)
    return stats


# --- command line ---------------------------------------------------------------------------------------------------
def parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        checked = validate_bbox([float(p) for p in parts])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--bbox expects lamin,lomin,lamax,lomax: {err}") from None
    assert checked is not None
    return checked


def build_parser() -> argparse.ArgumentParser:
    summary = __doc__.split("\n\n")[0].replace("``", "`")
    parser = argparse.ArgumentParser(prog="mindex collect opensky", description=summary)
    parser.add_argument("--data-dir", default=os.environ.get("MINDEX_DATA_DIR") or str(DEFAULT_DATA_DIR),
                        help="spool root (default: $MINDEX_DATA_DIR or ./data)")
    parser.add_argument("--bbox", type=parse_bbox, default=None, help="lamin,lomin,lamax,lomax (default: global)")
    parser.add_argument("--extended", action="store_true", help="ask for the aircraft category (extended=1)")
    parser.add_argument("--icao24", action="append", default=[], help="only this aircraft (repeatable)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--polls", type=int, default=None, help="stop after this many polls")
    parser.add_argument("--interval", type=float, default=None,
                        help="poll interval in seconds (never below the credit budget's minimum)")
    parser.add_argument("--allow-fast-replay", action="store_true",
                        help="allow intervals below the minimum; loopback (replay) base URLs only")
    return parser


def collect_main(argv: Sequence[str] | None = None) -> int:
    """``mindex collect opensky [options]``: 0 when stopped normally, 1 on a fatal error, 2 on bad arguments."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = OpenSkyClient.from_env()
    config = CollectorConfig(bbox=args.bbox, extended=args.extended, icao24=tuple(args.icao24),
                             interval_s=args.interval, allow_fast_replay=args.allow_fast_replay)
    try:
        effective_interval(config, client)
    except ValueError as err:
        print(f"mindex collect opensky: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        spool = SpoolWriter(Path(args.data_dir), SOURCE)
        stats = run_collector(config, client, spool, stop_event=stop, stop_after_polls=args.polls,
                              stop_after_s=args.duration)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        client.close()
    print(f"opensky: {stats.polls} polls, {stats.batches} batches, {stats.states} states, "
          f"{stats.rate_limited} rate-limited, {stats.gaps} gaps, stopped by {stats.stopped_by}", file=sys.stderr)
    return 1 if stats.fatal_error else 0


if __name__ == "__main__":
    raise SystemExit(collect_main())
