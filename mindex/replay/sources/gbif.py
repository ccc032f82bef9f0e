"""GBIF API v1 replay: occurrence search / get / count and species list / search / get.

Records (loaded once from ``<fixtures>/gbif/``):

* Occurrences: ``results[]`` of ``occurrence_search_*.json`` and ``spocc_*.json`` plus the single record
  ``occurrence_142316497.json``, de-duplicated by ``key``.
* Species (name usages): ``results[]`` of the list responses ``species_*.json`` (``species_limit10``,
  ``species_datasetKey_limit100``, ``species_search_q_mammalia_limit100``) plus ``species_1.json``,
  de-duplicated by ``key`` keeping the richer object. ``species_match_*`` is not a name usage and is skipped.

Behaviour that mirrors the real API (API_NOTES.md section 2 and FAILURE_CASES C02):

* ``/v1/occurrence/search``: envelope ``{offset, limit, endOfRecords, count, results, facets}``; ``limit``
  defaults to 20 and is silently cut to 300 (the response shows 300); ``offset`` defaults to 0;
  ``offset + limit > 100000`` answers HTTP 400 text/plain
  ``Max offset of 100001 exceeded: <offset> + <limit>``.
  ``endOfRecords`` = ``offset + len(results) >= count``. Records are ordered by ``key`` ascending (stable
  paging; the real order is unspecified).
* Occurrence filters: ``taxonKey`` (repeatable; matches taxonKey, acceptedTaxonKey or any rank key),
  ``datasetKey`` (repeatable), ``lastInterpreted`` (``yyyy``, ``yyyy-MM``, ``yyyy-MM-dd`` or a full
  timestamp, or a range ``a,b`` inclusive on both ends at each end's granularity, ``*`` = open end; compared
  on the record's ``lastInterpreted`` in UTC), ``year`` (int or range).
* ``/v1/occurrence/count`` answers a bare integer (same filters). ``/v1/occurrence/{key}`` one record.
* ``/v1/species``: ``{offset, limit, endOfRecords, results}`` (no ``count``, as recorded); filter
  ``datasetKey``; limit cap 1000. ``/v1/species/search``: adds ``count`` and ``facets``; filters
  ``highertaxonKey``, ``datasetKey``, ``rank``, ``status``/``taxonomicStatus``, ``q``; limit cap
  1000 and the 100,000 offset cap.
* Unsupported parameters are ignored and listed in the ``X-Replay-Ignored-Params`` response header.

Volume: ``volumes={"gbif": N}`` makes the occurrence store hold exactly N records. Derived ones (see
``mindex.replay.store``) get ``key``/``gbifID`` above every real key, ``lastInterpreted``/``lastParsed``/
``lastCrawled``/``modified``/``eventDate`` moved back whole days, ``"_replay_derived": true``, and
``catalogNumber``/``occurrenceID``/``identifier``/``references`` set to null, because on iNaturalist-published
rows those name the real observation and a derived row must not claim to republish it. ``year``/``month``/
``day`` stay the base record's real values.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime
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
from mindex.replay.store import DeriveSpec, RecordStore
from mindex.replay.timeutil import parse_instant

OCCURRENCE_MAX_LIMIT = 300
SPECIES_MAX_LIMIT = 1000
DEFAULT_LIMIT = 20
MAX_OFFSET = 100_000
_TEXT = "text/plain; charset=utf-8"

_OCC_TAXON_FIELDS = (
    "taxonKey",
    "acceptedTaxonKey",
    "kingdomKey",
    "phylumKey",
    "classKey",
    "orderKey",
    "familyKey",
    "genusKey",
    "subgenusKey",
    "speciesKey",
)
_SPECIES_HIGHER_FIELDS = (
    "key",
    "kingdomKey",
    "phylumKey",
    "classKey",
    "orderKey",
    "familyKey",
    "genusKey",
    "speciesKey",
    "parentKey",
)
_OCC_TIME_FIELDS = ("lastInterpreted", "lastParsed", "lastCrawled", "modified", "eventDate")
_OCC_NULLED_FIELDS = ("catalogNumber", "occurrenceID", "identifier", "references")
_OCC_PARAMS = frozenset({"taxonKey", "datasetKey", "lastInterpreted", "year", "offset", "limit"})
_SPECIES_PARAMS = frozenset({"datasetKey", "offset", "limit"})
_SPECIES_SEARCH_PARAMS = frozenset(
    {"highertaxonKey", "datasetKey", "rank", "status", "taxonomicStatus", "q", "offset", "limit"}
)
_INF = float("inf")


_DERIVE = DeriveSpec(
    shift_fields=_OCC_TIME_FIELDS, null_fields=_OCC_NULLED_FIELDS, id_text_fields=("gbifID",)
)


def _granule(text: str) -> tuple[float, float]:
    """``[start, end)`` epoch seconds of a GBIF date value at its granularity (year, month, day, instant)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            year = int(value)
            return datetime(year, 1, 1, tzinfo=UTC).timestamp(), datetime(
                year + 1, 1, 1, tzinfo=UTC
            ).timestamp()
        if re.fullmatch(r"\d{4}-\d{2}", value):
            year, month = int(value[:4]), int(value[5:])
            start = datetime(year, month, 1, tzinfo=UTC).timestamp()
            return start, start + calendar.monthrange(year, month)[1] * 86_400
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            start = parse_instant(value).timestamp()
            return start, start + 86_400
        instant = parse_instant(value).timestamp()
        return instant, instant + 0.001  # GBIF timestamps carry milliseconds
    except ValueError:
        raise ApiError(400, f"Invalid date value: {text}", _TEXT) from None


def parse_date_ranges(values: list[str]) -> tuple[tuple[float, float], ...]:
    """Each value ``a`` or ``a,b`` (``*`` open) -> ``[lo, hi)``; several values are OR-ed, as GBIF does."""
    ranges = []
    for raw in values:
        parts = raw.split(",")
        if len(parts) == 1:
            ranges.append(_granule(parts[0]))
        elif len(parts) == 2:
            lo = -_INF if parts[0].strip() in ("*", "") else _granule(parts[0])[0]
            hi = _INF if parts[1].strip() in ("*", "") else _granule(parts[1])[1]
            ranges.append((lo, hi))
        else:
            raise ApiError(400, f"Invalid range: {raw}", _TEXT)
    return tuple(ranges)


def parse_int_ranges(values: list[str], name: str) -> tuple[tuple[float, float], ...]:
    ranges = []
    for raw in values:
        parts = [p.strip() for p in raw.split(",")]
        try:
            if len(parts) == 1:
                ranges.append((int(parts[0]), int(parts[0])))
            elif len(parts) == 2:
                ranges.append(
                    (
                        -_INF if parts[0] in ("*", "") else int(parts[0]),
                        _INF if parts[1] in ("*", "") else int(parts[1]),
                    )
                )
            else:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"Invalid {name} value: {raw}", _TEXT) from None
    return tuple(ranges)


@register_source
class GbifSource(ReplaySource):
    name = "gbif"
    json_content_type = "application/json"
    datasets = ("occurrences", "species")
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/v1/occurrence/search/?$", "occurrence_search"),
        ("GET", r"^/v1/occurrence/count/?$", "occurrence_count"),
        ("GET", r"^/v1/occurrence/(\d+)/?$", "occurrence_get"),
        ("GET", r"^/v1/species/?$", "species_list"),
        ("GET", r"^/v1/species/search/?$", "species_search"),
        ("GET", r"^/v1/species/(\d+)/?$", "species_get"),
    )

    def __init__(self, fixtures_dir: Path, volume: int | None = None) -> None:
        super().__init__(fixtures_dir, volume)
        occurrences, species = self._load()
        self.occurrences = RecordStore(
            list(occurrences.values()),
            id_key="key",
            total=volume,
            derive=_DERIVE,
            epoch_fields=("lastInterpreted",),
        )
        self.species = RecordStore(list(species.values()), id_key="key")
        self._occ_taxa = [
            frozenset(r[f] for f in _OCC_TAXON_FIELDS if isinstance(r.get(f), int))
            for r in self.occurrences.real
        ]
        self._species_higher = [self._higher_keys(r) for r in self.species.real]

    @staticmethod
    def _higher_keys(usage: dict[str, Any]) -> frozenset[int]:
        keys = {usage[f] for f in _SPECIES_HIGHER_FIELDS if isinstance(usage.get(f), int)}
        for key in usage.get("higherClassificationMap") or {}:
            if str(key).isdigit():
                keys.add(int(key))
        return frozenset(keys)

    def _load(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no GBIF fixtures at {self.directory}")
        occurrences: dict[int, dict[str, Any]] = {}
        species: dict[int, dict[str, Any]] = {}

        def read(path: Path) -> Any:
            return json.loads(path.read_text(encoding="utf-8"))

        def results(path: Path) -> list[Any]:
            data = read(path)
            return data["results"] if isinstance(data, dict) and isinstance(data.get("results"), list) else []

        occurrence_files = sorted(self.directory.glob("occurrence_search_*.json")) + sorted(
            self.directory.glob("spocc_*.json")
        )
        occurrence_records = [r for p in occurrence_files for r in results(p)]
        single = self.directory / "occurrence_142316497.json"
        if single.is_file():
            occurrence_records.append(read(single))
        for record in occurrence_records:
            if isinstance(record, dict) and isinstance(record.get("key"), int):
                occurrences.setdefault(record["key"], record)

        species_records = [
            r
            for p in sorted(self.directory.glob("species_*.json"))
            if not p.name.startswith("species_match_")
            for r in results(p)
        ]
        single = self.directory / "species_1.json"
        if single.is_file():
            species_records.append(read(single))
        for record in species_records:
            if isinstance(record, dict) and isinstance(record.get("key"), int):
                current = species.get(record["key"])
                if current is None or (len(record), len(json.dumps(record))) > (
                    len(current),
                    len(json.dumps(current)),
                ):
                    species[record["key"]] = record
        return occurrences, species

    def record_count(self, dataset: str) -> int:
        if dataset == "occurrences":
            return len(self.occurrences)
        if dataset == "species":
            return len(self.species)
        return super().record_count(dataset)

    def error_response(self, status: int, message: str, content_type: str | None = None) -> Response:
        if status == 400:
            return Response(400, message.encode("utf-8"), content_type or _TEXT)  # GBIF answers 400s in text
        return super().error_response(status, message, content_type)

    # --- paging ---------------------------------------------------------------------------------------------
    @staticmethod
    def _offset_limit(request: Request, max_limit: int, deep_cap: bool) -> tuple[int, int]:
        offset = int_param(request, "offset", 0, 0)
        limit = min(int_param(request, "limit", DEFAULT_LIMIT, 0), max_limit)  # silently cut, as GBIF does
        if deep_cap and offset + limit > MAX_OFFSET:
            raise ApiError(400, f"Max offset of {MAX_OFFSET + 1} exceeded: {offset} + {limit}", _TEXT)
        return offset, limit

    @staticmethod
    def _ignored(request: Request, known: frozenset[str]) -> dict[str, str]:
        ignored = sorted(set(request.query) - known)
        return {"X-Replay-Ignored-Params": ",".join(ignored)} if ignored else {}

    def _page(
        self,
        store: RecordStore,
        indices: list[int],
        offset: int,
        limit: int,
        with_count: bool,
        headers: dict[str, str],
    ) -> Response:
        chunk = indices[offset : offset + limit]
        end = "true" if offset + len(chunk) >= len(indices) else "false"
        count = f',"count":{len(indices)}' if with_count else ""
        facets = ',"facets":[]' if with_count else ""
        head = f'{{"offset":{offset},"limit":{limit},"endOfRecords":{end}{count},"results":'
        tail = f"{facets}}}"
        pieces = [head.encode(), *store.pieces(chunk), tail.encode()]
        return self.raw_json_response(pieces, headers=headers)

    # --- occurrences ----------------------------------------------------------------------------------------
    def _occurrence_matches(self, request: Request) -> list[int]:
        store = self.occurrences
        taxon_keys = frozenset(int_list(request, "taxonKey"))
        dataset_keys = frozenset(
            v for values in request.query.get("datasetKey", []) for v in values.split(",")
        )
        li_ranges = parse_date_ranges(request.query.get("lastInterpreted", []))
        years = parse_int_ranges(request.query.get("year", []), "year")

        def compute() -> list[int]:
            base_ok = []
            for i, record in enumerate(store.real):
                year = record.get("year")
                base_ok.append(
                    (not taxon_keys or not taxon_keys.isdisjoint(self._occ_taxa[i]))
                    and (not dataset_keys or record.get("datasetKey") in dataset_keys)
                    and (not years or (isinstance(year, int) and any(lo <= year <= hi for lo, hi in years)))
                )
            base_of = store.base_of
            if not li_ranges:
                return [i for i in range(len(store)) if base_ok[base_of[i]]]
            li = store.epochs("lastInterpreted")
            if len(li_ranges) == 1:
                lo, hi = li_ranges[0]
                return [
                    i
                    for i in range(len(store))
                    if base_ok[base_of[i]] and li[i] is not None and lo <= li[i] < hi
                ]
            return [
                i
                for i in range(len(store))
                if base_ok[base_of[i]] and li[i] is not None and any(lo <= li[i] < hi for lo, hi in li_ranges)
            ]

        return store.cached(("occ", taxon_keys, dataset_keys, li_ranges, years), compute)

    def occurrence_search(self, request: Request, _match: re.Match[str]) -> Response:
        offset, limit = self._offset_limit(request, OCCURRENCE_MAX_LIMIT, deep_cap=True)
        matched = self._occurrence_matches(request)
        return self._page(self.occurrences, matched, offset, limit, True, self._ignored(request, _OCC_PARAMS))

    def occurrence_count(self, request: Request, _match: re.Match[str]) -> Response:
        return self.raw_json_response(
            str(len(self._occurrence_matches(request))), headers=self._ignored(request, _OCC_PARAMS)
        )

    def occurrence_get(self, _request: Request, match: re.Match[str]) -> Response:
        index = self.occurrences.index_of(int(match.group(1)))
        if index is None:
            return self.json_response({"error": "Not Found", "status": 404}, 404)
        return self.raw_json_response(self.occurrences.json_bytes(index))

    # --- species --------------------------------------------------------------------------------------------
    def species_list(self, request: Request, _match: re.Match[str]) -> Response:
        store = self.species
        offset, limit = self._offset_limit(request, SPECIES_MAX_LIMIT, deep_cap=False)
        dataset_keys = frozenset(request.all("datasetKey"))
        matched = store.cached(
            ("species", dataset_keys),
            lambda: [
                i for i, r in enumerate(store.real) if not dataset_keys or r.get("datasetKey") in dataset_keys
            ],
        )
        return self._page(store, matched, offset, limit, False, self._ignored(request, _SPECIES_PARAMS))

    def species_search(self, request: Request, _match: re.Match[str]) -> Response:
        store = self.species
        offset, limit = self._offset_limit(request, SPECIES_MAX_LIMIT, deep_cap=True)
        higher = frozenset(int_list(request, "highertaxonKey"))
        dataset_keys = frozenset(request.all("datasetKey"))
        ranks = frozenset(r.upper() for r in request.all("rank"))
        statuses = frozenset(s.upper() for s in request.all("status") + request.all("taxonomicStatus"))
        q = (request.first("q") or "").strip().lower()

        def compute() -> list[int]:
            out = []
            for i, usage in enumerate(store.real):
                if higher and higher.isdisjoint(self._species_higher[i]):
                    continue
                if dataset_keys and usage.get("datasetKey") not in dataset_keys:
                    continue
                if ranks and str(usage.get("rank") or "").upper() not in ranks:
                    continue
                if statuses and str(usage.get("taxonomicStatus") or "").upper() not in statuses:
                    continue
                if q and not any(
                    q in str(usage.get(f) or "").lower() for f in ("scientificName", "canonicalName")
                ):
                    continue
                out.append(i)
            return out

        matched = store.cached(("species_search", higher, dataset_keys, ranks, statuses, q), compute)
        return self._page(store, matched, offset, limit, True, self._ignored(request, _SPECIES_SEARCH_PARAMS))

    def species_get(self, _request: Request, match: re.Match[str]) -> Response:
        index = self.species.index_of(int(match.group(1)))
        if index is None:
            return self.json_response({"error": "Not Found", "status": 404}, 404)
        return self.raw_json_response(self.species.json_bytes(index))
