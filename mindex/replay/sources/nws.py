"""NWS (api.weather.gov) replay: active alerts, points, gridpoint forecasts, stations/observations.

Base URL: ``http://127.0.0.1:PORT`` (no version prefix, like ``https://api.weather.gov``). Served only on request
(``ReplayServer(..., sources=["nws", ...])`` or ``"all"``), see ``mindex.replay.server``.

Fixtures: ``<fixtures>/nws/`` (alerts, stations, observations) and ``<fixtures>/weather/`` (points, forecasts,
raw gridpoints).

Edge behaviour (FAILURE_CASES C06): every request needs a ``User-Agent`` that is not empty and not a bare
library default (``python-httpx/…``, ``python-requests/…``, ``curl/…``, ``Wget/…``, ``Go-http-client/…``, …)
unless it also names a contact, in parentheses or with an ``@``. Otherwise: 403 ``text/html`` "Access
Denied" (the CDN page the ``html_error`` fault sends). Data is ``application/geo+json``; errors are
``application/problem+json`` ``{correlationId, title, type, status, detail, instance}``.

Links: every ``https://api.weather.gov`` prefix in a served data body is rewritten to the base URL the client
used (its ``Host`` header), so a client that follows ``forecast`` / ``forecastHourly`` / ``@id`` links stays on
loopback. Two kinds of IRI are left as recorded because they are identifiers, not links: the JSON-LD vocabulary
``https://api.weather.gov/ontology#`` and problem ``type`` URIs (``…/problems/InvalidPoint`` etc., which clients
compare as strings). Problem bodies are never rewritten.

Alerts (records = the features of every ``*alerts_active*.json`` file in ``nws/``: the national
``ruthanno_…`` FeatureCollection (621) plus the two ``pynws_alerts_active_zone*`` files, de-duplicated by
``properties.id`` = 623; the feed's ``updated`` = the newest recorded ``updated``; ``title``/``@context`` of the
national file):

* ``GET /alerts/active``: one FeatureCollection, not paginated. Filters (AND-ed; comma lists OR-ed):
  ``area`` (state / marine area code: any ``geocode.UGC`` starts with it), ``zone`` (UGC id: in
  ``geocode.UGC`` or the last segment of an ``affectedZones`` URL), ``region`` (marine region AL, AT, GL, GM,
  PA, PI, from the UGC area codes), ``region_type`` (land / marine), ``point=lat,lon`` (features whose Polygon /
  MultiPolygon geometry contains the point, ray casting; features with ``geometry: null`` never match: the
  real API would also match them through their zones' shapes, which are not recorded), ``status``,
  ``message_type`` (Alert / Update / Cancel), ``event``, ``severity``, ``urgency``, ``certainty`` (all
  case-insensitive exact matches). Other parameters are ignored and listed in ``X-Replay-Ignored-Params``.
* ``GET /alerts/active/zone/{zoneId}``, ``/alerts/active/area/{area}``, ``/alerts/active/region/{region}``:
  the same with that filter.
* ``GET /alerts/active/count``: while the recorded feed is active, the recorded body
  ``nws/nws_alerts_ha_alerts_active_count.json`` as is. Note that it was recorded at another moment than the
  national feed (its total is 278, the feed has 623 alerts). With a replaced feed,
  ``{total, land, marine, regions, areas, zones}`` is computed from the current features (an alert is marine
  when any of its UGC codes is a marine area).
* ``GET /alerts/{id}`` (the ``urn:oid:…`` or ``NWS-IDP-PROD-…`` id): one Feature. Like the real API it also
  finds alerts that are no longer active: every alert ever recorded or put into the feed stays retrievable.
  Unknown id: 404 problem.

The replaceable active feed (lifecycle tests and drills):

* Python: ``srv.source_object("nws").set_active(features, updated)`` replaces the active features (``updated``
  defaults to now); ``.reset_active()`` restores the recorded feed.
* HTTP (any source port): ``PUT /_replay/nws/active`` with a FeatureCollection body (``features``, optional
  ``updated``, ``title``, ``@context``), ``DELETE /_replay/nws/active`` restores the recorded feed,
  ``GET /_replay/nws/active`` describes the current one.

Points and forecasts (``weather/``; each file's role is read from its content):

* ``GET /points/{lat},{lon}``: ``wx:Point`` files (``pynws_points_30_-85``: TAE/58,65;
  ``boreas_nws_points_white_house``: 38.8988,-77.0353 → LWX/97,71), matched at 4 decimals like the real API.
  More than 4 decimals: 301 with ``Location`` = the rounded URL (query kept). Unknown point: 404 problem
  ``https://api.weather.gov/problems/InvalidPoint``.
* ``GET /gridpoints/{wfo}/{x},{y}/forecast`` and ``/forecast/hourly`` (``units=us|si``, default us): forecast
  files carry no grid id, so each is given the grid of the ``/points`` file recorded with it (same recording,
  i.e. same file-name prefix): the boreas files (complete: 14 and 156 periods, units us only) are LWX/97,71, and
  the pynws ``gridpoints_forecast{,_hourly}_{us,si}`` files (trimmed to 2 periods) are TAE/58,65, which is
  also how pynws's own tests pair them with ``points.json``. Baseline vs hourly comes from
  ``forecastGenerator``, the units from ``properties.units``. A unit that was not recorded for that grid
  (``units=si`` on LWX) gets the recorded one, with ``units`` listed in ``X-Replay-Ignored-Params``.
* ``GET /gridpoints/{wfo}/{x},{y}``: raw grid layers (``wx:Gridpoint`` files; TAE/58,65 only).
* ``GET /gridpoints/{wfo}/{x},{y}/stations``: ``nws/pynws_gridpoints_stations.json`` for TAE/58,65 (as pynws
  pairs them; note its 41 stations are in Ohio, and its ``pagination.next`` link is not served).
* ``GET /stations/{id}/observations`` (the observation features of the ``pynws_stations_observations*``
  files, de-duplicated by feature id) and ``/observations/latest`` (``pynws_stations_observations_latest``):
  station KFLL only.
* Unknown grid / station: 404 problem. ``ForecastGridExpired`` (case C07) is the generic fault:
  ``srv.set_fault("nws", "problem_json", status=503,
  type="https://api.weather.gov/problems/ForecastGridExpired", count=1)`` (it applies to the next requests to
  this source, whatever their grid).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlencode

from mindex.replay.base import ApiError, ReplaySource, Request, Response, register_source
from mindex.replay.faults import fault_response, make_fault
from mindex.replay.store import dumps
from mindex.replay.timeutil import epoch_or_none

NWS_ORIGIN = "https://api.weather.gov"
GEOJSON = "application/geo+json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_PREFIX = f"{NWS_ORIGIN}/problems/"
# Links to rewrite: every origin prefix except the JSON-LD vocabulary and problem type identifiers.
_ORIGIN_RE = re.compile(r"https://api\.weather\.gov(?!/ontology#|/problems/)")
_LINK = "\x00"  # placeholder for the base URL in pre-serialised bodies (never appears raw in JSON text)

# Library defaults that NWS's edge blocks unless the string also carries a contact.
_GENERIC_UA = re.compile(
    r"^\s*(python-httpx|python-requests|python-urllib|python/|curl|wget|go-http-client|okhttp|java|"
    r"apache-httpclient|axios|node-fetch|undici|aiohttp|libwww-perl|ruby|faraday|httpie|postmanruntime|dart)\b",
    re.IGNORECASE,
)
_CONTACT = re.compile(r"@|\([^()]*[^()\s][^()]*\)")

# Marine UGC area codes -> marine region (as /alerts/active/count reports them).
MARINE_REGION_OF_AREA: dict[str, str] = {
    "PK": "AL",
    "AM": "AT",
    "AN": "AT",
    "GM": "GM",
    "LC": "GL",
    "LE": "GL",
    "LH": "GL",
    "LM": "GL",
    "LO": "GL",
    "LS": "GL",
    "SL": "GL",
    "PZ": "PA",
    "PH": "PI",
    "PM": "PI",
    "PS": "PI",
}
_ALERT_PARAMS = frozenset(
    {
        "area",
        "zone",
        "region",
        "region_type",
        "point",
        "status",
        "message_type",
        "event",
        "severity",
        "urgency",
        "certainty",
    }
)
_COUNT_FILE = "nws_alerts_ha_alerts_active_count.json"


def user_agent_allowed(user_agent: str | None) -> bool:
    """Non-empty, and not a bare library default (one with a contact in parentheses or an ``@`` is fine)."""
    ua = (user_agent or "").strip()
    if not ua:
        return False
    return not _GENERIC_UA.match(ua) or bool(_CONTACT.search(ua))


def _template(payload: Any) -> bytes:
    """Compact JSON with every link prefix replaced by the placeholder, filled in per request."""
    return _ORIGIN_RE.sub(_LINK, dumps(payload)).encode("utf-8")


def _coord_text(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _point_in_ring(lon: float, lat: float, ring: list[list[float]]) -> bool:
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i][0], ring[i][1]
        x2, y2 = ring[(i + 1) % n][0], ring[(i + 1) % n][1]
        if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def geometry_contains(geometry: Any, lat: float, lon: float) -> bool:
    """Ray casting (even-odd over all rings, so holes work) on Polygon / MultiPolygon; anything else: False."""
    if not isinstance(geometry, dict):
        return False
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    for polygon in polygons or []:
        inside = False
        for ring in polygon or []:
            if len(ring) >= 3 and _point_in_ring(lon, lat, ring):
                inside = not inside
        if inside:
            return True
    return False


@dataclass(frozen=True)
class _AlertFacts:
    """What the filters look at, per feature (upper/lower-cased once)."""

    ugc: tuple[str, ...]
    areas: frozenset[str]
    zone_ids: frozenset[str]
    marine: bool
    fields: dict[str, str]  # status, message_type, event, severity, urgency, certainty (lower-cased)
    geometry: Any

    @classmethod
    def of(cls, feature: dict[str, Any]) -> _AlertFacts:
        props = feature.get("properties") or {}
        ugc = tuple(str(u).upper() for u in ((props.get("geocode") or {}).get("UGC") or []))
        zones = {u for u in ugc}
        zones.update(str(z).rstrip("/").rsplit("/", 1)[-1].upper() for z in props.get("affectedZones") or [])
        areas = frozenset(u[:2] for u in ugc)

        def low(name: str) -> str:
            return str(props.get(name) or "").strip().lower()

        return cls(
            ugc=ugc,
            areas=areas,
            zone_ids=frozenset(zones),
            marine=any(a in MARINE_REGION_OF_AREA for a in areas),
            fields={
                "status": low("status"),
                "message_type": low("messageType"),
                "event": low("event"),
                "severity": low("severity"),
                "urgency": low("urgency"),
                "certainty": low("certainty"),
            },
            geometry=feature.get("geometry"),
        )


@dataclass
class _Feed:
    """One immutable snapshot of the active alerts (swapped whole, so a request never sees half a feed)."""

    features: list[dict[str, Any]]
    updated: str
    title: str
    context: Any
    recorded: bool
    templates: list[bytes] = field(init=False)
    facts: list[_AlertFacts] = field(init=False)

    def __post_init__(self) -> None:
        self.templates = [_template(f) for f in self.features]
        self.facts = [_AlertFacts.of(f) for f in self.features]


def _alert_id(feature: Any) -> str:
    if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
        raise ValueError("every alert must be a GeoJSON Feature with properties")
    alert_id = feature["properties"].get("id")
    if not isinstance(alert_id, str) or not alert_id:
        raise ValueError("every alert needs a string properties.id")
    return alert_id


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@register_source
class NwsSource(ReplaySource):
    name = "nws"
    base_path = ""
    json_content_type = GEOJSON
    datasets = ("alerts", "points", "gridpoints")
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/alerts/active/?$", "alerts_active"),
        ("GET", r"^/alerts/active/count/?$", "alerts_count"),
        ("GET", r"^/alerts/active/zone/([^/]+)/?$", "alerts_zone"),
        ("GET", r"^/alerts/active/area/([^/]+)/?$", "alerts_area"),
        ("GET", r"^/alerts/active/region/([^/]+)/?$", "alerts_region"),
        ("GET", r"^/alerts/(?!active(?:/|$))([^/]+)/?$", "alert_by_id"),
        ("GET", r"^/points/(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)/?$", "points"),
        ("GET", r"^/gridpoints/([A-Za-z]{3})/(\d+),(\d+)/forecast/?$", "forecast"),
        ("GET", r"^/gridpoints/([A-Za-z]{3})/(\d+),(\d+)/forecast/hourly/?$", "forecast_hourly"),
        ("GET", r"^/gridpoints/([A-Za-z]{3})/(\d+),(\d+)/stations/?$", "grid_stations"),
        ("GET", r"^/gridpoints/([A-Za-z]{3})/(\d+),(\d+)/?$", "gridpoint_raw"),
        ("GET", r"^/stations/([^/]+)/observations/latest/?$", "observations_latest"),
        ("GET", r"^/stations/([^/]+)/observations/?$", "observations"),
        ("GET", r"^/.*$", "not_found"),
    )

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        if volume is not None:
            raise ValueError("nws has no volume option (its records are the recorded ones)")
        super().__init__(fixtures_dir, volume)
        self._lock = threading.Lock()
        self._weather = fixtures_dir / "weather"
        self._recorded = self._load_alerts()
        self._feed = self._recorded
        # Every alert ever served, so /alerts/{id} finds alerts that left the active feed (as the real API does).
        self._history: dict[str, bytes] = {}
        self._remember(self._recorded)
        count_path = self.directory / _COUNT_FILE
        self._recorded_count = dumps(_load(count_path)).encode() if count_path.is_file() else None
        self._points: dict[tuple[float, float], bytes] = {}
        # (WFO, x, y) -> {"forecast"|"hourly": {units: body}, "raw": body, "stations": body}
        self._grids: dict[tuple[str, int, int], dict[str, Any]] = {}
        self._load_points_and_grids()
        self._observations: dict[str, list[dict[str, Any]]] = {}
        self._latest: dict[str, bytes] = {}
        self._load_observations()

    # --- loading -------------------------------------------------------------------------------------------
    def _load_alerts(self) -> _Feed:
        files = sorted(self.directory.glob("*alerts_active*.json"))
        national = [p for p in files if "national" in p.name]
        ordered = national + [p for p in files if p not in national]  # the national file's versions win
        features: list[dict[str, Any]] = []
        seen: set[str] = set()
        updated: list[tuple[float, str]] = []
        title, context = "Current watches, warnings, and advisories", None
        for path in ordered:
            if path.name == _COUNT_FILE:
                continue
            body = _load(path)
            if not isinstance(body, dict) or not isinstance(body.get("features"), list):
                continue
            if context is None:
                context, title = body.get("@context"), body.get("title") or title
            if isinstance(body.get("updated"), str):
                updated.append((epoch_or_none(body["updated"]) or 0.0, body["updated"]))
            for feature in body["features"]:
                alert_id = _alert_id(feature)
                if alert_id not in seen:
                    seen.add(alert_id)
                    features.append(feature)
        newest = max(updated)[1] if updated else datetime.now(UTC).isoformat(timespec="seconds")
        return _Feed(features, newest, title, context, recorded=True)

    def _load_points_and_grids(self) -> None:
        if not self._weather.is_dir():
            return
        grid_of_prefix: dict[str, tuple[str, int, int]] = {}
        forecasts: list[tuple[str, dict[str, Any]]] = []
        for path in sorted(self._weather.glob("*.json")):
            if "nws" not in path.name:
                continue
            body = _load(path)
            props = body.get("properties") if isinstance(body, dict) else None
            if not isinstance(props, dict):
                continue
            prefix = path.name.split("_", 1)[0]
            if props.get("@type") == "wx:Point":
                lon, lat = body["geometry"]["coordinates"][:2]
                self._points[(round(float(lat), 4), round(float(lon), 4))] = _template(body)
                grid = (str(props["gridId"]).upper(), int(props["gridX"]), int(props["gridY"]))
                grid_of_prefix[prefix] = grid
                self._grids.setdefault(grid, {})
            elif props.get("@type") == "wx:Gridpoint":
                grid = (str(props["gridId"]).upper(), int(props["gridX"]), int(props["gridY"]))
                self._grids.setdefault(grid, {})["raw"] = _template(body)
            elif "forecastGenerator" in props and isinstance(props.get("periods"), list):
                forecasts.append((prefix, body))
        for prefix, body in forecasts:
            grid = grid_of_prefix.get(prefix)
            if grid is None:
                continue  # no /points file from the same recording names its grid
            props = body["properties"]
            kind = "hourly" if "Hourly" in str(props.get("forecastGenerator")) else "forecast"
            units = str(props.get("units") or "us")
            self._grids[grid].setdefault(kind, {})[units] = _template(body)
        stations = self.directory / "pynws_gridpoints_stations.json"
        tae = ("TAE", 58, 65)
        if stations.is_file() and tae in self._grids:
            self._grids[tae]["stations"] = _template(_load(stations))

    def _load_observations(self) -> None:
        for path in sorted(self.directory.glob("*stations_observations*.json")):
            body = _load(path)
            if not isinstance(body, dict):
                continue
            if body.get("type") == "Feature":
                station = self._station_of(body)
                if station:
                    self._latest[station] = _template(body)
                continue
            for feature in body.get("features") or []:
                station = self._station_of(feature)
                if not station:
                    continue
                known = self._observations.setdefault(station, [])
                if all(f.get("id") != feature.get("id") for f in known):
                    known.append(feature)
        self._observation_context = None
        for path in sorted(self.directory.glob("*stations_observations*.json")):
            self._observation_context = _load(path).get("@context")
            break

    @staticmethod
    def _station_of(feature: dict[str, Any]) -> str | None:
        station = (feature.get("properties") or {}).get("station")
        return str(station).rstrip("/").rsplit("/", 1)[-1].upper() if station else None

    def record_count(self, dataset: str) -> int:
        if dataset == "alerts":
            return len(self._feed.features)
        if dataset == "points":
            return len(self._points)
        if dataset == "gridpoints":
            return len(self._grids)
        return super().record_count(dataset)

    # --- the replaceable active feed -----------------------------------------------------------------------
    def set_active(
        self,
        features: list[dict[str, Any]],
        updated: str | None = None,
        *,
        title: str | None = None,
        context: Any = None,
    ) -> None:
        """Replace the active alerts with ``features`` (GeoJSON Features with ``properties.id``, unique).
        ``updated`` is the feed's ``updated`` (default: now, UTC)."""
        if not isinstance(features, list):
            raise ValueError("features must be a list of GeoJSON Features")
        ids = [_alert_id(f) for f in features]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate properties.id in the active features")
        if updated is not None and epoch_or_none(updated) is None:
            raise ValueError(f"updated is not an ISO-8601 time: {updated!r}")
        feed = _Feed(
            [json.loads(dumps(f)) for f in features],  # a private copy: later edits by the caller don't leak in
            updated or datetime.now(UTC).isoformat(timespec="seconds"),
            title or self._recorded.title,
            context if context is not None else self._recorded.context,
            recorded=False,
        )
        with self._lock:
            self._feed = feed
            self._remember(feed)

    def reset_active(self) -> None:
        """Serve the recorded feed again."""
        with self._lock:
            self._feed = self._recorded

    def active_state(self) -> dict[str, Any]:
        feed = self._feed
        return {"recorded": feed.recorded, "features": len(feed.features), "updated": feed.updated}

    def _remember(self, feed: _Feed) -> None:
        for feature, template in zip(feed.features, feed.templates, strict=True):
            self._history[feature["properties"]["id"]] = template

    def control(self, action: str, request: Request) -> Response | None:
        if action.strip("/") != "active":
            return None

        def answer(payload: Any, status: int = 200) -> Response:
            return Response(status, json.dumps(payload).encode("utf-8"), "application/json")

        if request.method == "GET":
            return answer(self.active_state())
        if request.method == "DELETE":
            self.reset_active()
            return answer(self.active_state())
        if request.method in ("PUT", "POST"):
            try:
                body = json.loads(request.body or b"null")
                if not isinstance(body, dict) or not isinstance(body.get("features"), list):
                    raise ValueError("body must be a FeatureCollection with a features list")
                self.set_active(
                    body["features"], body.get("updated"), title=body.get("title"), context=body.get("@context")
                )
            except ValueError as err:
                return answer({"error": str(err)}, 400)
            return answer(self.active_state())
        return answer({"error": f"{request.method} not allowed on /_replay/nws/active"}, 405)

    # --- responses -----------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if not user_agent_allowed(request.headers.get("user-agent")):
            blocked = fault_response(make_fault("html_error", status=403))
            assert blocked is not None
            status, body, content_type, headers = blocked
            return Response(status, body, content_type, headers)
        return super().handle(request)

    def _geo(self, request: Request, pieces: list[bytes], headers: dict[str, str] | None = None) -> Response:
        base = self.request_base_url(request).encode("utf-8")
        return Response(200, b"".join(pieces).replace(_LINK.encode(), base), GEOJSON, dict(headers or {}))

    @staticmethod
    def _problem(status: int, slug: str, title: str, detail: str) -> ApiError:
        correlation_id = secrets.token_hex(8)
        payload = {
            "correlationId": correlation_id,
            "title": title,
            "type": PROBLEM_PREFIX + slug,
            "status": status,
            "detail": detail,
            "instance": f"{NWS_ORIGIN}/requests/{correlation_id}",
        }
        return ApiError(status, detail, PROBLEM_JSON, payload=payload)

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        slug = {400: "InvalidParameter", 404: "NotFound", 405: "MethodNotAllowed"}.get(status, "UnexpectedProblem")
        err = self._problem(status, slug, _phrase(status), message)
        response = self.json_response(err.payload, status)
        response.content_type = PROBLEM_JSON
        return response

    @staticmethod
    def _ignored(request: Request, known: frozenset[str], extra: tuple[str, ...] = ()) -> dict[str, str]:
        ignored = sorted((set(request.query) - known) | set(extra))
        return {"X-Replay-Ignored-Params": ",".join(ignored)} if ignored else {}

    def not_found(self, request: Request, _match: re.Match[str]) -> Response:
        raise self._problem(404, "NotFound", "Not Found", f"'{request.path}' is not a recorded NWS endpoint")

    # --- alerts --------------------------------------------------------------------------------------------
    def _filtered(self, feed: _Feed, request: Request, zones: set[str], areas: set[str]) -> list[int]:
        areas = areas | {a.upper() for a in request.all("area")}
        zones = zones | {z.upper() for z in request.all("zone")}
        regions = {r.upper() for r in request.all("region")}
        region_type = {r.lower() for r in request.all("region_type")}
        wanted = {
            name: {v.lower() for v in request.all(name)}
            for name in ("status", "message_type", "event", "severity", "urgency", "certainty")
        }
        # event names hold no commas, but take whole values too ("Flood Warning")
        point = None
        raw_point = request.first("point")
        if raw_point:
            try:
                lat_text, lon_text = raw_point.split(",")
                point = (float(lat_text), float(lon_text))
            except ValueError:
                raise self._problem(
                    400, "InvalidParameter", "Invalid Parameter", f"Parameter \"point\" is invalid: '{raw_point}'"
                ) from None
        out = []
        for i, facts in enumerate(feed.facts):
            if areas and not any(u.startswith(a) for u in facts.ugc for a in areas):
                continue
            if zones and zones.isdisjoint(facts.zone_ids):
                continue
            if regions and regions.isdisjoint(MARINE_REGION_OF_AREA.get(a, "") for a in facts.areas):
                continue
            if region_type and ("marine" if facts.marine else "land") not in region_type:
                continue
            if any(values and facts.fields[name] not in values for name, values in wanted.items()):
                continue
            if point is not None and not geometry_contains(facts.geometry, *point):
                continue
            out.append(i)
        return out

    def _collection(self, request: Request, zones: set[str] | None = None, areas: set[str] | None = None) -> Response:
        feed = self._feed
        indices = self._filtered(feed, request, zones or set(), areas or set())
        head = ('{"@context":' + dumps(feed.context) + ',"type":"FeatureCollection","features":[').encode("utf-8")
        pieces = [head]
        for n, i in enumerate(indices):
            if n:
                pieces.append(b",")
            pieces.append(feed.templates[i])
        pieces.append(f'],"title":{dumps(feed.title)},"updated":{dumps(feed.updated)}}}'.encode())
        return self._geo(request, pieces, self._ignored(request, _ALERT_PARAMS))

    def alerts_active(self, request: Request, _match: re.Match[str]) -> Response:
        return self._collection(request)

    def alerts_zone(self, request: Request, match: re.Match[str]) -> Response:
        return self._collection(request, zones={unquote(match.group(1)).upper()})

    def alerts_area(self, request: Request, match: re.Match[str]) -> Response:
        return self._collection(request, areas={unquote(match.group(1)).upper()})

    def alerts_region(self, request: Request, match: re.Match[str]) -> Response:
        region = unquote(match.group(1)).upper()
        areas = {a for a, r in MARINE_REGION_OF_AREA.items() if r == region}
        if not areas:
            raise self._problem(404, "NotFound", "Not Found", f"'{region}' is not a marine region")
        return self._collection(request, areas=areas)

    def alerts_count(self, request: Request, _match: re.Match[str]) -> Response:
        feed = self._feed
        if feed.recorded and self._recorded_count is not None:
            return Response(200, self._recorded_count, GEOJSON)
        regions: dict[str, int] = {}
        areas: dict[str, int] = {}
        zones: dict[str, int] = {}
        marine = 0
        for facts in feed.facts:
            marine += facts.marine
            for region in {MARINE_REGION_OF_AREA[a] for a in facts.areas if a in MARINE_REGION_OF_AREA}:
                regions[region] = regions.get(region, 0) + 1
            for area in facts.areas:
                areas[area] = areas.get(area, 0) + 1
            for zone in set(facts.ugc):
                zones[zone] = zones.get(zone, 0) + 1
        total = len(feed.facts)
        payload = {
            "total": total,
            "land": total - marine,
            "marine": marine,
            "regions": dict(sorted(regions.items())),
            "areas": dict(sorted(areas.items())),
            "zones": dict(sorted(zones.items())),
        }
        return self.json_response(payload)

    def alert_by_id(self, request: Request, match: re.Match[str]) -> Response:
        alert_id = unquote(match.group(1))
        with self._lock:
            template = self._history.get(alert_id)
        if template is None:
            raise self._problem(404, "NotFound", "Not Found", f"Alert with ID {alert_id} not found")
        head = ('{"@context":' + dumps(self._feed.context) + ",").encode("utf-8")
        return self._geo(request, [head, template[1:]])

    # --- points and gridpoints -----------------------------------------------------------------------------
    def points(self, request: Request, match: re.Match[str]) -> Response:
        lat_text, lon_text = match.group(1), match.group(2)
        lat, lon = float(lat_text), float(lon_text)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise self._problem(
                400, "InvalidParameter", "Invalid Parameter", f"Parameter \"point\" is invalid: '{lat_text},{lon_text}'"
            )
        if _decimals(lat_text) > 4 or _decimals(lon_text) > 4:
            location = f"{self.request_base_url(request)}/points/{_coord_text(lat)},{_coord_text(lon)}"
            if request.query:
                location += "?" + urlencode([(k, v) for k, vs in request.query.items() for v in vs])
            return Response(301, b"", GEOJSON, {"Location": location})
        body = self._points.get((round(lat, 4), round(lon, 4)))
        if body is None:
            raise self._problem(
                404,
                "InvalidPoint",
                "Data Unavailable For Requested Point",
                f"Unable to provide data for requested point {_coord_text(lat)},{_coord_text(lon)}",
            )
        return self._geo(request, [body], self._ignored(request, frozenset()))

    def _grid(self, match: re.Match[str]) -> tuple[tuple[str, int, int], dict[str, Any]]:
        grid = (match.group(1).upper(), int(match.group(2)), int(match.group(3)))
        entry = self._grids.get(grid)
        if entry is None:
            raise self._problem(
                404, "NotFound", "Not Found", f"No recorded data for gridpoint {grid[0]}/{grid[1]},{grid[2]} (replay)"
            )
        return grid, entry

    def _forecast(self, request: Request, match: re.Match[str], kind: str) -> Response:
        grid, entry = self._grid(match)
        units = (request.first("units") or "us").strip().lower() or "us"
        if units not in ("us", "si"):
            raise self._problem(
                400, "InvalidParameter", "Invalid Parameter", f"Query parameter \"units\" is invalid: '{units}'"
            )
        recorded = entry.get(kind) or {}
        if not recorded:
            raise self._problem(
                404,
                "NotFound",
                "Not Found",
                f"No recorded {kind} for gridpoint {grid[0]}/{grid[1]},{grid[2]} (replay)",
            )
        extra: tuple[str, ...] = ()
        body = recorded.get(units)
        if body is None:
            body = recorded.get("us") or next(iter(recorded.values()))
            extra = ("units",)
        return self._geo(request, [body], self._ignored(request, frozenset({"units"}), extra))

    def forecast(self, request: Request, match: re.Match[str]) -> Response:
        return self._forecast(request, match, "forecast")

    def forecast_hourly(self, request: Request, match: re.Match[str]) -> Response:
        return self._forecast(request, match, "hourly")

    def gridpoint_raw(self, request: Request, match: re.Match[str]) -> Response:
        grid, entry = self._grid(match)
        if "raw" not in entry:
            raise self._problem(
                404, "NotFound", "Not Found", f"No recorded grid data for {grid[0]}/{grid[1]},{grid[2]} (replay)"
            )
        return self._geo(request, [entry["raw"]], self._ignored(request, frozenset()))

    def grid_stations(self, request: Request, match: re.Match[str]) -> Response:
        grid, entry = self._grid(match)
        if "stations" not in entry:
            raise self._problem(
                404, "NotFound", "Not Found", f"No recorded stations for {grid[0]}/{grid[1]},{grid[2]} (replay)"
            )
        return self._geo(request, [entry["stations"]], self._ignored(request, frozenset()))

    # --- stations ------------------------------------------------------------------------------------------
    def observations(self, request: Request, match: re.Match[str]) -> Response:
        station = unquote(match.group(1)).upper()
        features = self._observations.get(station)
        if features is None:
            raise self._problem(404, "NotFound", "Not Found", f"No recorded observations for station {station}")
        payload = {"@context": self._observation_context, "type": "FeatureCollection", "features": features}
        return self._geo(request, [_template(payload)], self._ignored(request, frozenset()))

    def observations_latest(self, request: Request, match: re.Match[str]) -> Response:
        station = unquote(match.group(1)).upper()
        body = self._latest.get(station)
        if body is None:
            raise self._problem(404, "NotFound", "Not Found", f"No recorded latest observation for station {station}")
        return self._geo(request, [body], self._ignored(request, frozenset()))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
