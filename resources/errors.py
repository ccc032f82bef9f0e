"""Typed errors for every way an API call can fail.

Sensors decide between "fall back to the cache", "retry later" and "alert a person" from the type alone, so
each failure kind has its own class and nobody parses messages.
"""

from __future__ import annotations

import re

# How an error's text carries the server's wait, for code that only has the text (a failed run's stored error).
_RETRY_AFTER = re.compile(r"\[retry after (\d+) s\]")


class ApiError(Exception):
    """Base class. ``transient`` says whether a later attempt may succeed without anyone changing anything."""

    transient: bool = False
    retry_after: float | None = None  # seconds, when the server (or our budget) said when to come back

    def __init__(self, api: str, message: str, *, url: str | None = None, status: int | None = None):
        self.api = api
        self.url = url
        self.status = status
        where = f" ({url})" if url else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{api}: {code}{message}{where}")

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.retry_after is None else f"{text} [retry after {self.retry_after:.0f} s]"


def retry_after_in(text: str) -> float | None:
    """The wait an ``ApiError``'s text carries (``[retry after N s]``), or None."""
    found = _RETRY_AFTER.search(text or "")
    return float(found.group(1)) if found else None


class SourceUnreachable(ApiError):
    """Connection refused, DNS failure or timeout, after retries."""

    transient = True


class ServerError(ApiError):
    """5xx answers that stayed 5xx after retries. ``retry_after`` when the server said when to come back."""

    transient = True


class RateLimited(ApiError):
    """429, or our own request budget is spent. ``retry_after`` is seconds, when anyone said."""

    transient = True

    def __init__(self, api: str, message: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(api, message, **kw)


class AuthError(ApiError):
    """401: missing or invalid credentials. Never retried."""


class EndpointRetired(ApiError):
    """410 Gone: the endpoint was retired (OpenAQ v1/v2). Never retried."""


class BlockedByEdge(ApiError):
    """403 with an HTML body: a CDN refused us (often the User-Agent). A blocking event: alert, back off."""


class ProblemDetail(ApiError):
    """An ``application/problem+json`` answer (RFC 7807), e.g. NWS ``ForecastGridExpired``."""

    def __init__(self, api: str, *, problem_type: str | None, title: str | None, detail: str | None,
                 correlation_id: str | None, status: int | None, url: str | None = None):
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.correlation_id = correlation_id
        super().__init__(api, f"problem {problem_type or 'about:blank'}: {title or ''} {detail or ''}".strip(),
                         url=url, status=status)

    @property
    def short_type(self) -> str:
        return (self.problem_type or "").rstrip("/").rsplit("/", 1)[-1]


class BadPayload(ApiError):
    """A 200 whose body is not what was asked for: HTML instead of JSON, invalid or truncated JSON, wrong shape."""

    transient = True


class ClientRequestError(ApiError):
    """Another 4xx: our request is wrong (e.g. GBIF's deep-paging cap). A planning error, never retried."""


class DeepPagingCapExceeded(ApiError):
    """A window holds more records than offset paging can reach, and it cannot be split any further."""
