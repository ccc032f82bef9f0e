"""GBIF API v1 client: offset paging that advances by what arrived, and windows split under the deep-paging cap.

Case C02: ``limit`` above 300 is silently cut to 300, and offset + limit past the cap (100,000 today; it has
changed over the years, so it is config) answers 400. We advance ``offset`` by ``len(results)``, stop on
``endOfRecords``, and split any window whose ``count`` is above the cap into smaller ``lastInterpreted`` windows
before paging it. A single day still above the cap is an error that names it: never a silent truncation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from resources.errors import BadPayload, DeepPagingCapExceeded
from resources.http import ApiClient, ApiResponse

GBIF_BASE_URL = "https://api.gbif.org/v1"
GBIF_BACKBONE_DATASET = "d7dddbf4-2cf0-4f39-9b2a-bb099caae36c"
INATURALIST_RESEARCH_GRADE_DATASET = "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
# Earliest day a window with an open start is bisected from: GBIF has no record interpreted before it.
OPEN_START_FLOOR = date(2000, 1, 1)
# Earliest event year a single over-full day is split from (GBIF holds specimens from the 1600s on).
FIRST_EVENT_YEAR = 1500
SPECIES_RANKS = ("KINGDOM", "PHYLUM", "CLASS", "ORDER", "FAMILY", "GENUS", "SPECIES", "SUBSPECIES", "VARIETY",
                 "FORM")


@dataclass(frozen=True)
class DayWindow:
    """``lastInterpreted`` days, both ends inclusive as GBIF's range filter is; ``first`` None = open start."""

    first: date | None
    last: date

    def param(self) -> str:
        return f"{self.first.isoformat() if self.first else '*'},{self.last.isoformat()}"


class GbifClient(ApiClient):
    api_name: str = "gbif"
    base_url: str = GBIF_BASE_URL
    page_limit: int = 300
    deep_paging_cap: int = 100_000

    def count(self, path: str, params: dict[str, Any]) -> int:
        response = self.get_json(path, {**params, "limit": 0, "offset": 0})
        value = response.payload.get("count") if isinstance(response.payload, dict) else None
        if not isinstance(value, int):
            raise BadPayload(self.api_name, "search response without an integer count", url=response.raw.url)
        return value

    def iter_offset_pages(self, path: str, params: dict[str, Any]) -> Iterator[ApiResponse]:
        offset = 0
        while True:
            limit = min(self.page_limit, self.deep_paging_cap - offset)
            if limit <= 0:
                raise DeepPagingCapExceeded(self.api_name, f"offset {offset} reached the deep-paging cap "
                                                           f"{self.deep_paging_cap}; the window needed splitting")
            response = self.get_json(path, {**params, "offset": offset, "limit": limit})
            payload = response.payload
            if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
                raise BadPayload(self.api_name, "response has no results list", url=response.raw.url)
            results = payload["results"]
            yield response
            if payload.get("endOfRecords") is True or not results:
                return
            offset += len(results)  # never the requested limit: the server may have cut it

    def plan_windows(self, params: dict[str, Any], window: DayWindow) -> list[tuple[dict[str, Any], int]]:
        """Split ``window`` until every piece's count is under the cap: by ``lastInterpreted`` day first (bisect),
        then, for a single day above the cap (GBIF re-interprets whole datasets at once), by event ``year``.
        Returns (query parameters, count) pieces; their counts always add up to the window's."""
        query = {**params, "lastInterpreted": window.param()}
        total = self.count("occurrence/search", query)
        if total <= self.deep_paging_cap:
            return [(query, total)]
        low = window.first or OPEN_START_FLOOR
        if low < window.last:
            middle = low + timedelta(days=(window.last - low).days // 2)
            return (self.plan_windows(params, DayWindow(window.first, middle))
                    + self.plan_windows(params, DayWindow(middle + timedelta(days=1), window.last)))
        pieces = self._split_by_year(query, FIRST_EVENT_YEAR, date.today().year)
        covered = sum(count for _, count in pieces)
        if covered != total:
            raise DeepPagingCapExceeded(
                self.api_name, f"{total} records were interpreted on {window.last.isoformat()}, above the "
                               f"deep-paging cap {self.deep_paging_cap}; splitting by year covers {covered} (the "
                               f"rest have no year); use the download API for this day")
        return pieces

    def _split_by_year(self, query: dict[str, Any], first: int, last: int) -> list[tuple[dict[str, Any], int]]:
        piece = {**query, "year": f"{first},{last}"}
        count = self.count("occurrence/search", piece)
        if count <= self.deep_paging_cap:
            return [(piece, count)] if count else []
        if first >= last:
            raise DeepPagingCapExceeded(self.api_name, f"{count} records for year {first} alone in "
                                                       f"{query.get('lastInterpreted')}; use the download API")
        middle = (first + last) // 2
        return self._split_by_year(query, first, middle) + self._split_by_year(query, middle + 1, last)

    def iter_offset_pages_windowed(self, params: dict[str, Any], window: DayWindow) -> Iterator[ApiResponse]:
        """Every occurrence matching ``params`` interpreted in ``window``, each piece under the cap."""
        for piece, count in self.plan_windows(params, window):
            if count:
                yield from self.iter_offset_pages("occurrence/search", piece)

    def iter_occurrence_pages(self, taxon_key: int, window: DayWindow,
                              extra: dict[str, Any] | None = None) -> Iterator[ApiResponse]:
        yield from self.iter_offset_pages_windowed({"taxonKey": taxon_key, **(extra or {})}, window)

    def iter_species_pages(self, higher_taxon_key: int, dataset_key: str = GBIF_BACKBONE_DATASET
                           ) -> Iterator[ApiResponse]:
        """Name usages under a higher taxon. Above the cap, page rank by rank, and require the ranks to add up."""
        params = {"highertaxonKey": higher_taxon_key, "datasetKey": dataset_key}
        total = self.count("species/search", params)
        if total <= self.deep_paging_cap:
            yield from self.iter_offset_pages("species/search", params)
            return
        by_rank = {rank: self.count("species/search", {**params, "rank": rank}) for rank in SPECIES_RANKS}
        if sum(by_rank.values()) != total or max(by_rank.values()) > self.deep_paging_cap:
            raise DeepPagingCapExceeded(self.api_name, f"{total} name usages cannot be split by rank under the "
                                                       f"cap {self.deep_paging_cap}: {by_rank}")
        for rank, count in by_rank.items():
            if count:
                yield from self.iter_offset_pages("species/search", {**params, "rank": rank})
