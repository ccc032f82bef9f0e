"""The HTTP client layer every source shares.

``ApiClient`` is a ``ConfigurableResource`` on httpx with connect/read timeouts, retries with exponential
backoff and full jitter on connection errors, timeouts, 429 and 5xx, ``Retry-After`` and vendor rate-limit
headers honoured, a process-wide request budget, a descriptive User-Agent, and typed errors. Status and
content type are checked before any body is parsed, so an HTML error page or a problem+json body never
reaches a normalizer as data.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
from pydantic import PrivateAttr

from resources.budget import BudgetLimits, RequestBudget, budget_for
from resources.errors import (
    ApiError,
    AuthError,
    BadPayload,
    BlockedByEdge,
    ClientRequestError,
    EndpointRetired,
    ProblemDetail,
    RateLimited,
    ServerError,
    SourceUnreachable,
)

USER_AGENT_PRODUCT = "mycosoft-mindex/0.1 (+https://github.com/mycosoft/mindex)"
RETRYABLE_STATUS = {500, 502, 503, 504}
# Vendor headers that say how long to wait, in seconds (case C11: OpenSky; OpenAQ sends x-ratelimit-reset).
WAIT_HEADERS = ("retry-after", "x-rate-limit-retry-after-seconds", "x-ratelimit-reset")
# problem+json types that are not transient: retrying them only burns budget (case C07).
NON_RETRYABLE_PROBLEMS = {"ForecastGridExpired", "InvalidPoint", "NotFound", "BadRequest"}
# A 429 body that names a quota period: wait for the period instead of retrying within seconds (case C05).
QUOTA_WORDS = re.compile(r"\b(minute|minutely|hour|hourly|day|daily)\b[^.]{0,40}\blimit", re.IGNORECASE)
QUOTA_WAITS = {"minute": 60.0, "minutely": 60.0, "hour": 3600.0, "hourly": 3600.0, "day": 86400.0,
               "daily": 86400.0}


@dataclass(frozen=True)
class RawPage:
    """One raw response as received: kept compressed beside the partition so it can be rebuilt offline."""

    url: str
    params: dict[str, Any]
    status: int
    content_type: str
    fetched_at: str
    text: str

    def to_json_line(self) -> str:
        return json.dumps(
            {"url": self.url, "params": self.params, "status": self.status, "content_type": self.content_type,
             "fetched_at": self.fetched_at, "body": self.text},
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class ApiResponse:
    payload: Any
    raw: RawPage


def parse_wait_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or a vendor header; None when nobody said."""
    for name in WAIT_HEADERS:
        value = headers.get(name)
        if value is None or value.strip() == "":
            continue
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return None


def _html_title(text: str) -> str:
    match = re.search(r"<title>(.*?)</title>", text, flags=re.IGNORECASE | re.DOTALL)
    return (match.group(1).strip() if match else text[:80].strip()) or "HTML page"


class ApiClient(dg.ConfigurableResource):
    """Base for every source's client. Subclasses add endpoints; they never call httpx themselves."""

    api_name: str
    base_url: str
    contact: str = "mindex-operator@example.invalid"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    # A 429 asking us to wait longer than this ends the run as "rate-limited, retry later" (case C05/C11).
    max_retry_after: float = 300.0
    per_second: float | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    extra_headers: dict[str, str] = {}

    _client: httpx.Client | None = PrivateAttr(default=None)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    # -- plumbing -----------------------------------------------------------------------------------------
    @property
    def user_agent(self) -> str:
        return f"{USER_AGENT_PRODUCT} ({self.contact})"

    @property
    def budget(self) -> RequestBudget:
        return budget_for(self.api_name, BudgetLimits(self.per_second, self.per_minute, self.per_hour, self.per_day))

    def with_sleep(self, sleep: Callable[[float], None]) -> ApiClient:
        """Use another sleep function (tests use a fake clock, so retries take no wall time)."""
        self._sleep = sleep
        return self

    def _http(self) -> httpx.Client:
        if self._client is None:
            timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
            headers = {"User-Agent": self.user_agent, "Accept": "application/json", **self.extra_headers}
            self._client = httpx.Client(timeout=timeout, headers=headers, follow_redirects=True)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def url_for(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    # -- the one request path -----------------------------------------------------------------------------
    def get_json(self, path: str, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> ApiResponse:
        url = self.url_for(path)
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        last_error: ApiError | None = None
        for attempt in range(self.max_retries + 1):
            self.budget.acquire()
            try:
                response = self._http().get(url, params=clean_params, headers=headers)
            except httpx.TimeoutException as exc:
                last_error = SourceUnreachable(self.api_name, f"timed out: {exc.__class__.__name__}", url=url)
            except httpx.TransportError as exc:
                # Refused, reset, dropped mid-body, protocol errors: the source is (for now) unreachable.
                kind = "cannot connect" if isinstance(exc, httpx.ConnectError) else "connection failed"
                last_error = SourceUnreachable(self.api_name, f"{kind}: {exc.__class__.__name__}", url=url)
            except httpx.DecodingError as exc:
                last_error = BadPayload(self.api_name, f"body could not be decoded: {exc}", url=url)
            except httpx.TooManyRedirects as exc:
                raise ClientRequestError(self.api_name, f"redirect loop: {exc}", url=url) from None
            else:
                try:
                    return self._interpret(response, url, clean_params)
                except ApiError as exc:
                    if not exc.transient:
                        raise
                    last_error = exc
            if attempt == self.max_retries:
                break
            wait = self._wait_before_retry(last_error, attempt)
            self._sleep(wait)
        assert last_error is not None
        raise last_error

    def _wait_before_retry(self, error: ApiError, attempt: int) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                raise error  # hourly/daily quota or a long outage: end the run as "retry later", don't spin
            return retry_after + random.uniform(0, 0.1)
        return self._backoff(attempt)

    def _interpret(self, response: httpx.Response, url: str, params: dict[str, Any]) -> ApiResponse:
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        text = response.text

        # Status first: a 429, 401 or 410 means the same whatever the body looks like (problem+json included).
        if status == 429:
            wait = parse_wait_seconds(response.headers)
            quota = QUOTA_WORDS.search(text[:500])
            if wait is None and quota:
                # Case C05: "Hourly API request limit exceeded" — retrying within seconds cannot help.
                wait = QUOTA_WAITS[quota.group(1).lower()]
            raise RateLimited(self.api_name, f"too many requests{'' if wait is None else f'; wait {wait:.0f} s'}"
                              + (f" ({quota.group(0)})" if quota else ""), retry_after=wait, url=url, status=status)
        if status == 401:
            raise AuthError(self.api_name, "missing or invalid API key / credentials", url=url, status=status)
        if status == 410:
            raise EndpointRetired(self.api_name, "endpoint retired (410 Gone); migrate to the current API",
                                  url=url, status=status)
        if content_type == "application/problem+json" or (status >= 400 and '"correlationId"' in text[:2000]):
            self._raise_problem(response, url, text)
        if status == 403 and "html" in content_type:
            raise BlockedByEdge(self.api_name, f"blocked by an HTML error page: {_html_title(text)!r}",
                                url=url, status=status)
        if status in RETRYABLE_STATUS or status >= 500:
            error = ServerError(self.api_name, f"server error: {text[:200]!r}", url=url, status=status)
            error.retry_after = parse_wait_seconds(response.headers)  # a 503 may say when to come back
            raise error
        if status >= 400:
            raise ClientRequestError(self.api_name, f"request rejected: {text[:300]!r}", url=url, status=status)
        if "html" in content_type or text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
            raise BadPayload(self.api_name, f"HTML page where JSON was expected: {_html_title(text)!r}",
                             url=url, status=status)
        if "json" not in content_type:
            raise BadPayload(self.api_name, f"unexpected content type {content_type or 'none'!r}", url=url,
                             status=status)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadPayload(self.api_name, f"body is not valid JSON ({exc.msg} at char {exc.pos} of "
                                            f"{len(text)}; truncated?)", url=url, status=status) from None
        raw = RawPage(url=url, params=params, status=status, content_type=content_type,
                      fetched_at=datetime.now(UTC).isoformat(), text=text)
        return ApiResponse(payload=payload, raw=raw)

    def _raise_problem(self, response: httpx.Response, url: str, text: str) -> None:
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        error = ProblemDetail(
            self.api_name, problem_type=body.get("type"), title=body.get("title"), detail=body.get("detail"),
            correlation_id=body.get("correlationId"), status=body.get("status") or response.status_code, url=url,
        )
        error.transient = response.status_code >= 500 and error.short_type not in NON_RETRYABLE_PROBLEMS
        raise error
