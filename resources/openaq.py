"""OpenAQ API v3 client. The key goes in ``X-API-Key``; 401 and 410 are never retried (case C08).

Paging is ``page``/``limit``. ``meta.found`` may be a string such as ``">1000"``, so the page count is never
computed from it: we stop on a short page.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from resources.errors import BadPayload, ClientRequestError
from resources.http import ApiClient, ApiResponse

OPENAQ_BASE_URL = "https://api.openaq.org/v3"
MAX_LIMIT = 1000


class OpenAqClient(ApiClient):
    api_name: str = "openaq"
    base_url: str = OPENAQ_BASE_URL
    api_key: str | None = None
    page_limit: int = MAX_LIMIT
    max_pages: int = 1000

    _validated: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate_base_url()

    def validate_base_url(self) -> None:
        """Startup validation: v1 and v2 were retired on 2025-01-31 and answer 410 Gone."""
        if not self.base_url.rstrip("/").endswith("/v3"):
            raise ClientRequestError(self.api_name, f"base URL {self.base_url!r} is not the v3 API (v1/v2 are "
                                                    "retired); use https://api.openaq.org/v3")
        self._validated = True

    def get_json(self, path: str, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> ApiResponse:
        if not self._validated:
            self.validate_base_url()
        auth = {"X-API-Key": self.api_key} if self.api_key else {}
        return super().get_json(path, params, headers={**auth, **(headers or {})})

    def iter_pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[ApiResponse]:
        limit = min(self.page_limit, MAX_LIMIT)
        for page in range(1, self.max_pages + 1):
            response = self.get_json(path, {**(params or {}), "limit": limit, "page": page})
            results = response.payload.get("results") if isinstance(response.payload, dict) else None
            if not isinstance(results, list):
                raise BadPayload(self.api_name, "response has no results list", url=response.raw.url)
            yield response
            if len(results) < limit:
                return
        raise BadPayload(self.api_name, f"more than {self.max_pages} pages from {path}; refusing to loop")

    def iter_locations(self, area: dict[str, Any]) -> Iterator[ApiResponse]:
        yield from self.iter_pages("locations", area)

    def latest(self, location_id: int) -> ApiResponse:
        return self.get_json(f"locations/{location_id}/latest", {"limit": MAX_LIMIT})

    def iter_measurements(self, sensor_id: int, start: datetime, end: datetime) -> Iterator[ApiResponse]:
        yield from self.iter_pages(f"sensors/{sensor_id}/measurements",
                                   {"datetime_from": start.isoformat(), "datetime_to": end.isoformat()})
