"""OpenAQ API v3 replay from the recorded responses in ``<fixtures>/openaq/``.

Base URL: ``http://127.0.0.1:PORT/v3`` (like ``https://api.openaq.org/v3``); the same port also answers
``/v1/*`` and ``/v2/*``. Served only on request (``ReplayServer(..., sources=["openaq", ...])`` or ``"all"``),
see ``mindex.replay.server``.

Behaviour that mirrors the real API (API_NOTES.md section 5, FAILURE_CASES C05, C08, C09; where the notes are
silent, the API's own source, openaq/openaq-api-v2 ``openaq_api/v3``, decides):

* ``/v1/*``, ``/v2/*``: 410 ``{"message": "Gone. Version 1 and Version 2 API endpoints are retired …"}``.
* ``/v3/*`` without a non-empty ``X-API-Key``: 401 ``{"detail": "Unauthorized. A valid API key must be provided
  in the X-API-Key header."}``. Any non-empty key is accepted, unless the environment variable
  ``MINDEX_REPLAY_OPENAQ_KEY`` is set when the source is created: then only that key is.
* Rate-limit headers on every answered ``/v3`` request (200 and 4xx alike): ``x-ratelimit-limit: 60``,
  ``x-ratelimit-used`` (requests in the last 60 s, this one included), ``x-ratelimit-remaining``,
  ``x-ratelimit-reset`` (seconds until the oldest of them leaves the window). Counted per source over a
  rolling minute, never enforced: tests get 429 from the ``rate_limit`` fault, and those 429s carry no
  ``x-ratelimit-*`` header, as in production (openaq/openaq-api#382).
* Envelope ``{"meta": {"name": "openaq-api", "website": "/", "page", "limit", "found"}, "results": [...]}``;
  ``limit`` 1..1000 (default 100), ``page`` >= 1 (default 1), else 422 with FastAPI's
  ``{"detail": [{"type", "loc", "msg", "input", "ctx"}]}``.
* ``found`` as production computes it (``db.fetchPage``): list queries that count their matches (locations,
  sensors, latest, parameters, countries, …) report the total as an int (0 on a page past the end); raw
  sensor measurements are not counted, so a full page reports the string ``">{limit}"`` and a short page its
  own length. Either way a client must stop on a short page, never compute pages from ``found``.
* Values are served exactly as recorded: sentinels such as -999, negative values, units (C09).
* Unknown ids: 200 with ``found: 0`` and no results (production runs the query and finds nothing).
  Unsupported parameters are ignored and listed in ``X-Replay-Ignored-Params``.

Records:

* Locations: ``memoortiz_v3_locations_bbox_guadalajara_results_only.json`` (23, real production),
  ``openaq-python_responses_locations.json`` / ``…_variation.json`` / ``openaq-python_resources_location.json``
  (production location 2178, trimmed), ``openaq-r_v3_list_locations.json`` / ``…_get_location_1.json`` (6, a
  test deployment: ids 1-7, "testing site N"). De-duplicated by id, first file in that order wins.
* Sensors: the sensors embedded in the locations plus every ``*sensors*`` / ``*sensor_*`` file, de-duplicated
  by id keeping the richest record (most keys). Each knows its location: from the location that embeds it, else
  the file name (``…locations_3309328_sensors…``, ``…location_sensors_3``), else a recorded latest record.
* Measurements (raw): the six ``memoortiz_v3_sensors_<id>_measurements_limit1000_page1.json`` files (sensor id
  from the file name) and ``openaq-r_v3_list_sensor_measurements_3.json`` (sensor 3). Not used:
  ``openaq-python_responses_measurements.json``: its two records are hourly aggregates (``period.label
  "1hour"``, another endpoint) and name no sensor.

Endpoints:

* ``GET /v3/locations``: filters ``bbox=minx,miny,maxx,maxy`` (lon/lat, inclusive; values truncated to 4
  decimals as production does), ``coordinates=lat,lon`` + ``radius`` (metres, 1..25000; haversine distance,
  also reported in ``distance``), ``iso``, ``countries_id``, ``providers_id``, ``owner_contacts_id``,
  ``parameters_id`` (any sensor measures it), ``mobile``, ``monitor``; ``order_by=id``, ``sort_order``.
* ``GET /v3/locations/{id}``, ``/v3/locations/{id}/sensors``.
* ``GET /v3/locations/{id}/latest`` (``datetime_min``: ``datetime.utc > datetime_min`` as production; a value
  without an offset is in the location's time zone): recorded latest records
  (``openaq-r_v3_list_location_latest_1.json``, ``openaq-r_v3_list_parameter_latest_2.json``) where they exist
  for a sensor; otherwise DERIVED from the recorded measurements: per sensor of the location with recorded
  measurements, its newest one (by period end) as ``{"datetime": period.datetimeTo, "value", "coordinates"
  (the measurement's, else the location's), "sensorsId", "locationsId"}``: real values, not a recorded
  /latest response. (The Guadalajara sensor records embed a production ``latest`` of 2025-11-22, newer than
  any recorded measurement; it is not used, so that latest and measurements agree.)
* ``GET /v3/parameters/{id}/latest``: the same latest records, by the sensor's parameter.
* ``GET /v3/sensors/{id}``, ``GET /v3/sensors/{id}/measurements`` (``datetime_from``, ``datetime_to``,
  ``limit``, ``page``; ordered by time). Date filter as production (``datetime > datetime_from AND datetime <=
  datetime_to`` on the period END, ``period.datetimeTo``); offsets such as ``-0500`` or ``Z`` are honoured, a
  value without one is in the location's time zone; ``datetime_to <= datetime_from`` is a 422. The recorded
  cassette (``datetime_from=2023-03-07T00:00:00-0500&datetime_to=2023-03-08T00:00:00-0500``, 48 half-hour
  periods whose ``datetimeFrom`` runs 05:00Z … 04:30Z) fits this rule, and equally "``datetimeFrom`` in
  [from, to)": for bounds on the period grid the two are the same.
* ``GET /v3/parameters``, ``/countries``, ``/providers``, ``/licenses``, ``/owners``, ``/manufacturers``,
  ``/instruments`` and ``/{name}/{id}``: the recorded list / get / resource files, de-duplicated by id.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from mindex.replay.base import ApiError, ReplaySource, Request, Response, register_source
from mindex.replay.store import dumps
from mindex.replay.timeutil import epoch_or_none

RATE_LIMIT = 60
RATE_WINDOW_S = 60.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_RADIUS_M = 25_000
EARTH_RADIUS_M = 6_371_008.8
KEY_ENV = "MINDEX_REPLAY_OPENAQ_KEY"
UNAUTHORIZED = "Unauthorized. A valid API key must be provided in the X-API-Key header."
GONE = (
    "Gone. Version 1 and Version 2 API endpoints are retired and no longer available. "
    "Please migrate to Version 3 endpoints."
)
_PAGING = frozenset({"limit", "page"})
_LOCATION_PARAMS = _PAGING | {
    "bbox",
    "coordinates",
    "radius",
    "iso",
    "countries_id",
    "providers_id",
    "owner_contacts_id",
    "parameters_id",
    "mobile",
    "monitor",
    "order_by",
    "sort_order",
}
# resource path -> (singular used in file names, plural used in file names)
_RESOURCES: dict[str, tuple[str, str]] = {
    "parameters": ("parameter", "parameters"),
    "countries": ("country", "countries"),
    "providers": ("provider", "providers"),
    "licenses": ("license", "licenses"),
    "owners": ("owner", "owners"),
    "manufacturers": ("manufacturer", "manufacturers"),
    "instruments": ("instrument", "instruments"),
}
_LOCATION_FILES = (
    "memoortiz_v3_locations_bbox_guadalajara_results_only.json",
    "openaq-python_responses_locations.json",
    "openaq-python_responses_locations_variation.json",
    "openaq-python_resources_location.json",
    "openaq-r_v3_list_locations.json",
    "openaq-r_v3_get_location_1.json",
)
_LATEST_FILES = ("openaq-r_v3_list_location_latest_1.json", "openaq-r_v3_list_parameter_latest_2.json")
_MEASUREMENT_FILE = re.compile(r"(?:_sensors_(\d+)_measurements_|_list_sensor_measurements_(\d+)\.json$)")
_SENSOR_FILE_LOCATION = re.compile(r"locations?_(\d+)_sensors|location_sensors_(\d+)")


def _records(body: Any) -> list[dict[str, Any]]:
    """``results`` of an envelope, or the single resource object itself."""
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        return [r for r in body["results"] if isinstance(r, dict)]
    if isinstance(body, dict) and "id" in body:
        return [body]
    return []


def _validation(kind: str, loc: tuple[str, ...], msg: str, value: Any, ctx: dict[str, Any] | None = None) -> ApiError:
    item: dict[str, Any] = {"type": kind, "loc": ["query", *loc], "msg": msg, "input": value}
    if ctx:
        item["ctx"] = ctx
    return ApiError(422, msg, payload={"detail": [item]})


def _truncate4(value: float) -> float:
    return math.trunc(value * 10_000) / 10_000


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class _RateCounter:
    """Requests per rolling minute, for the x-ratelimit-* headers (counted, never enforced)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: deque[float] = deque()

    def hit(self) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            while self._hits and now - self._hits[0] >= RATE_WINDOW_S:
                self._hits.popleft()
            self._hits.append(now)
            used = len(self._hits)
            reset = max(1, math.ceil(RATE_WINDOW_S - (now - self._hits[0])))
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(max(0, RATE_LIMIT - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(reset),
        }


@register_source
class OpenAqSource(ReplaySource):
    name = "openaq"
    base_path = "/v3"
    datasets = ("locations", "sensors", "measurements")
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/v3/locations/?$", "locations_search"),
        ("GET", r"^/v3/locations/([^/]+)/?$", "location_get"),
        ("GET", r"^/v3/locations/([^/]+)/sensors/?$", "location_sensors"),
        ("GET", r"^/v3/locations/([^/]+)/latest/?$", "location_latest"),
        ("GET", r"^/v3/sensors/([^/]+)/?$", "sensor_get"),
        ("GET", r"^/v3/sensors/([^/]+)/measurements/?$", "sensor_measurements"),
        ("GET", r"^/v3/parameters/([^/]+)/latest/?$", "parameter_latest"),
        ("GET", r"^/v3/(" + "|".join(_RESOURCES) + r")/?$", "resource_list"),
        ("GET", r"^/v3/(" + "|".join(_RESOURCES) + r")/([^/]+)/?$", "resource_get"),
        ("GET", r"^/v3(/.*)?$", "not_found"),
    )

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        if volume is not None:
            raise ValueError("openaq has no volume option (its records are the recorded ones)")
        super().__init__(fixtures_dir, volume)
        self.expected_key = os.environ.get(KEY_ENV) or None
        self._rate = _RateCounter()
        self.locations: dict[int, dict[str, Any]] = {}
        self.sensors: dict[int, dict[str, Any]] = {}
        self.sensor_location: dict[int, int] = {}
        self.measurements: dict[int, list[dict[str, Any]]] = {}  # sensor id -> records by period end
        self._measurement_json: dict[int, list[bytes]] = {}
        self._measurement_end: dict[int, list[float]] = {}
        self.resources: dict[str, dict[int, dict[str, Any]]] = {}
        self._latest_recorded: dict[int, dict[str, Any]] = {}  # sensor id -> recorded latest record
        self._load()
        self.latest = self._latest_records()

    # --- loading -------------------------------------------------------------------------------------------
    def _read(self, name: str) -> Any:
        path = self.directory / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _load(self) -> None:
        for name in _LOCATION_FILES:
            for record in _records(self._read(name)):
                if isinstance(record.get("id"), int) and record["id"] not in self.locations:
                    self.locations[record["id"]] = record
        for location in self.locations.values():
            for sensor in location.get("sensors") or []:
                if isinstance(sensor, dict) and isinstance(sensor.get("id"), int):
                    self._add_sensor(sensor)
                    self.sensor_location.setdefault(sensor["id"], location["id"])
        for name in _LATEST_FILES:
            for record in _records(self._read(name)):
                if isinstance(record.get("sensorsId"), int):
                    self._latest_recorded.setdefault(record["sensorsId"], record)
        for path in sorted(self.directory.glob("*.json")):
            if "sensor" not in path.name or "measurements" in path.name:
                continue
            file_location = _SENSOR_FILE_LOCATION.search(path.name)
            for sensor in _records(json.loads(path.read_text(encoding="utf-8"))):
                if not isinstance(sensor.get("id"), int) or "parameter" not in sensor:
                    continue
                self._add_sensor(sensor)
                if file_location and sensor["id"] not in self.sensor_location:
                    self.sensor_location[sensor["id"]] = int(next(g for g in file_location.groups() if g))
        for sensor_id, record in self._latest_recorded.items():
            if sensor_id not in self.sensor_location and isinstance(record.get("locationsId"), int):
                self.sensor_location[sensor_id] = record["locationsId"]
        for path in sorted(self.directory.glob("*measurements*.json")):
            match = _MEASUREMENT_FILE.search(path.name)
            if not match:
                continue  # openaq-python_responses_measurements.json: hourly aggregates of an unnamed sensor
            sensor_id = int(next(g for g in match.groups() if g))
            records = self.measurements.setdefault(sensor_id, [])
            records.extend(_records(json.loads(path.read_text(encoding="utf-8"))))
        for sensor_id, records in self.measurements.items():
            unique = {r["period"]["datetimeTo"]["utc"]: r for r in records}  # one record per period
            ordered = sorted(unique.values(), key=lambda r: epoch_or_none(r["period"]["datetimeTo"]["utc"]) or 0)
            self.measurements[sensor_id] = ordered
            self._measurement_json[sensor_id] = [dumps(r).encode("utf-8") for r in ordered]
            self._measurement_end[sensor_id] = [epoch_or_none(r["period"]["datetimeTo"]["utc"]) or 0 for r in ordered]
        for resource, (singular, plural) in _RESOURCES.items():
            table: dict[int, dict[str, Any]] = {}
            for pattern in (
                f"openaq-r_v3_list_{plural}.json",
                f"openaq-r_v3_get_{singular}_*.json",
                f"openaq-python_responses_{plural}.json",
                f"openaq-python_resources_{singular}.json",
            ):
                for path in sorted(self.directory.glob(pattern)):
                    for record in _records(json.loads(path.read_text(encoding="utf-8"))):
                        if isinstance(record.get("id"), int) and record["id"] not in table:
                            table[record["id"]] = record
            self.resources[resource] = dict(sorted(table.items()))

    def _add_sensor(self, sensor: dict[str, Any]) -> None:
        old = self.sensors.get(sensor["id"])
        if old is None or len(sensor) > len(old):
            self.sensors[sensor["id"]] = sensor

    def _latest_records(self) -> list[dict[str, Any]]:
        """Recorded latest records, plus one derived from the newest recorded measurement of every other
        sensor that has measurements. Ordered by location, then sensor."""
        out = dict(self._latest_recorded)
        for sensor_id, records in self.measurements.items():
            if sensor_id in out or not records:
                continue
            location_id = self.sensor_location.get(sensor_id)
            if location_id is None:
                continue
            newest = records[-1]
            coordinates = newest.get("coordinates") or (self.locations.get(location_id) or {}).get("coordinates")
            out[sensor_id] = {
                "datetime": newest["period"]["datetimeTo"],
                "value": newest["value"],
                "coordinates": coordinates,
                "sensorsId": sensor_id,
                "locationsId": location_id,
            }
        return sorted(out.values(), key=lambda r: (r["locationsId"], r["sensorsId"]))

    def record_count(self, dataset: str) -> int:
        if dataset == "locations":
            return len(self.locations)
        if dataset == "sensors":
            return len(self.sensors)
        if dataset == "measurements":
            return sum(len(v) for v in self.measurements.values())
        return super().record_count(dataset)

    # --- auth, retired versions, rate-limit headers ------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        if re.match(r"^/v[12](/|$)", path):
            return self.json_response({"message": GONE}, 410)
        if not re.match(r"^/v3(/|$)", path):
            return self.json_response({"detail": "Not Found"}, 404)
        key = (request.headers.get("x-api-key") or "").strip()
        if not key or (self.expected_key is not None and key != self.expected_key):
            return self.json_response({"detail": UNAUTHORIZED}, 401)
        limits = self._rate.hit()
        response = super().handle(request)
        response.headers.update(limits)
        return response

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        return self.json_response({"detail": message}, status)

    # --- query helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        def read(name: str, default: int, upper: int | None) -> int:
            raw = request.first(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise _validation(
                    "int_parsing", (name,), "Input should be a valid integer, unable to parse string as an integer", raw
                ) from None
            if value <= 0:
                raise _validation("greater_than", (name,), "Input should be greater than 0", raw, {"gt": 0})
            if upper is not None and value > upper:
                raise _validation(
                    "less_than_equal", (name,), f"Input should be less than or equal to {upper}", raw, {"le": upper}
                )
            return value

        return read("page", 1, None), read("limit", DEFAULT_LIMIT, MAX_LIMIT)

    @staticmethod
    def _ignored(request: Request, known: frozenset[str]) -> dict[str, str]:
        ignored = sorted(set(request.query) - known)
        return {"X-Replay-Ignored-Params": ",".join(ignored)} if ignored else {}

    @staticmethod
    def _path_id(text: str, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _validation(
                "int_parsing", (name,), "Input should be a valid integer, unable to parse string as an integer", text
            ) from None
        if value < 1:
            raise _validation("greater_than_equal", (name,), "Input should be greater than or equal to 1", text)
        return value

    @staticmethod
    def _int_list(request: Request, name: str) -> set[int]:
        out = set()
        for part in request.all(name):
            try:
                out.add(int(part))
            except ValueError:
                raise _validation(
                    "int_parsing",
                    (name, 0),
                    "Input should be a valid integer, unable to parse string as an integer",
                    part,
                ) from None
        return out

    @staticmethod
    def _bool(request: Request, name: str) -> bool | None:
        raw = request.first(name)
        if raw is None or raw.strip() == "":
            return None
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise _validation("bool_parsing", (name,), "Input should be a valid boolean, unable to interpret input", raw)

    def _instant(self, request: Request, name: str, location_id: int | None) -> float | None:
        """Epoch seconds of a datetime/date parameter; no offset = the location's time zone (as production)."""
        raw = request.first(name)
        if raw is None or raw.strip() == "":
            return None
        text = raw.strip()
        try:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                if " " not in text:
                    raise
                parsed = datetime.fromisoformat(text.replace(" ", "+"))  # an unencoded "+" arrives as a space
        except ValueError:
            try:
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
            except ValueError:
                raise _validation(
                    "datetime_from_date_parsing", (name,), "Input should be a valid datetime or date", raw
                ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self._zone(location_id))
        return parsed.timestamp()

    def _zone(self, location_id: int | None) -> Any:
        name = (self.locations.get(location_id) or {}).get("timezone") if location_id is not None else None
        try:
            return ZoneInfo(name) if name else UTC
        except (KeyError, ValueError, OSError):
            return UTC

    def _envelope(
        self,
        pieces: list[bytes],
        page: int,
        limit: int,
        found: int | str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        meta = {"name": "openaq-api", "website": "/", "page": page, "limit": limit, "found": found}
        body = [b'{"meta":', dumps(meta).encode("utf-8"), b',"results":[']
        for n, piece in enumerate(pieces):
            if n:
                body.append(b",")
            body.append(piece)
        body.append(b"]}")
        return self.raw_json_response(body, headers=headers)

    def _counted_page(
        self, records: list[Any], request: Request, known: frozenset[str], render: Callable[[Any], bytes] | None = None
    ) -> Response:
        """A page of a query that counts its matches: ``found`` = the total (0 on a page past the end)."""
        page, limit = self._paging(request)
        chunk = records[(page - 1) * limit : page * limit]
        to_bytes = render or (lambda r: dumps(r).encode("utf-8"))
        found = len(records) if chunk else 0
        return self._envelope([to_bytes(r) for r in chunk], page, limit, found, self._ignored(request, known))

    # --- locations -----------------------------------------------------------------------------------------
    def locations_search(self, request: Request, _match: re.Match[str]) -> Response:
        bbox_raw, coords_raw, radius_raw = request.first("bbox"), request.first("coordinates"), request.first("radius")
        if bbox_raw and (coords_raw or radius_raw):
            raise _validation(
                "value_error",
                (),
                "Value error, Cannot pass both bounding box and coordinate/radius query in the same URL",
                None,
            )
        if coords_raw and not radius_raw:
            raise _validation("value_error", (), "Value error, Coordinates must be passed with a radius", None)
        if radius_raw and not coords_raw:
            raise _validation("value_error", (), "Value error, Radius must be passed with a coordinate pair", None)
        bbox = None
        if bbox_raw:
            try:
                minx, miny, maxx, maxy = (_truncate4(float(v)) for v in bbox_raw.split(","))
            except ValueError:
                raise _validation(
                    "string_pattern_mismatch",
                    ("bbox",),
                    "String should match pattern for minx,miny,maxx,maxy",
                    bbox_raw,
                ) from None
            if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
                raise _validation("value_error", ("bbox",), "Value error, Invalid bounding box.", bbox_raw)
            bbox = (minx, miny, maxx, maxy)
        center = None
        if coords_raw:
            try:
                lat_text, lon_text = coords_raw.split(",")
                center = (_truncate4(float(lat_text)), _truncate4(float(lon_text)))
                radius = int(radius_raw or "")
            except ValueError:
                raise _validation(
                    "value_error", ("coordinates",), "Value error, Invalid coordinates.", coords_raw
                ) from None
            if not (-90 <= center[0] <= 90 and -180 <= center[1] <= 180):
                raise _validation("value_error", ("coordinates",), "Value error, Invalid coordinates.", coords_raw)
            if not 0 < radius <= MAX_RADIUS_M:
                raise _validation(
                    "less_than_equal", ("radius",), f"Input should be less than or equal to {MAX_RADIUS_M}", radius_raw
                )
        iso = (request.first("iso") or "").strip()
        countries = self._int_list(request, "countries_id")
        providers = self._int_list(request, "providers_id")
        owners = self._int_list(request, "owner_contacts_id")
        parameters = self._int_list(request, "parameters_id")
        mobile, monitor = self._bool(request, "mobile"), self._bool(request, "monitor")
        order_by = (request.first("order_by") or "id").strip()
        if order_by != "id":
            raise _validation("enum", ("order_by",), "Input should be 'id'", order_by, {"expected": "'id'"})
        sort_order = (request.first("sort_order") or "asc").strip().lower()
        if sort_order not in ("asc", "desc"):
            raise _validation("enum", ("sort_order",), "Input should be 'asc' or 'desc'", sort_order)

        matched: list[tuple[dict[str, Any], float | None]] = []
        for location_id in sorted(self.locations, reverse=sort_order == "desc"):
            loc = self.locations[location_id]
            point = loc.get("coordinates") or {}
            lat, lon = point.get("latitude"), point.get("longitude")
            distance = None
            if bbox is not None or center is not None:
                if lat is None or lon is None:
                    continue
                if bbox is not None and not (bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]):
                    continue
                if center is not None:
                    distance = haversine_m(center[0], center[1], lat, lon)
                    if distance > radius:
                        continue
            if iso and (loc.get("country") or {}).get("code") != iso:
                continue
            if countries and (loc.get("country") or {}).get("id") not in countries:
                continue
            if providers and (loc.get("provider") or {}).get("id") not in providers:
                continue
            if owners and (loc.get("owner") or {}).get("id") not in owners:
                continue
            if parameters and parameters.isdisjoint(
                (s.get("parameter") or {}).get("id") for s in loc.get("sensors") or []
            ):
                continue
            if mobile is not None and bool(loc.get("isMobile")) != mobile:
                continue
            if monitor is not None and bool(loc.get("isMonitor")) != monitor:
                continue
            matched.append((loc, distance))

        def render(item: tuple[dict[str, Any], float | None]) -> bytes:
            loc, distance = item
            if distance is not None:
                loc = {**loc, "distance": round(distance, 6)}
            return dumps(loc).encode("utf-8")

        return self._counted_page(matched, request, frozenset(_LOCATION_PARAMS), render)

    def location_get(self, request: Request, match: re.Match[str]) -> Response:
        location_id = self._path_id(match.group(1), "locations_id")
        found = [self.locations[location_id]] if location_id in self.locations else []
        return self._counted_page(found, request, _PAGING)

    def location_sensors(self, request: Request, match: re.Match[str]) -> Response:
        location_id = self._path_id(match.group(1), "locations_id")
        sensors = [self.sensors[s] for s, loc in sorted(self.sensor_location.items()) if loc == location_id]
        return self._counted_page(sensors, request, _PAGING)

    def location_latest(self, request: Request, match: re.Match[str]) -> Response:
        location_id = self._path_id(match.group(1), "locations_id")
        return self._latest_page(request, lambda r: r["locationsId"] == location_id, location_id)

    def parameter_latest(self, request: Request, match: re.Match[str]) -> Response:
        parameter_id = self._path_id(match.group(1), "parameters_id")

        def wanted(record: dict[str, Any]) -> bool:
            sensor = self.sensors.get(record["sensorsId"]) or {}
            return (sensor.get("parameter") or {}).get("id") == parameter_id

        return self._latest_page(request, wanted, None)

    def _latest_page(
        self, request: Request, wanted: Callable[[dict[str, Any]], bool], location_id: int | None
    ) -> Response:
        records = [r for r in self.latest if wanted(r)]
        if request.first("datetime_min"):
            by_location: dict[int | None, float | None] = {}
            kept = []
            for record in records:
                loc = record["locationsId"]
                if loc not in by_location:
                    by_location[loc] = self._instant(
                        request, "datetime_min", loc if location_id is None else location_id
                    )
                minimum = by_location[loc]
                when = epoch_or_none((record.get("datetime") or {}).get("utc"))
                if minimum is None or (when is not None and when > minimum):
                    kept.append(record)
            records = kept
        return self._counted_page(records, request, _PAGING | {"datetime_min"})

    # --- sensors -------------------------------------------------------------------------------------------
    def sensor_get(self, request: Request, match: re.Match[str]) -> Response:
        sensor_id = self._path_id(match.group(1), "sensors_id")
        found = [self.sensors[sensor_id]] if sensor_id in self.sensors else []
        return self._counted_page(found, request, _PAGING)

    def sensor_measurements(self, request: Request, match: re.Match[str]) -> Response:
        sensor_id = self._path_id(match.group(1), "sensors_id")
        page, limit = self._paging(request)
        location_id = self.sensor_location.get(sensor_id)
        start = self._instant(request, "datetime_from", location_id)
        end = self._instant(request, "datetime_to", location_id)
        if start is not None and end is not None and end <= start:
            raise _validation(
                "value_error",
                (),
                "Date/time from must be older than the date/time to. "
                f"User passed {request.first('datetime_from')} - {request.first('datetime_to')}",
                None,
            )
        ends = self._measurement_end.get(sensor_id, [])
        pieces = self._measurement_json.get(sensor_id, [])
        selected = [i for i, t in enumerate(ends) if (start is None or t > start) and (end is None or t <= end)]
        chunk = selected[(page - 1) * limit : page * limit]
        # Production does not count raw measurements: a full page says ">limit", a short one its own length.
        found: int | str = f">{limit}" if len(chunk) == limit else len(chunk)
        known = _PAGING | {"datetime_from", "datetime_to"}
        return self._envelope([pieces[i] for i in chunk], page, limit, found, self._ignored(request, known))

    def not_found(self, request: Request, _match: re.Match[str]) -> Response:
        raise ApiError(404, "Not Found")  # FastAPI's answer to a path no router serves

    # --- small resources -----------------------------------------------------------------------------------
    def resource_list(self, request: Request, match: re.Match[str]) -> Response:
        return self._counted_page(list(self.resources[match.group(1)].values()), request, _PAGING)

    def resource_get(self, request: Request, match: re.Match[str]) -> Response:
        resource = match.group(1)
        record_id = self._path_id(match.group(2), f"{resource}_id")
        table = self.resources[resource]
        return self._counted_page([table[record_id]] if record_id in table else [], request, _PAGING)
