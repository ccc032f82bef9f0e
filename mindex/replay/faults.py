"""Fault injection for the replay server: the failure shapes our sources really produce (FAILURE_CASES
C05-C07, C11).

Each fault is per source. ``count`` = the next N API requests to that source get the fault, then it clears
itself; no ``count`` = until cleared. The ``/_replay/*`` control paths are never faulted.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

FAULT_KINDS: tuple[str, ...] = (
    "down",
    "slow",
    "rate_limit",
    "http_5xx",
    "problem_json",
    "truncated",
    "non_json",
    "html_error",
)

# Open-Meteo's 429 body (case C05).
DEFAULT_RATE_LIMIT_BODY: dict[str, Any] = {
    "error": True,
    "reason": "Hourly API request limit exceeded. Please try again in the next hour.",
}
DEFAULT_PROBLEM_TYPE = "https://api.weather.gov/problems/UnexpectedProblem"

# Allowed parameters and their defaults, per kind. ``count`` None = until cleared.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "down": {},
    "slow": {"delay_s": 1.0, "count": None},
    "rate_limit": {
        "retry_after": None,
        "count": None,
        "header": "Retry-After",
        "body": DEFAULT_RATE_LIMIT_BODY,
        "content_type": None,
    },
    "http_5xx": {"status": 503, "count": 3, "body": None, "retry_after": None},
    "problem_json": {
        "status": 503,
        "type": DEFAULT_PROBLEM_TYPE,
        "title": None,
        "detail": None,
        "count": None,
    },
    "truncated": {"count": None},
    "non_json": {"count": None},
    "html_error": {"status": 403, "count": None},
}


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # requests left before it clears itself; None = until cleared

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "remaining": self.remaining}


def make_fault(kind: str, **params: Any) -> Fault:
    """Validate ``kind`` and ``params`` (unknown names are an error, so typos don't silently do nothing)."""
    if kind not in _DEFAULTS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    allowed = _DEFAULTS[kind]
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"fault {kind!r} takes {sorted(allowed) or 'no parameters'}, not {sorted(unknown)}")
    merged = {**allowed, **params}
    count = merged.pop("count", None)
    if count is not None:
        count = int(count)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
    if "status" in merged:
        merged["status"] = int(merged["status"])
        if not 100 <= merged["status"] <= 599:
            raise ValueError(f"status must be an HTTP status, got {merged['status']}")
    if kind == "slow":
        merged["delay_s"] = float(merged["delay_s"])
        if merged["delay_s"] < 0:
            raise ValueError("delay_s must be >= 0")
    if kind == "rate_limit" and merged["retry_after"] is not None:
        merged["retry_after"] = int(merged["retry_after"])
    return Fault(kind, merged, count)


class FaultState:
    """The current fault of one source, consumed atomically per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: Fault | None = None

    def set(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = fault

    def peek(self) -> Fault | None:
        with self._lock:
            return self._fault

    def take(self) -> Fault | None:
        """The fault that applies to this request, counting it against ``count``."""
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
            return fault


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def fault_response(fault: Fault) -> tuple[int, bytes, str, dict[str, str]] | None:
    """(status, body, content type, extra headers) for faults that replace the answer; None for the others
    (``slow`` and ``truncated`` change the real answer, ``down`` never answers)."""
    p = fault.params
    if fault.kind == "rate_limit":
        headers = {} if p["retry_after"] is None else {p["header"]: str(p["retry_after"])}
        body = p["body"]
        if isinstance(body, str):
            return 429, body.encode("utf-8"), p["content_type"] or "text/plain; charset=utf-8", headers
        return 429, _json_bytes(body), p["content_type"] or "application/json", headers
    if fault.kind == "http_5xx":
        status = p["status"]
        body = p["body"] if p["body"] is not None else {"status": status, "error": _phrase(status)}
        headers = {} if p["retry_after"] is None else {"Retry-After": str(p["retry_after"])}
        if isinstance(body, str):
            return status, body.encode("utf-8"), "text/plain; charset=utf-8", headers
        return status, _json_bytes(body), "application/json", headers
    if fault.kind == "problem_json":
        status = p["status"]
        problem_type = p["type"]
        correlation_id = secrets.token_hex(8)
        problem = {
            "correlationId": correlation_id,
            "title": p["title"] or _title_from_type(problem_type),
            "type": problem_type,
            "status": status,
            "detail": p["detail"] or "An unexpected problem has occurred.",
            "instance": f"https://api.weather.gov/requests/{correlation_id}",
        }
        return status, _json_bytes(problem), "application/problem+json", {}
    if fault.kind == "non_json":
        return 200, b"not json at all", "application/json", {}
    if fault.kind == "html_error":
        # The CDN block page of case C06 (Akamai "Access Denied").
        reference = f"18.{secrets.token_hex(4)}.{int(time.time())}.{secrets.token_hex(4)}"
        html = (
            "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
            "You don't have permission to access this resource on this server.<P>\n"
            f"Reference #{reference}\n</BODY>\n</HTML>\n"
        )
        return p["status"], html.encode("utf-8"), "text/html", {}
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _title_from_type(problem_type: str) -> str:
    """``.../problems/UnexpectedProblem`` -> ``Unexpected Problem`` (how NWS titles its problem types)."""
    slug = problem_type.rstrip("/").rsplit("/", 1)[-1]
    words = []
    for ch in slug:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch)
    return "".join(words) or "Unexpected Problem"
