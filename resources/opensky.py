"""OpenSky Network REST client: ``GET /states/all``, anonymous or OAuth2 client credentials (case C11).

* Base URL from ``OPENSKY_BASE_URL`` (default ``https://opensky-network.org/api``).
* Anonymous by default. With ``OPENSKY_CLIENT_ID`` and ``OPENSKY_CLIENT_SECRET`` the client fetches a bearer token
  from ``OPENSKY_TOKEN_URL`` (default: OpenSky's Keycloak token endpoint) with ``grant_type=client_credentials``,
  caches it and fetches a new one ``token_refresh_margin_s`` before it expires (tokens live 30 min, so after
  25 min). A 401 on ``/states/all`` while authenticated drops the token and retries once with a fresh one. The
  secret and the token are never logged, never put in an error message and never shown in the resource's repr.
* Status is checked before the body is parsed (the shared ``ApiClient``): a 429 has a text/plain body
  ("Too many requests") and ``X-Rate-Limit-Retry-After-Seconds`` (often hours). It raises ``RateLimited`` with
  ``retry_after`` (seconds) and is NOT retried inside the client when the wait is longer than ``max_retry_after``
  (10 s by default): the collector sleeps, or the sensor skips its ticks. A 429 without a wait header is not
  retried either. ``X-Rate-Limit-Remaining`` is read into ``StatesMeta.rate_limit_remaining`` when present.
* ``states: null`` is a valid answer (nothing matched): zero rows, not an error.

Credits and intervals (openskynetwork/opensky-api docs/free/rest.rst): a ``/states/all`` call costs 1 credit for a
bbox of at most 25 square degrees, 2 up to 100, 3 up to 400, 4 above or global; anonymous callers get 400 credits a
day, standard users 4000, and the time resolution is 10 s (anonymous) / 5 s (authenticated). ``poll_interval_s``
turns that into the shortest interval that stays inside the daily budget, never below 10 s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from resources.errors import ApiError, AuthError, BadPayload, RateLimited, SourceUnreachable
from resources.http import ApiClient, ApiResponse

OPENSKY_BASE_URL = "https://opensky-network.org/api"
OPENSKY_TOKEN_URL = "https://auth.opensky-network.org/auth/realms/opensky-network/protocol/openid-connect/token"
STATES_PATH = "states/all"

ANONYMOUS_DAILY_CREDITS = 400
AUTHENTICATED_DAILY_CREDITS = 4000
ANONYMOUS_RESOLUTION_S = 10
AUTHENTICATED_RESOLUTION_S = 5
MIN_POLL_INTERVAL_S = 10  # case C11: never poll faster than this, whoever we are
TOKEN_LIFETIME_S = 1800  # "Tokens expire after 30 minutes"

Bbox = tuple[float, float, float, float]  # (lamin, lomin, lamax, lomax), degrees


# --- pure helpers -----------------------------------------------------------------------------------------------
def validate_bbox(bbox: Sequence[float] | None) -> Bbox | None:
    """``(lamin, lomin, lamax, lomax)`` as floats, checked (ranges, min <= max); None stays None (global)."""
    if bbox is None:
        return None
    if len(bbox) != 4:
        raise ValueError(f"bbox needs 4 numbers (lamin, lomin, lamax, lomax), got {len(bbox)}")
    lamin, lomin, lamax, lomax = (float(v) for v in bbox)
    if not (-90 <= lamin <= lamax <= 90):
        raise ValueError(f"bbox latitudes must satisfy -90 <= lamin <= lamax <= 90, got {lamin}, {lamax}")
    if not (-180 <= lomin <= lomax <= 180):
        raise ValueError(f"bbox longitudes must satisfy -180 <= lomin <= lomax <= 180, got {lomin}, {lomax}")
    return lamin, lomin, lamax, lomax


def bbox_area_sq_deg(bbox: Sequence[float] | None) -> float | None:
    checked = validate_bbox(bbox)
    if checked is None:
        return None
    lamin, lomin, lamax, lomax = checked
    return (lamax - lamin) * (lomax - lomin)


def credits_per_call(bbox: Sequence[float] | None) -> int:
    """Credits one ``/states/all`` call costs: <= 25 sq deg -> 1, <= 100 -> 2, <= 400 -> 3, larger or global -> 4."""
    area = bbox_area_sq_deg(bbox)
    if area is None:
        return 4
    if area <= 25:
        return 1
    if area <= 100:
        return 2
    if area <= 400:
        return 3
    return 4


def daily_credits(authenticated: bool) -> int:
    return AUTHENTICATED_DAILY_CREDITS if authenticated else ANONYMOUS_DAILY_CREDITS


def time_resolution_s(authenticated: bool) -> int:
    return AUTHENTICATED_RESOLUTION_S if authenticated else ANONYMOUS_RESOLUTION_S


def poll_interval_s(bbox: Sequence[float] | None, authenticated: bool,
                    min_interval_s: float = MIN_POLL_INTERVAL_S) -> float:
    """The shortest poll interval that fits the daily credit budget: max(10 s, time resolution,
    86400 * credits_per_call / daily credits). Anonymous global: 864 s; anonymous bbox <= 25 sq deg: 216 s;
    authenticated global: 86.4 s; authenticated small bbox: 21.6 s. ``min_interval_s`` below 10 is ignored."""
    floor = max(float(MIN_POLL_INTERVAL_S), float(min_interval_s), float(time_resolution_s(authenticated)))
    return max(floor, 86400.0 * credits_per_call(bbox) / daily_credits(authenticated))


def states_params(bbox: Sequence[float] | None = None, extended: bool = False, time: int | None = None,
                  icao24: Sequence[str] | None = None) -> dict[str, Any]:
    """Query parameters of ``/states/all`` (``icao24`` is a list: httpx repeats the parameter)."""
    params: dict[str, Any] = {}
    checked = validate_bbox(bbox)
    if checked is not None:
        params.update(zip(("lamin", "lomin", "lamax", "lomax"), checked, strict=True))
    if time is not None:
        params["time"] = int(time)
    if icao24:
        params["icao24"] = [code.strip().lower() for code in icao24]
    if extended:
        params["extended"] = 1
    return params


@dataclass(frozen=True)
class StatesMeta:
    """What came with a ``/states/all`` answer besides the body."""

    url: str
    params: dict[str, Any]
    status: int
    fetched_at: str
    credits: int  # what this call cost, by the docs' area rule
    authenticated: bool
    rate_limit_remaining: int | None  # X-Rate-Limit-Remaining, when the server sent it
    states_count: int  # 0 when states is null


# --- the client -------------------------------------------------------------------------------------------------
class OpenSkyClient(ApiClient):
    api_name: str = "opensky"
    base_url: str = OPENSKY_BASE_URL
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    token_url: str = OPENSKY_TOKEN_URL
    token_refresh_margin_s: float = 300.0  # fetch a new token this long before expiry (30 min -> after 25 min)
    # A late snapshot is superseded by the next poll: few retries, and a 429 is not retried unless the wait is short.
    max_retries: int = 2
    max_retry_after: float = 10.0

    _token: str | None = PrivateAttr(default=None)
    _token_refresh_at: float = PrivateAttr(default=0.0)
    _token_fetches: int = PrivateAttr(default=0)
    _clock: Callable[[], float] = PrivateAttr(default=time.time)
    _last_remaining: int | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, **overrides: Any) -> OpenSkyClient:
        """Configured from OPENSKY_BASE_URL, OPENSKY_CLIENT_ID, OPENSKY_CLIENT_SECRET, OPENSKY_TOKEN_URL and
        MINDEX_CONTACT; ``overrides`` win."""
        config: dict[str, Any] = {
            "base_url": os.environ.get("OPENSKY_BASE_URL") or OPENSKY_BASE_URL,
            "token_url": os.environ.get("OPENSKY_TOKEN_URL") or OPENSKY_TOKEN_URL,
            "client_id": os.environ.get("OPENSKY_CLIENT_ID") or None,
            "client_secret": os.environ.get("OPENSKY_CLIENT_SECRET") or None,
        }
        if os.environ.get("MINDEX_CONTACT"):
            config["contact"] = os.environ["MINDEX_CONTACT"]
        config.update(overrides)
        return cls(**config)

    def __repr__(self) -> str:  # never the secret or the token
        return (f"OpenSkyClient(base_url={self.base_url!r}, authenticated={self.authenticated}, "
                f"client_id={self.client_id!r})")

    __str__ = __repr__

    @property
    def authenticated(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def token_fetches(self) -> int:
        """How many tokens were fetched so far (tests and the heartbeat)."""
        return self._token_fetches

    def with_clock(self, clock: Callable[[], float]) -> OpenSkyClient:
        """Use another clock (epoch seconds) for token expiry (tests use a fake one)."""
        self._clock = clock
        return self

    def poll_interval_s(self, bbox: Sequence[float] | None = None) -> float:
        return poll_interval_s(bbox, self.authenticated)

    # -- OAuth2 client credentials ------------------------------------------------------------------------------
    def _access_token(self) -> str | None:
        if not self.authenticated:
            return None
        if self._token is None or self._clock() >= self._token_refresh_at:
            self._fetch_token()
        return self._token

    def invalidate_token(self) -> None:
        self._token = None
        self._token_refresh_at = 0.0

    def _fetch_token(self) -> None:
        form = {"grant_type": "client_credentials", "client_id": self.client_id or "",
                "client_secret": self.client_secret or ""}
        requested_at = self._clock()
        try:
            response = self._http().post(self.token_url, data=form,
                                         headers={"Accept": "application/json"})
        except httpx.TransportError as exc:  # TimeoutException is a TransportError
            raise SourceUnreachable(self.api_name, f"token endpoint unreachable: {exc.__class__.__name__}",
                                    url=self.token_url) from None
        status = response.status_code
        if status in (400, 401, 403):
            raise AuthError(self.api_name, f"token request rejected ({_oauth_error(response.text)}); check "
                                           "OPENSKY_CLIENT_ID / OPENSKY_CLIENT_SECRET", url=self.token_url,
                            status=status)
        if status == 429 or status >= 500:
            error_cls = RateLimited if status == 429 else SourceUnreachable
            raise error_cls(self.api_name, "token endpoint answered an error", url=self.token_url, status=status)
        if status >= 300:
            raise AuthError(self.api_name, "token request failed", url=self.token_url, status=status)
        try:
            body = json.loads(response.text)
        except json.JSONDecodeError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadPayload(self.api_name, "token response without access_token", url=self.token_url,
                             status=status)
        try:
            expires_in = float(body.get("expires_in") or TOKEN_LIFETIME_S)
        except (TypeError, ValueError):
            expires_in = float(TOKEN_LIFETIME_S)
        self._token = token
        self._token_refresh_at = requested_at + max(0.0, expires_in - self.token_refresh_margin_s)
        self._token_fetches += 1

    # -- requests -----------------------------------------------------------------------------------------------
    def _wait_before_retry(self, error: ApiError, attempt: int) -> float:
        if isinstance(error, RateLimited) and error.retry_after is None:
            raise error  # a 429 without a wait header: the caller backs off on its own interval
        return super()._wait_before_retry(error, attempt)

    def _interpret(self, response: httpx.Response, url: str, params: dict[str, Any]) -> ApiResponse:
        remaining = response.headers.get("x-rate-limit-remaining")
        try:
            self._last_remaining = int(float(remaining)) if remaining not in (None, "") else None
        except ValueError:
            self._last_remaining = None
        return super()._interpret(response, url, params)

    def get_states(self, bbox: Sequence[float] | None = None, extended: bool = False, time: int | None = None,
                   icao24: Sequence[str] | None = None) -> tuple[dict[str, Any], StatesMeta]:
        """``GET /states/all`` -> (raw JSON body, meta). ``states`` may be null (no aircraft matched)."""
        params = states_params(bbox, extended, time, icao24)
        try:
            response = self._get_authorized(params)
        except AuthError:
            if not self.authenticated:
                raise
            self.invalidate_token()  # "a 401 means it expired": one more try with a fresh token
            response = self._get_authorized(params)
        body = response.payload
        if not isinstance(body, dict) or "states" not in body:
            raise BadPayload(self.api_name, "response is not an object with a states field", url=response.raw.url,
                             status=response.raw.status)
        states = body.get("states")
        if states is not None and not isinstance(states, list):
            raise BadPayload(self.api_name, "states is neither a list nor null", url=response.raw.url,
                             status=response.raw.status)
        meta = StatesMeta(url=response.raw.url, params=params, status=response.raw.status,
                          fetched_at=response.raw.fetched_at, credits=credits_per_call(bbox),
                          authenticated=self.authenticated, rate_limit_remaining=self._last_remaining,
                          states_count=len(states or []))
        return body, meta

    def _get_authorized(self, params: dict[str, Any]) -> ApiResponse:
        token = self._access_token()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self.get_json(STATES_PATH, params, headers=headers)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if bool(self.client_id) != bool(self.client_secret):
            context.log.warning("opensky: only one of client id / client secret is set; polling anonymously")


def _oauth_error(text: str) -> str:
    """The OAuth ``error`` code of a token error body (never the description, never echoing the request)."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return "no error code"
    code = body.get("error") if isinstance(body, dict) else None
    return str(code)[:60] if code else "no error code"
