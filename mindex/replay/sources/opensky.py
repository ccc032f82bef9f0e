"""OpenSky Network REST replay from the recorded ``/states/all`` snapshots in ``<fixtures>/opensky/*.json``.

Base URL: ``http://127.0.0.1:PORT/api`` (like ``https://opensky-network.org/api``). Served by default.

The recordings (SOURCES.md): a global snapshot (time 1766888059, 6553 state vectors) and a Denver/Boulder bbox
snapshot (time 1615141830, 38 vectors), 17 fields each. Every record is served exactly as recorded: the
snapshot's ``time`` and each vector's ``time_position`` / ``last_contact`` are never shifted, so "every record keeps
its own timestamps as the source sent them"; the collector partitions by its own received time.

``GET /api/states/all`` (API_NOTES.md section 3, openskynetwork/opensky-api docs/free/rest.rst):

* ``time`` (unix s): the latest recorded snapshot whose ``time`` <= the requested time, answered with its own
  recorded ``time``. No such snapshot -> ``{"time": <requested>, "states": null}``. The real API also rounds
  the requested time down to its resolution and ignores ``time`` for anonymous callers; the replay honours
  ``time`` for everyone and does not round (the recorded ``time`` 1766888059 is not on a 10 s grid, so rounding
  would hide it). Not a number -> 400.
* Without ``time``: mode ``latest`` (default) answers the newest recording every time, as the real API does
  between two updates; mode ``rotate`` answers the recordings one after the other, oldest first, wrapping
  around, so a polling collector sees snapshots that differ (their recorded times go back on the wrap).
  Switch with ``source.set_mode(...)`` or ``PUT /_replay/opensky/mode?mode=rotate``.
* ``icao24`` (repeatable, comma lists too; case-insensitive): only those aircraft.
* ``lamin, lomin, lamax, lomax``: all four or none (else 400); a vector matches when its position is inside the
  box, bounds inclusive; vectors without a position never match a bbox. The Denver recording only holds what was
  inside its own box.
* ``extended=1`` (or ``true``): every vector gets an 18th field ``category``. The recordings have 17 fields, so
  it is appended as null (unknown), never invented.
* Nothing matched -> ``states: null`` (as the real API).

Credits and rate limit: every answered ``/states/all`` costs credits by bbox area (1/2/3/4, as
``resources.opensky.credits_per_call``) from a per-caller daily bucket: 400 anonymous, 4000 with a bearer token.
``X-Rate-Limit-Remaining`` is sent on every 200. Enforcement is off by default (counted only); with
``source.enforce_credits(True, retry_after_s=N)``, ``PUT /_replay/opensky/credits?enforce=1&retry_after_s=N``
or env ``MINDEX_REPLAY_OPENSKY_ENFORCE=1`` a call that does not fit answers like production: 429, text/plain
``Too many requests``, ``X-Rate-Limit-Retry-After-Seconds: N`` (default: seconds to the next UTC midnight).
``source.set_remaining(n)`` sets what is left. The generic ``rate_limit`` fault gives the same answer once with
``**VENDOR_429_FAULT`` (e.g. ``srv.set_fault("opensky", "rate_limit", retry_after=38715, count=1,
**VENDOR_429_FAULT)``).

OAuth2: ``POST /auth/realms/opensky-network/protocol/openid-connect/token`` (form ``grant_type=client_credentials,
client_id, client_secret``) answers ``{"access_token", "expires_in": 1800, "token_type": "Bearer", ...}``. Any
non-empty id/secret is accepted unless ``MINDEX_REPLAY_OPENSKY_CLIENT_ID`` / ``..._CLIENT_SECRET`` are set
when the source is created. ``/states/all`` accepts no Authorization (anonymous) or ``Bearer <issued token>``;
an unknown or expired token is a 401 (``source.expire_tokens()`` expires every issued token). Token requests are
counted in ``source.token_requests``. The token URL for a client is ``token_url(srv.base_url("opensky"))``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

from mindex.replay.base import ApiError, ReplaySource, Request, Response, register_source

# The same numbers as resources.opensky (not imported: the replay server does not load Dagster).
ANONYMOUS_DAILY_CREDITS = 400
AUTHENTICATED_DAILY_CREDITS = 4000
TOKEN_LIFETIME_S = 1800

TOKEN_PATH = "/auth/realms/opensky-network/protocol/openid-connect/token"
ENFORCE_ENV = "MINDEX_REPLAY_OPENSKY_ENFORCE"
CLIENT_ID_ENV = "MINDEX_REPLAY_OPENSKY_CLIENT_ID"
CLIENT_SECRET_ENV = "MINDEX_REPLAY_OPENSKY_CLIENT_SECRET"
RATE_LIMIT_BODY = "Too many requests"
RETRY_HEADER = "X-Rate-Limit-Retry-After-Seconds"
REMAINING_HEADER = "X-Rate-Limit-Remaining"
# The production 429 shape, for the generic fault: set_fault("opensky", "rate_limit", retry_after=N, **this).
VENDOR_429_FAULT: dict[str, Any] = {"header": RETRY_HEADER, "body": RATE_LIMIT_BODY, "content_type": "text/plain"}
MODES = ("latest", "rotate")
_BBOX = ("lamin", "lomin", "lamax", "lomax")


def credits_per_call(bbox: tuple[float, float, float, float] | None) -> int:
    """1 credit for <= 25 square degrees, 2 for <= 100, 3 for <= 400, else (and global) 4."""
    if bbox is None:
        return 4
    area = abs(bbox[2] - bbox[0]) * abs(bbox[3] - bbox[1])
    return 1 if area <= 25 else 2 if area <= 100 else 3 if area <= 400 else 4


def token_url(base_url: str) -> str:
    """The replay token endpoint on the same port as ``base_url`` (``http://127.0.0.1:PORT/api``)."""
    root = base_url.rstrip("/")
    if root.endswith("/api"):
        root = root[: -len("/api")]
    return root + TOKEN_PATH


def _seconds_to_utc_midnight() -> int:
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, int((midnight - now).total_seconds()))


@register_source
class OpenSkySource(ReplaySource):
    name = "opensky"
    base_path = "/api"
    datasets = ("states",)
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/api/states/all/?$", "states_all"),
        ("POST", "^" + re.escape(TOKEN_PATH) + "/?$", "token"),
        ("GET", r"^/api(/.*)?$", "not_found"),
    )

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        if volume is not None:
            raise ValueError("opensky has no volume option (its snapshots are the recorded ones)")
        super().__init__(fixtures_dir, volume)
        self.snapshots: list[dict[str, Any]] = []  # {"file", "time", "states"}, oldest first
        for path in sorted(self.directory.glob("*.json")):
            body = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(body, dict) and "states" in body and isinstance(body.get("time"), int):
                self.snapshots.append({"file": path.name, "time": body["time"], "states": body["states"] or []})
        self.snapshots.sort(key=lambda s: s["time"])
        self._lock = threading.Lock()
        self.mode = "latest"
        self._rotation = 0
        self.enforce = os.environ.get(ENFORCE_ENV, "").lower() in ("1", "true", "yes", "on")
        self.retry_after_s: int | None = None
        self._remaining: dict[str, int] = {}  # bucket ("anonymous" / "authenticated") -> credits left
        self.expected_id = os.environ.get(CLIENT_ID_ENV) or None
        self.expected_secret = os.environ.get(CLIENT_SECRET_ENV) or None
        self.expires_in = TOKEN_LIFETIME_S
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.token_requests = 0

    # --- switches --------------------------------------------------------------------------------------------
    def record_count(self, dataset: str) -> int:
        if dataset != "states":
            return super().record_count(dataset)
        return sum(len(s["states"]) for s in self.snapshots)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            self.mode = mode
            self._rotation = 0

    def enforce_credits(self, enforce: bool = True, retry_after_s: int | None = None) -> None:
        with self._lock:
            self.enforce = enforce
            self.retry_after_s = retry_after_s

    def set_remaining(self, credits: int, bucket: str = "anonymous") -> None:
        with self._lock:
            self._remaining[bucket] = int(credits)

    def remaining(self, bucket: str = "anonymous") -> int:
        with self._lock:
            return self._remaining.get(bucket, self._daily(bucket))

    def reset(self) -> None:
        """Back to the defaults: mode latest, full credits, not enforced (unless the env says so), no tokens."""
        with self._lock:
            self.mode = "latest"
            self._rotation = 0
            self.enforce = os.environ.get(ENFORCE_ENV, "").lower() in ("1", "true", "yes", "on")
            self.retry_after_s = None
            self._remaining.clear()
            self._tokens.clear()
            self.token_requests = 0
            self.expires_in = TOKEN_LIFETIME_S

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @staticmethod
    def _daily(bucket: str) -> int:
        return AUTHENTICATED_DAILY_CREDITS if bucket == "authenticated" else ANONYMOUS_DAILY_CREDITS

    def control(self, action: str, request: Request) -> Response | None:
        action = action.strip("/")
        if action not in ("mode", "credits"):
            return None
        try:
            if request.method in ("PUT", "POST"):
                if action == "mode":
                    self.set_mode(request.first("mode") or "latest")
                else:
                    if request.first("remaining") is not None:
                        self.set_remaining(int(request.first("remaining") or 0),
                                           request.first("bucket") or "anonymous")
                    if request.first("enforce") is not None:
                        wait = request.first("retry_after_s")
                        self.enforce_credits((request.first("enforce") or "").lower() in ("1", "true", "yes"),
                                             int(wait) if wait else None)
            elif request.method == "DELETE":
                self.reset()
        except ValueError as err:
            return self.json_response({"error": str(err)}, 400)
        return self.json_response({"mode": self.mode, "enforce": self.enforce, "retry_after_s": self.retry_after_s,
                                   "remaining": {b: self.remaining(b) for b in ("anonymous", "authenticated")}})

    # --- OAuth2 token ----------------------------------------------------------------------------------------
    def token(self, request: Request, _match: re.Match[str]) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        with self._lock:
            self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return self.json_response({"error": "unsupported_grant_type",
                                       "error_description": "Unsupported grant_type"}, 400)
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        valid = bool(client_id and secret)
        if self.expected_id is not None and client_id != self.expected_id:
            valid = False
        if self.expected_secret is not None and secret != self.expected_secret:
            valid = False
        if not valid:
            return self.json_response({"error": "unauthorized_client",
                                       "error_description": "Invalid client or Invalid client credentials"}, 401)
        access = "replay-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[access] = time.monotonic() + self.expires_in
        return self.json_response({"access_token": access, "expires_in": self.expires_in, "refresh_expires_in": 0,
                                   "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"})

    def _bucket(self, request: Request) -> str:
        header = request.headers.get("authorization")
        if header is None:
            return "anonymous"
        scheme, _, token = header.partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or time.monotonic() >= expiry:
            raise ApiError(401, "Unauthorized")
        return "authenticated"

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        if status in (401, 429):  # production answers these with a bare text body
            return Response(status, message.encode("utf-8"), "text/plain")
        return super().error_response(status, message, content_type)

    # --- /states/all -----------------------------------------------------------------------------------------
    def _snapshot(self, request: Request) -> tuple[int, list[list[Any]] | None]:
        raw_time = request.first("time")
        if raw_time is not None and raw_time.strip() != "":
            try:
                wanted = int(float(raw_time))
            except ValueError:
                raise ApiError(400, f"Invalid value for time: {raw_time}") from None
            candidates = [s for s in self.snapshots if s["time"] <= wanted]
            if not candidates:
                return wanted, None
            return candidates[-1]["time"], candidates[-1]["states"]
        if not self.snapshots:
            return int(time.time()), None
        with self._lock:
            if self.mode == "rotate":
                snap = self.snapshots[self._rotation % len(self.snapshots)]
                self._rotation += 1
            else:
                snap = self.snapshots[-1]
        return snap["time"], snap["states"]

    @staticmethod
    def _bbox(request: Request) -> tuple[float, float, float, float] | None:
        given = {name: request.first(name) for name in _BBOX}
        present = [name for name, value in given.items() if value is not None and value.strip() != ""]
        if not present:
            return None
        if len(present) != 4:
            raise ApiError(400, f"bounding box needs all of lamin, lomin, lamax, lomax (got {', '.join(present)})")
        try:
            lamin, lomin, lamax, lomax = (float(given[name] or "") for name in _BBOX)
        except ValueError:
            raise ApiError(400, "bounding box values must be numbers") from None
        return lamin, lomin, lamax, lomax

    def states_all(self, request: Request, _match: re.Match[str]) -> Response:
        bucket = self._bucket(request)
        bbox = self._bbox(request)
        wanted_icao = {code.lower() for code in request.all("icao24")}
        extended = (request.first("extended") or "").strip().lower() in ("1", "true")
        cost = credits_per_call(bbox)
        with self._lock:
            left = self._remaining.get(bucket, self._daily(bucket))
            if self.enforce and left < cost:
                wait = self.retry_after_s if self.retry_after_s is not None else _seconds_to_utc_midnight()
                return Response(429, RATE_LIMIT_BODY.encode("utf-8"), "text/plain", {RETRY_HEADER: str(wait)})
            left = max(0, left - cost)
            self._remaining[bucket] = left
        snapshot_time, states = self._snapshot(request)
        out: list[list[Any]] = []
        for state in states or []:
            if wanted_icao and str(state[0]).lower() not in wanted_icao:
                continue
            if bbox is not None:
                lon, lat = state[5], state[6]
                if lat is None or lon is None:
                    continue
                if not (bbox[0] <= lat <= bbox[2] and bbox[1] <= lon <= bbox[3]):
                    continue
            out.append([*state, None] if extended and len(state) == 17 else state)
        body = {"time": snapshot_time, "states": out or None}
        return self.json_response(body, headers={REMAINING_HEADER: str(left)})

    def not_found(self, request: Request, _match: re.Match[str]) -> Response:
        raise ApiError(404, "Not Found")
