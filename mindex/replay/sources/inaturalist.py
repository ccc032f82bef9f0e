"""iNaturalist API v1 replay:
``/v1/observations``, ``/v1/observations/{ids}``, ``/v1/taxa``, ``/v1/taxa/{ids}``.

Records (loaded once from ``<fixtures>/inaturalist/``):

* Observations: ``results[]`` of every v1 observation response (records with a ``quality_grade`` or
  ``observed_on`` key). ``pyinat_v2_*`` (the v2 API) and ``derived_observation_results.jsonl`` (the same
  records again) are skipped, as is the ``only_id=true`` response whose single record is just an id. A file
  whose top-level value is a JSON string is decoded once more. Duplicate ids keep the record with the latest
  ``updated_at`` (compared as UTC instants); ties keep the richer record (more keys, then longer JSON).
* Taxa: ``results[]`` of the v1 taxa files (``pyinat_v1_taxa*.json``) plus every taxon object embedded in any
  v1 response: an observation's ``taxon`` / ``community_taxon``, ``identifications[].taxon`` and
  ``previous_observation_taxon``, the taxa in the species_counts and identifications files, and the
  ``ancestors`` / ``children`` lists inside taxa. These embedded taxa are real API records, exactly as the API
  returned them inside those responses. Duplicate ids keep the richer object (more keys, then longer JSON).

Behaviour that mirrors the real API (see API_NOTES.md section 1 and FAILURE_CASES C01):

* Envelope ``{total_results, page, per_page, results}``; ``per_page`` defaults to 30 and is silently capped
  at 200; ``page`` is 1-based; ``total_results`` is the size of the filtered set.
* The 10,000-result window: ``page * per_page > 10000`` answers HTTP 500 with Elasticsearch's message.
  Keyset paging (``order_by=id&order=asc&id_above=<last id>``, always page 1) never reaches it.
* Order: ``order_by`` = ``id`` (default), ``created_at`` or ``updated_at``; ``order`` = ``desc`` (default) or
  ``asc``. The real default is ``created_at desc``; the replay defaults to ``id desc`` so an unordered page is
  deterministic (documented deviation).
* ``/v1/observations`` filters: ``taxon_id`` (comma list; matches the record's ``taxon.id`` or any of
  ``taxon.ancestor_ids``), ``id`` (comma list), ``updated_since`` (``updated_at >=`` the instant),
  ``id_above``, ``id_below``, ``quality_grade`` (comma list), ``only_id=true``.
* ``/v1/taxa`` filters: ``taxon_id`` (the taxon and its descendants via ``ancestor_ids``), ``id``,
  ``id_above``, ``id_below``, ``is_active`` (``true``/``false``/``any``; the replay's default is all taxa,
  where the real API defaults to active ones), ``q`` (case-insensitive substring of ``name``), ``rank``.
* ``/{ids}`` endpoints take at most 30 comma-separated ids (observations also accept uuids), else HTTP 422.
* Unsupported parameters are ignored as the real API ignores unknown ones, and listed in the
  ``X-Replay-Ignored-Params`` response header so a test can notice a filter that did nothing.

Volume: ``volumes={"inaturalist": N}`` makes the observation store hold exactly N records; the extra ones are
derived (see ``mindex.replay.store``): new ids above every real id, a fresh uuid (uuid5 of the new id, so a
derived copy never claims a real observation's uuid), ``updated_at``/``created_at``/``observed_on``/
``time_observed_at`` moved back whole days, and ``"_replay_derived": true``. Everything else, including
``*_details`` and ``observed_on_string``, is the base record's real value.
"""

from __future__ import annotations

import json
import re
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from mindex.replay.base import (
    ApiError,
    ReplaySource,
    Request,
    Response,
    int_list,
    int_param,
    register_source,
)
from mindex.replay.store import DeriveSpec, RecordStore, dumps
from mindex.replay.timeutil import epoch_or_none, parse_instant

RESULT_WINDOW = 10_000
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 30
MAX_IDS_PER_REQUEST = 30
_DERIVED_UUID_NAMESPACE = uuid.UUID("6f1c8a52-4d0e-4c0b-9d59-0c1a7e5b2f10")
_TIME_FIELDS = ("updated_at", "created_at", "observed_on", "time_observed_at")
_TAXON_KEYS = frozenset({"taxon", "community_taxon", "previous_observation_taxon"})
_TAXON_LIST_KEYS = frozenset({"ancestors", "children"})

_OBS_PARAMS = frozenset(
    {
        "taxon_id",
        "id",
        "updated_since",
        "id_above",
        "id_below",
        "quality_grade",
        "order_by",
        "order",
        "per_page",
        "page",
        "only_id",
    }
)
_TAXA_PARAMS = frozenset(
    {
        "taxon_id",
        "id",
        "id_above",
        "id_below",
        "is_active",
        "q",
        "rank",
        "order_by",
        "order",
        "per_page",
        "page",
    }
)


def load_json_file(path: Path) -> Any:
    """Parse a fixture; a top-level JSON *string* is decoded once more (one body was double-encoded)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    return data


def is_observation(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("id"), int)
        and ("quality_grade" in record or "observed_on" in record)
    )


def is_taxon(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("id"), int)
        and "name" in obj
        and ("rank" in obj or "rank_level" in obj)
    )


def iter_embedded_taxa(obj: Any) -> Iterator[dict[str, Any]]:
    """Taxon objects nested anywhere in ``obj`` under a taxon key or an ancestors/children list."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in _TAXON_KEYS and is_taxon(value):
                yield value
            elif key in _TAXON_LIST_KEYS and isinstance(value, list):
                yield from (v for v in value if is_taxon(v))
            yield from iter_embedded_taxa(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from iter_embedded_taxa(value)


def _richness(record: dict[str, Any]) -> tuple[int, int]:
    return len(record), len(dumps(record))


def taxon_lineage(taxon: Any) -> frozenset[int]:
    """The taxon id and all its ancestors (``ancestor_ids``, falling back to the ``ancestry`` path)."""
    if not isinstance(taxon, dict):
        return frozenset()
    ids: set[int] = set()
    if isinstance(taxon.get("id"), int):
        ids.add(taxon["id"])
    ids.update(i for i in taxon.get("ancestor_ids") or () if isinstance(i, int))
    ancestry = taxon.get("ancestry")
    if isinstance(ancestry, str):
        ids.update(int(p) for p in ancestry.split("/") if p.isdigit())
    return frozenset(ids)


def _derived_uuid(base: dict[str, Any], new_id: int) -> dict[str, Any]:
    """A derived copy must not claim the real observation's uuid (a mirror may key on it)."""
    if "uuid" not in base:
        return {}
    return {"uuid": str(uuid.uuid5(_DERIVED_UUID_NAMESPACE, f"inaturalist-observation-{new_id}"))}


_DERIVE = DeriveSpec(shift_fields=_TIME_FIELDS, extra=_derived_uuid, extra_keys=("uuid",))


@register_source
class InaturalistSource(ReplaySource):
    name = "inaturalist"
    json_content_type = "application/json; charset=utf-8"
    datasets = ("observations", "taxa")
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/v1/observations/?$", "observations_search"),
        ("GET", r"^/v1/observations/([^/]+)$", "observations_by_ids"),
        ("GET", r"^/v1/taxa/?$", "taxa_search"),
        ("GET", r"^/v1/taxa/([^/]+)$", "taxa_by_ids"),
    )

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        super().__init__(fixtures_dir, volume)
        observations, taxa = self._load()
        self.observations = RecordStore(
            list(observations.values()),
            id_key="id",
            total=volume,
            derive=_DERIVE,
            epoch_fields=("updated_at", "created_at"),
        )
        self.taxa = RecordStore(list(taxa.values()), id_key="id", epoch_fields=())
        # Per real record facts the filters need (derived records share their base's).
        self._obs_lineage = [taxon_lineage(r.get("taxon")) for r in self.observations.real]
        self._obs_quality = [r.get("quality_grade") for r in self.observations.real]
        self._obs_by_uuid = {r["uuid"]: i for i, r in enumerate(self.observations.real) if r.get("uuid")}
        self._taxa_lineage = [taxon_lineage(r) for r in self.taxa.real]

    # --- loading -------------------------------------------------------------------------------------------
    def _load(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no iNaturalist fixtures at {self.directory}")
        observations: dict[int, dict[str, Any]] = {}
        obs_rank: dict[int, tuple[float, int, int]] = {}
        taxa: dict[int, dict[str, Any]] = {}
        taxa_rank: dict[int, tuple[int, int]] = {}

        def add_taxon(taxon: dict[str, Any]) -> None:
            rank = _richness(taxon)
            if taxon["id"] not in taxa or rank > taxa_rank[taxon["id"]]:
                taxa[taxon["id"]], taxa_rank[taxon["id"]] = taxon, rank

        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith("pyinat_v2_"):
                continue  # v2 API: different record shape
            data = load_json_file(path)
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                continue
            taxa_file = path.name.startswith("pyinat_v1_taxa")
            for record in data["results"]:
                if taxa_file and is_taxon(record):
                    add_taxon(record)
                elif is_observation(record):
                    updated = epoch_or_none(record.get("updated_at"))
                    rank = (updated if updated is not None else float("-inf"), *_richness(record))
                    if record["id"] not in observations or rank > obs_rank[record["id"]]:
                        observations[record["id"]], obs_rank[record["id"]] = record, rank
                for taxon in iter_embedded_taxa(record):
                    add_taxon(taxon)
        return observations, taxa

    def record_count(self, dataset: str) -> int:
        if dataset == "observations":
            return len(self.observations)
        if dataset == "taxa":
            return len(self.taxa)
        return super().record_count(dataset)

    # --- errors ---------------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        if status == 500:
            return self.json_response({"status": "500", "errors": [{"message": message}]}, 500)
        return self.json_response({"error": message, "status": status}, status)

    # --- shared paging -------------------------------------------------------------------------------------
    def _page_params(self, request: Request) -> tuple[int, int]:
        per_page = min(int_param(request, "per_page", DEFAULT_PER_PAGE, 0, status=422), MAX_PER_PAGE)
        page = max(int_param(request, "page", 1, 0, status=422), 1)
        if page * per_page > RESULT_WINDOW:
            raise ApiError(
                500,
                (
                    "Result window is too large, from + size must be less than or equal to: "
                    f"[{RESULT_WINDOW}] but was [{page * per_page}]. "
                    "See the scroll api for a more efficient way to request large data sets. "
                    "This limit can be set by changing the [index.max_result_window] index level setting."
                ),
            )
        return page, per_page

    @staticmethod
    def _order(request: Request, allowed: tuple[str, ...]) -> tuple[str, bool]:
        order_by = (request.first("order_by") or "id").strip() or "id"
        if order_by not in allowed:
            raise ApiError(422, f"order_by must be one of {', '.join(allowed)}")
        order = (request.first("order") or "desc").strip().lower() or "desc"
        if order not in ("asc", "desc"):
            raise ApiError(422, "order must be asc or desc")
        return order_by, order == "desc"

    @staticmethod
    def _ignored(request: Request, known: frozenset[str]) -> dict[str, str]:
        ignored = sorted(set(request.query) - known)
        return {"X-Replay-Ignored-Params": ",".join(ignored)} if ignored else {}

    def _envelope(
        self,
        store: RecordStore,
        indices: list[int],
        page: int,
        per_page: int,
        headers: dict[str, str],
        only_id: bool = False,
    ) -> Response:
        chunk = indices[(page - 1) * per_page : page * per_page]
        if only_id:
            results = [dumps([{"id": store.ids[i]} for i in chunk]).encode()]
        else:
            results = store.pieces(chunk)
        head = f'{{"total_results":{len(indices)},"page":{page},"per_page":{per_page},"results":'
        return self.raw_json_response([head.encode(), *results, b"}"], headers=headers)

    def _ids_envelope(self, store: RecordStore, found: list[int]) -> Response:
        # As recorded: per_page = the number found, 30 when nothing matched.
        per_page = len(found) or DEFAULT_PER_PAGE
        head = f'{{"total_results":{len(found)},"page":1,"per_page":{per_page},"results":'
        return self.raw_json_response([head.encode(), *store.pieces(found), b"}"])

    @staticmethod
    def _id_window(store: RecordStore, indices: list[int], above: int | None, below: int | None) -> list[int]:
        """Cut an id-ascending index list to ids in (above, below) by bisection."""
        lo = 0 if above is None else bisect_right(indices, above, key=store.ids.__getitem__)
        hi = len(indices) if below is None else bisect_left(indices, below, key=store.ids.__getitem__)
        return indices[lo:hi]

    @staticmethod
    def _ordered(store: RecordStore, indices: list[int], order_by: str, desc: bool) -> list[int]:
        if order_by != "id":
            epochs = store.epochs(order_by)
            indices = sorted(
                indices, key=lambda i: (epochs[i] if epochs[i] is not None else float("-inf"), store.ids[i])
            )
        return indices[::-1] if desc else indices

    # --- /v1/observations ----------------------------------------------------------------------------------
    def observations_search(self, request: Request, _match: re.Match[str]) -> Response:
        store = self.observations
        page, per_page = self._page_params(request)
        order_by, desc = self._order(request, ("id", "created_at", "updated_at"))
        taxon_ids = frozenset(int_list(request, "taxon_id", 422))
        ids = frozenset(int_list(request, "id", 422))
        qualities = frozenset(request.all("quality_grade"))
        since_raw = request.first("updated_since")
        since = None
        if since_raw:
            try:
                since = parse_instant(since_raw).timestamp()
            except ValueError:
                raise ApiError(422, f"updated_since is not an ISO-8601 time: {since_raw}") from None
        above = int_param(request, "id_above", -1, -1, 422)
        below = int_param(request, "id_below", -1, -1, 422)

        def compute() -> list[int]:
            base_ok = [
                (not taxon_ids or not taxon_ids.isdisjoint(lineage)) and (not qualities or q in qualities)
                for lineage, q in zip(self._obs_lineage, self._obs_quality, strict=True)
            ]
            if ids:
                candidates = sorted(i for i in (store.index_of(x) for x in ids) if i is not None)
            else:
                candidates = range(len(store))
            base_of = store.base_of
            updated = store.epochs("updated_at")
            return [
                i
                for i in candidates
                if base_ok[base_of[i]] and (since is None or (updated[i] is not None and updated[i] >= since))
            ]

        # id_above/id_below/order/paging are applied to the cached list, so a keyset pager hits the cache.
        matched = store.cached(("obs", taxon_ids, ids, qualities, since), compute)
        matched = self._id_window(
            store, matched, above if above >= 0 else None, below if below >= 0 else None
        )
        matched = self._ordered(store, matched, order_by, desc)
        only_id = (request.first("only_id") or "").lower() == "true"
        return self._envelope(store, matched, page, per_page, self._ignored(request, _OBS_PARAMS), only_id)

    def observations_by_ids(self, request: Request, match: re.Match[str]) -> Response:
        store = self.observations
        tokens = [t.strip() for t in match.group(1).split(",") if t.strip()]
        if len(tokens) > MAX_IDS_PER_REQUEST:
            raise ApiError(422, f"Too many IDs: {len(tokens)} (the maximum is {MAX_IDS_PER_REQUEST})")
        found: list[int] = []
        for token in tokens:
            if token.isdigit():
                index = store.index_of(int(token))
            elif token in self._obs_by_uuid:
                index = self._obs_by_uuid[token]
            else:
                raise ApiError(422, f"Invalid observation id: {token}")
            if index is not None and index not in found:
                found.append(index)
        return self._ids_envelope(store, found)

    # --- /v1/taxa -------------------------------------------------------------------------------------------
    def taxa_search(self, request: Request, _match: re.Match[str]) -> Response:
        store = self.taxa
        page, per_page = self._page_params(request)
        order_by, desc = self._order(request, ("id",))
        taxon_ids = frozenset(int_list(request, "taxon_id", 422))
        ids = frozenset(int_list(request, "id", 422))
        active = (request.first("is_active") or "any").strip().lower()
        if active not in ("true", "false", "any"):
            raise ApiError(422, "is_active must be true, false or any")
        q = (request.first("q") or "").strip().lower()
        ranks = frozenset(r.lower() for r in request.all("rank"))
        above = int_param(request, "id_above", -1, -1, 422)
        below = int_param(request, "id_below", -1, -1, 422)

        def compute() -> list[int]:
            out = []
            for i, taxon in enumerate(store.real):
                if taxon_ids and taxon_ids.isdisjoint(self._taxa_lineage[i]):
                    continue
                if ids and taxon["id"] not in ids:
                    continue
                if active != "any" and bool(taxon.get("is_active")) != (active == "true"):
                    continue
                if q and q not in str(taxon.get("name") or "").lower():
                    continue
                if ranks and str(taxon.get("rank") or "").lower() not in ranks:
                    continue
                out.append(i)
            return out

        matched = store.cached(("taxa", taxon_ids, ids, active, q, ranks), compute)
        matched = self._id_window(
            store, matched, above if above >= 0 else None, below if below >= 0 else None
        )
        matched = self._ordered(store, matched, order_by, desc)
        return self._envelope(store, matched, page, per_page, self._ignored(request, _TAXA_PARAMS))

    def taxa_by_ids(self, request: Request, match: re.Match[str]) -> Response:
        store = self.taxa
        tokens = [t.strip() for t in match.group(1).split(",") if t.strip()]
        if len(tokens) > MAX_IDS_PER_REQUEST:
            raise ApiError(422, f"Too many IDs: {len(tokens)} (the maximum is {MAX_IDS_PER_REQUEST})")
        found: list[int] = []
        for token in tokens:
            if not token.isdigit():
                raise ApiError(422, f"Invalid taxon id: {token}")
            index = store.index_of(int(token))
            if index is not None and index not in found:
                found.append(index)
        return self._ids_envelope(store, found)
