"""iNaturalist API v1 client: keyset paging by id, never ``page`` past the 10,000-result window (case C01)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from resources.errors import BadPayload
from resources.http import ApiClient, ApiResponse

INATURALIST_BASE_URL = "https://api.inaturalist.org/v1"
MAX_PER_PAGE = 200
MAX_IDS_PER_REQUEST = 30


class InaturalistClient(ApiClient):
    api_name: str = "inaturalist"
    base_url: str = INATURALIST_BASE_URL
    per_page: int = MAX_PER_PAGE

    def _keyset_pages(self, path: str, params: dict[str, Any]) -> Iterator[ApiResponse]:
        """``order_by=id&order=asc&id_above=<last id>`` until an empty page. Each request is page 1 of its own
        query, so page × per_page never passes the result window however large the set is."""
        id_above = int(params.pop("id_above", 0) or 0)
        per_page = min(self.per_page, MAX_PER_PAGE)
        while True:
            response = self.get_json(path, {**params, "order_by": "id", "order": "asc", "id_above": id_above,
                                             "per_page": per_page})
            results = _results(response, self.api_name)
            if not results:
                return
            ids = [r.get("id") for r in results if isinstance(r, dict)]
            numeric = [i for i in ids if isinstance(i, int)]
            if not numeric or max(numeric) <= id_above:
                # A server that ignored id_above would loop forever; stop loudly instead.
                raise BadPayload(self.api_name, f"keyset paging made no progress past id {id_above}",
                                 url=response.raw.url)
            yield response
            id_above = max(numeric)

    def iter_observation_pages(self, taxon_id: int, updated_since: datetime | None = None,
                               extra: dict[str, Any] | None = None) -> Iterator[ApiResponse]:
        params: dict[str, Any] = {"taxon_id": taxon_id, **(extra or {})}
        if updated_since is not None:
            params["updated_since"] = updated_since.isoformat()
        yield from self._keyset_pages("observations", params)

    def iter_taxa_pages(self, taxon_id: int, extra: dict[str, Any] | None = None) -> Iterator[ApiResponse]:
        yield from self._keyset_pages("taxa", {"taxon_id": taxon_id, **(extra or {})})

    def iter_taxa_by_ids(self, ids: Iterable[int]) -> Iterator[ApiResponse]:
        """``/taxa/{ids}`` in batches of at most 30 ids (the API's limit)."""
        unique = sorted({int(i) for i in ids})
        for start in range(0, len(unique), MAX_IDS_PER_REQUEST):
            chunk = unique[start: start + MAX_IDS_PER_REQUEST]
            yield self.get_json("taxa/" + ",".join(str(i) for i in chunk))


def _results(response: ApiResponse, api: str) -> list[Any]:
    payload = response.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise BadPayload(api, "response has no results list", url=response.raw.url, status=response.raw.status)
    return payload["results"]
