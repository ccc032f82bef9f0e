"""Paging to completion against the replay server with derived volume (cases C01, C02).

The replay server derives extra records from the real recorded ones (new ids above every real id, dates shifted
back by whole days, everything else real) so the APIs' caps can be exercised: 10,250 iNaturalist observations
(past the 10,000-result window) and 100,300 GBIF occurrences (past the 100,000 deep-paging cap)."""

from __future__ import annotations

from datetime import date

import pytest

from mindex.replay import ReplayServer
from resources.errors import DeepPagingCapExceeded
from resources.gbif import DayWindow, GbifClient
from resources.inaturalist import InaturalistClient


@pytest.fixture(scope="module")
def big_replay(fixtures_dir):
    with ReplayServer(fixtures_dir, volumes={"inaturalist": 10_250, "gbif": 100_300}) as server:
        yield server


def test_inaturalist_keyset_paging_gets_every_record_past_the_10k_window(big_replay):
    client = InaturalistClient(base_url=big_replay.base_url("inaturalist"))
    before = len(big_replay.request_log("inaturalist"))
    ids: list[int] = []
    reported = None
    for response in client.iter_observation_pages(taxon_id=47170):
        reported = reported or response.payload["total_results"]
        ids.extend(r["id"] for r in response.payload["results"])
    requests = big_replay.request_log("inaturalist")[before:]
    fungi = big_replay.record_count("inaturalist", "observations")
    assert fungi == 10_250
    # The volume counts every stored observation (all taxa); the Fungi query gets the real fungi and the
    # records derived from them, and the server's total_results for that query.
    assert len(ids) == len(set(ids)) == reported
    assert ids == sorted(ids)
    assert all(r["status"] == 200 for r in requests)
    for request in requests:
        page = int(request["query"].get("page", 1))
        per_page = int(request["query"]["per_page"])
        assert page * per_page <= 10_000, "never a request past the result window"
    # Stopped on the first empty page: one more request than full pages.
    assert len(requests) == -(-len(ids) // 200) + 1


def test_inaturalist_all_taxa_query_returns_exactly_the_derived_volume(big_replay):
    """Without the Fungi filter the query covers every stored observation: exactly 10,250 unique ids."""
    client = InaturalistClient(base_url=big_replay.base_url("inaturalist"))
    ids = [r["id"] for response in client._keyset_pages("observations", {}) for r in response.payload["results"]]
    assert len(ids) == len(set(ids)) == 10_250


def test_the_replayed_window_error_is_what_page_paging_would_hit(big_replay):
    client = InaturalistClient(base_url=big_replay.base_url("inaturalist"), max_retries=0)
    from resources.errors import ServerError

    with pytest.raises(ServerError, match="Result window is too large"):
        client.get_json("observations", {"per_page": 200, "page": 51})


def test_gbif_windows_split_under_the_deep_paging_cap_and_get_every_record(big_replay):
    client = GbifClient(base_url=big_replay.base_url("gbif"))
    total = client.count("occurrence/search", {})
    assert total == 100_300
    before = len(big_replay.request_log("gbif"))
    keys: list[int] = []
    for response in client.iter_offset_pages_windowed({}, DayWindow(None, date(2026, 12, 3))):
        keys.extend(r["key"] for r in response.payload["results"])
    requests = big_replay.request_log("gbif")[before:]
    assert len(keys) == len(set(keys)) == 100_300
    pages = [r for r in requests if int(r["query"].get("limit", 0)) > 0]
    assert all(int(r["query"]["offset"]) + int(r["query"]["limit"]) <= 100_000 for r in pages)
    assert len({r["query"]["lastInterpreted"] for r in pages}) >= 2, "the window had to be split"


def test_gbif_limit_silently_capped_still_yields_every_record_with_no_gaps(big_replay):
    """Case C02: ask for 600 per page, get 300; the offset must advance by what arrived."""
    client = GbifClient(base_url=big_replay.base_url("gbif"), page_limit=600)
    params = {"taxonKey": 5, "lastInterpreted": "2024-10-01,2024-10-04"}
    keys = []
    for response in client.iter_offset_pages("occurrence/search", params):
        assert response.payload["limit"] == 300
        keys.extend(r["key"] for r in response.payload["results"])
    expected = client.count("occurrence/search", params)
    assert expected > 300
    assert len(keys) == len(set(keys)) == expected


def test_a_single_day_above_the_cap_is_split_by_year(big_replay):
    """GBIF re-interprets whole datasets at once, so one lastInterpreted day can exceed the cap: split by event
    year and still get every record (case C02's 'split further by another filter')."""
    client = GbifClient(base_url=big_replay.base_url("gbif"), deep_paging_cap=250)
    day = DayWindow(date(2024, 10, 2), date(2024, 10, 2))
    expected = client.count("occurrence/search", {"taxonKey": 5, "lastInterpreted": day.param()})
    assert expected > 250
    before = len(big_replay.request_log("gbif"))
    keys = [r["key"] for response in client.iter_occurrence_pages(5, day) for r in response.payload["results"]]
    assert len(keys) == len(set(keys)) == expected
    pages = [r for r in big_replay.request_log("gbif")[before:] if int(r["query"].get("limit", 0)) > 0]
    assert all("year" in r["query"] for r in pages)
    assert all(int(r["query"]["offset"]) + int(r["query"]["limit"]) <= 250 for r in pages)


def test_a_day_that_cannot_be_split_is_an_error_not_a_truncation(big_replay):
    client = GbifClient(base_url=big_replay.base_url("gbif"), deep_paging_cap=5)
    with pytest.raises(DeepPagingCapExceeded, match="download API"):
        list(client.iter_occurrence_pages(5, DayWindow(date(2024, 10, 2), date(2024, 10, 2))))
