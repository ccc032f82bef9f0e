"""The contract between the replay HTTP server and one source (iNaturalist, GBIF, later NWS, OpenAQ, ...).

Adding a source is one new module in ``mindex/replay/sources/`` that defines a ``ReplaySource`` subclass and
decorates it with ``@register_source``. The server discovers every module in that package, and serves each
registered source whose fixture sub-directory exists, on its own loopback port.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]  # every value of every parameter, blank values kept
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names; the log keeps User-Agent/Accept

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        """Every value of a repeatable parameter, comma lists expanded (``a,b`` and ``x=a&x=b`` both work)."""
        out: list[str] = []
        for value in self.query.get(name, []):
            out.extend(part.strip() for part in value.split(",") if part.strip())
        return out


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Raised inside a handler to answer with an error response built by the source.

    ``payload``: answer with exactly this JSON body (and ``content_type`` if given) instead of the source's
    ``error_response`` shape, for APIs whose error bodies vary by kind (FastAPI's 422 list, NWS problems)."""

    def __init__(
        self, status: int, message: str, content_type: str | None = None, payload: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.content_type = content_type
        self.payload = payload


Handler = Callable[[Request, "re.Match[str]"], Response]


class ReplaySource:
    """Base class for one replayed API. Subclasses set the class attributes and list their ROUTES."""

    name: ClassVar[str] = ""
    fixture_subdir: ClassVar[str] = ""  # defaults to ``name``
    base_path: ClassVar[str] = "/v1"  # what base_url() ends with
    json_content_type: ClassVar[str] = "application/json"
    datasets: ClassVar[tuple[str, ...]] = ()
    # False: served only when asked for by name (``ReplayServer(..., sources=[...])``) or with ``"all"``.
    served_by_default: ClassVar[bool] = True
    # (method, regex on the path, method name). First match wins.
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        self.fixtures_dir = fixtures_dir
        self.directory = fixtures_dir / (self.fixture_subdir or self.name)
        self.volume = volume
        # What ReplayServer.base_url() returns for this source; set by the server once its port is bound.
        self.local_base_url: str | None = None
        self._routes = [
            (method, re.compile(pattern), getattr(self, handler)) for method, pattern, handler in self.ROUTES
        ]

    # --- for subclasses -------------------------------------------------------------------------------------
    def record_count(self, dataset: str) -> int:
        raise KeyError(
            f"{self.name} has no dataset {dataset!r} (known: {', '.join(self.datasets) or 'none'})"
        )

    def control(self, action: str, request: Request) -> Response | None:
        """Answer ``/_replay/<name>/<action>`` (source-specific switches, e.g. NWS's replaceable alert feed).
        None = unknown action (the server answers 404)."""
        return None

    def request_base_url(self, request: Request) -> str:
        """The base URL the client used (its ``Host`` header), else the server's; for links in bodies."""
        host = request.headers.get("host")
        if host:
            return f"http://{host}{self.base_path}"
        return self.local_base_url or self.base_path

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        if content_type and not content_type.startswith("application/json"):
            return Response(status, message.encode("utf-8"), content_type)
        return self.json_response({"error": message, "status": status}, status)

    # --- helpers --------------------------------------------------------------------------------------------
    def json_response(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return Response(status, text.encode("utf-8"), self.json_content_type, dict(headers or {}))

    def raw_json_response(
        self, body: bytes | str | list[bytes], status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """``body`` is already JSON: text, bytes, or byte pieces (pre-serialized records) joined here once."""
        if isinstance(body, list):
            body = b"".join(body)
        elif isinstance(body, str):
            body = body.encode("utf-8")
        return Response(status, body, self.json_content_type, dict(headers or {}))

    def handle(self, request: Request) -> Response:
        path_matched = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            path_matched = True
            if method != request.method:
                continue
            try:
                return handler(request, match)
            except ApiError as err:
                if err.payload is not None:
                    response = self.json_response(err.payload, err.status)
                    response.content_type = err.content_type or response.content_type
                    return response
                return self.error_response(err.status, err.message, err.content_type)
        if path_matched:
            return self.error_response(405, HTTPStatus(405).phrase)
        return self.json_response({"error": "Not Found", "status": 404, "path": request.path}, 404)


# --- query parsing helpers (raise ApiError so the source formats the error) ---------------------------------
def int_param(request: Request, name: str, default: int, minimum: int = 0, status: int = 400) -> int:
    raw = request.first(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(status, f"Invalid integer value for {name}: {raw}") from None
    if value < minimum:
        raise ApiError(status, f"{name} must be >= {minimum}, got {value}")
    return value


def int_list(request: Request, name: str, status: int = 400) -> list[int]:
    out = []
    for part in request.all(name):
        try:
            out.append(int(part))
        except ValueError:
            raise ApiError(status, f"Invalid integer value for {name}: {part}") from None
    return out


# --- registry --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[ReplaySource]] = {}


def register_source(cls: type[ReplaySource]) -> type[ReplaySource]:
    """Class decorator: make ``cls`` available to ReplayServer under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def registered_sources() -> dict[str, type[ReplaySource]]:
    """Import every module of ``mindex.replay.sources`` (each registers itself) and return the registry."""
    from mindex.replay import sources as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(sorted(_REGISTRY.items()))
