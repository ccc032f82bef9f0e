"""Open-Meteo forecast replay: ``GET /v1/forecast`` from the recorded responses in ``<fixtures>/weather/``.

Base URL: ``http://127.0.0.1:PORT/v1`` (like ``https://api.open-meteo.com/v1``). Served only on request
(``ReplayServer(..., sources=["open_meteo", ...])`` or ``"all"``), see ``mindex.replay.server``.

Records: every ``weather/openmeteo_v1_forecast_*.json`` (today one: ``…_current_daily5_virga``, Denver, snapped
to 39.746895,-104.987076, ``timezone`` America/Denver, ``utc_offset_seconds`` -21600, ``current`` + 5 ``daily``
rows, no ``hourly``).

* A request is answered with the recorded response nearest to ``latitude``/``longitude`` when it is within
  0.1° in both coordinates; otherwise 400 ``{"error": true, "reason": "No recorded forecast near <lat>,<lon>
  (replay)"}``. A forecast for another place is never made up.
* The body is the recording, unchanged (re-serialised compactly; ``null`` inside arrays stays ``null``):
  its own ``timezone``/``utc_offset_seconds`` even when another ``timezone`` was asked for (``timezone=GMT``
  is then listed in ``X-Replay-Ignored-Params``: the client must apply ``utc_offset_seconds``), its own
  variables and number of days. Requested ``current``/``hourly``/``daily`` variables that the recording lacks
  are listed in that header as ``<section>:<variable>`` (e.g. ``hourly:temperature_2m``); ``forecast_days``
  is listed when it differs from the recorded number of daily rows; parameters the replay does not apply
  (``temperature_unit``, ``models``, ``past_days``, …) are listed by name. Variables that were recorded but not
  asked for are still served.
* Missing or unparsable ``latitude``/``longitude``: 400 ``{"error": true, "reason": "Value of type 'Float'
  required for key 'latitude'."}``; out of range: ``"Latitude must be in range of -90 to 90°. Given: 91.0."``
  (the real API's wording). Several comma-separated locations: 400 (not recorded).
* The ``rate_limit`` fault's default body is Open-Meteo's own 429 body (case C05).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from mindex.replay.base import ApiError, ReplaySource, Request, Response, register_source
from mindex.replay.store import dumps

NEAR_DEGREES = 0.1
_SECTIONS = ("current", "hourly", "daily", "minutely_15")
_APPLIED = frozenset(
    {"latitude", "longitude", "current", "hourly", "daily", "minutely_15", "timezone", "forecast_days"}
)


def _float_param(request: Request, name: str, bound: float) -> float:
    raw = request.first(name)
    try:
        if raw is None or not raw.strip():
            raise ValueError
        if "," in raw:
            raise ApiError(400, "Several locations per request are not recorded (replay)")
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"Value of type 'Float' required for key '{name}'.") from None
    if not -bound <= value <= bound:
        raise ApiError(400, f"{name.capitalize()} must be in range of -{bound:g} to {bound:g}°. Given: {value}.")
    return value


@register_source
class OpenMeteoSource(ReplaySource):
    name = "open_meteo"
    fixture_subdir = "weather"
    base_path = "/v1"
    json_content_type = "application/json; charset=utf-8"
    datasets = ("forecasts",)
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (("GET", r"^/v1/forecast/?$", "forecast"),)

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        if volume is not None:
            raise ValueError("open_meteo has no volume option (its records are the recorded ones)")
        super().__init__(fixtures_dir, volume)
        self.forecasts: list[tuple[dict[str, Any], bytes]] = []
        for path in sorted(self.directory.glob("openmeteo_v1_forecast_*.json")):
            body = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(body, dict) and "latitude" in body and "longitude" in body:
                self.forecasts.append((body, dumps(body).encode("utf-8")))

    def record_count(self, dataset: str) -> int:
        if dataset == "forecasts":
            return len(self.forecasts)
        return super().record_count(dataset)

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        return self.json_response({"error": True, "reason": message}, status)

    def forecast(self, request: Request, _match: re.Match[str]) -> Response:
        lat = _float_param(request, "latitude", 90)
        lon = _float_param(request, "longitude", 180)
        near = [
            (abs(body["latitude"] - lat) + abs(body["longitude"] - lon), n)
            for n, (body, _raw) in enumerate(self.forecasts)
            if abs(body["latitude"] - lat) <= NEAR_DEGREES and abs(body["longitude"] - lon) <= NEAR_DEGREES
        ]
        if not near:
            raise ApiError(400, f"No recorded forecast near {lat:g},{lon:g} (replay)")
        body, raw = self.forecasts[min(near)[1]]
        return Response(200, raw, self.json_content_type, self._ignored(request, body))

    @staticmethod
    def _ignored(request: Request, body: dict[str, Any]) -> dict[str, str]:
        ignored = sorted(set(request.query) - _APPLIED)
        timezone = (request.first("timezone") or "").strip()
        if timezone and timezone.lower() != "auto" and timezone != body.get("timezone"):
            ignored.append("timezone")
        days = request.first("forecast_days")
        recorded_days = len((body.get("daily") or {}).get("time") or [])
        if days and recorded_days and days.strip() != str(recorded_days):
            ignored.append("forecast_days")
        for section in _SECTIONS:
            recorded = body.get(section) or {}
            ignored.extend(f"{section}:{v}" for v in request.all(section) if v not in recorded)
        return {"X-Replay-Ignored-Params": ",".join(ignored)} if ignored else {}
