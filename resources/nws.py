"""National Weather Service API client (api.weather.gov): active alerts, points, gridpoint forecasts.

NWS keys its edge protection on the User-Agent (case C06): every request carries ours, with a contact, and asks
for ``application/geo+json``. Errors come as ``application/problem+json``; the base client turns them into
``ProblemDetail`` and retries only the transient ones (``ForecastGridExpired`` is not, case C07).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from resources.errors import BadPayload
from resources.http import ApiClient, ApiResponse

NWS_BASE_URL = "https://api.weather.gov"
GEOJSON = "application/geo+json"


class NwsClient(ApiClient):
    api_name: str = "nws"
    base_url: str = NWS_BASE_URL
    extra_headers: dict[str, str] = {"Accept": GEOJSON}
    # Follow at most this many `pagination.next` links (/alerts/active is one page today; be safe if it changes).
    max_pages: int = 50

    def iter_active_alert_pages(self, filters: dict[str, Any] | None = None) -> Iterator[ApiResponse]:
        url: str | None = "alerts/active"
        params = dict(filters or {})
        for _ in range(self.max_pages):
            response = self.get_json(url, params)
            payload = response.payload
            if not isinstance(payload, dict) or not isinstance(payload.get("features"), list):
                raise BadPayload(self.api_name, "alerts response is not a FeatureCollection", url=response.raw.url)
            yield response
            url = ((payload.get("pagination") or {}).get("next")) or None
            params = {}
            if not url:
                return
        raise BadPayload(self.api_name, f"more than {self.max_pages} pages of active alerts; refusing to loop")

    def point(self, latitude: float, longitude: float) -> ApiResponse:
        # NWS wants at most 4 decimals and redirects otherwise; ask in that canonical form.
        return self.get_json(f"points/{_coord(latitude)},{_coord(longitude)}")

    def forecast(self, url: str, units: str = "si") -> ApiResponse:
        """``url`` is the ``forecast`` / ``forecastHourly`` link from /points (rewritten onto base_url)."""
        return self.get_json(self.relink(url), {"units": units})

    def relink(self, url: str) -> str:
        """Links in NWS bodies name a host (the real one, or a replay server's); requests go to the configured
        base instead, so a cached link keeps working when the base URL changes."""
        return self.base_url.rstrip("/") + "/" + link_path(url).lstrip("/")


def _coord(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def link_path(url: str) -> str:
    """The path (and query) of an NWS link, without scheme and host: what is worth caching."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
