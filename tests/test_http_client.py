"""The shared client layer against the replay server's fault injection (cases C05, C06, C07, C11): retries,
Retry-After, typed errors, and error bodies that never reach a caller as data. Sleeps are recorded, not slept."""

from __future__ import annotations

import pytest

from resources.budget import BudgetLimits, RequestBudget
from resources.errors import (
    BadPayload,
    BlockedByEdge,
    ClientRequestError,
    ProblemDetail,
    RateLimited,
    ServerError,
    SourceUnreachable,
)
from resources.gbif import GbifClient
from resources.http import parse_wait_seconds
from resources.inaturalist import InaturalistClient


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def inat(replay, sleep: FakeSleep, **kw) -> InaturalistClient:
    client = InaturalistClient(base_url=replay.base_url("inaturalist"), contact="tests@example.org",
                               connect_timeout=1.0, read_timeout=5.0, **kw)
    return client.with_sleep(sleep)


def api_requests(replay, source: str) -> list[dict]:
    return [r for r in replay.request_log(source) if not r["path"].startswith("/_replay")]


def test_retry_after_is_honoured_then_the_request_succeeds(replay):
    sleep = FakeSleep()
    replay.set_fault("inaturalist", "rate_limit", retry_after=7, count=2)
    response = inat(replay, sleep).get_json("observations", {"taxon_id": 47170, "per_page": 1})
    assert response.payload["total_results"] == 22
    assert len(sleep.calls) == 2 and all(7 <= s < 7.2 for s in sleep.calls)
    assert [r["status"] for r in api_requests(replay, "inaturalist")] == [429, 429, 200]


def test_rate_limit_longer_than_we_wait_ends_the_run_as_retry_later(replay):
    """Case C05/C11: an hourly or daily quota answer is not retried tightly."""
    sleep = FakeSleep()
    replay.set_fault("inaturalist", "rate_limit", retry_after=38715, header="X-Rate-Limit-Retry-After-Seconds")
    with pytest.raises(RateLimited) as caught:
        inat(replay, sleep).get_json("observations", {"taxon_id": 47170})
    assert caught.value.retry_after == 38715
    assert sleep.calls == []
    assert len(api_requests(replay, "inaturalist")) == 1


def test_429_without_any_header_backs_off_with_jitter_then_surfaces(replay):
    sleep = FakeSleep()
    # A plain 429 with no header and no quota wording (iNaturalist's): back off and retry, then surface.
    replay.set_fault("inaturalist", "rate_limit", retry_after=None, body="Too Many Requests")
    with pytest.raises(RateLimited) as caught:
        inat(replay, sleep, max_retries=3, backoff_base=1.0, backoff_cap=4.0).get_json("observations")
    assert caught.value.retry_after is None
    assert len(sleep.calls) == 3
    assert all(0 <= s <= cap for s, cap in zip(sleep.calls, [1, 2, 4], strict=True))


def test_5xx_burst_is_retried_and_succeeds(replay):
    sleep = FakeSleep()
    replay.set_fault("gbif", "http_5xx", status=503, count=3)
    client = GbifClient(base_url=replay.base_url("gbif"), contact="tests@example.org").with_sleep(sleep)
    response = client.get_json("occurrence/search", {"taxonKey": 5, "limit": 1})
    assert response.payload["count"] == 302
    assert [r["status"] for r in api_requests(replay, "gbif")] == [503, 503, 503, 200]
    assert len(sleep.calls) == 3


def test_persistent_5xx_is_surfaced_after_the_retries(replay):
    sleep = FakeSleep()
    replay.set_fault("gbif", "http_5xx", status=502)
    client = GbifClient(base_url=replay.base_url("gbif"), max_retries=2).with_sleep(sleep)
    with pytest.raises(ServerError) as caught:
        client.get_json("occurrence/search", {"taxonKey": 5})
    assert caught.value.status == 502 and caught.value.transient
    assert len(api_requests(replay, "gbif")) == 3


def test_html_access_denied_page_is_a_blocking_error_not_data(replay):
    """Case C06: a CDN's 403 HTML page is never parsed; it is not retried either."""
    sleep = FakeSleep()
    replay.set_fault("inaturalist", "html_error", status=403)
    with pytest.raises(BlockedByEdge, match="Access Denied"):
        inat(replay, sleep).get_json("observations")
    assert sleep.calls == [] and len(api_requests(replay, "inaturalist")) == 1


def test_problem_json_is_typed_and_forecast_grid_expired_is_not_retried(replay):
    """Case C07: problem+json carries type/status/correlationId; ForecastGridExpired is not transient."""
    sleep = FakeSleep()
    replay.set_fault("gbif", "problem_json", status=503,
                     type="https://api.weather.gov/problems/ForecastGridExpired", title="Forecast Grid Expired")
    client = GbifClient(base_url=replay.base_url("gbif")).with_sleep(sleep)
    with pytest.raises(ProblemDetail) as caught:
        client.get_json("occurrence/search")
    assert caught.value.short_type == "ForecastGridExpired"
    assert caught.value.status == 503 and caught.value.correlation_id
    assert sleep.calls == []


def test_unexpected_problem_5xx_is_retried(replay):
    sleep = FakeSleep()
    replay.set_fault("gbif", "problem_json", status=500, count=2,
                     type="https://api.weather.gov/problems/UnexpectedProblem")
    client = GbifClient(base_url=replay.base_url("gbif")).with_sleep(sleep)
    assert client.get_json("occurrence/search", {"limit": 1}).payload["count"] > 0
    assert len(sleep.calls) == 2


@pytest.mark.parametrize("kind", ["truncated", "non_json"])
def test_invalid_json_bodies_are_retried_then_a_clear_error(replay, kind):
    sleep = FakeSleep()
    replay.set_fault("inaturalist", kind)
    with pytest.raises(BadPayload, match="not valid JSON"):
        inat(replay, sleep, max_retries=2).get_json("observations")
    assert len(api_requests(replay, "inaturalist")) == 3


def test_one_truncated_body_then_recovery(replay):
    sleep = FakeSleep()
    replay.set_fault("inaturalist", "truncated", count=1)
    assert inat(replay, sleep).get_json("observations", {"per_page": 1}).payload["results"]


def test_down_source_is_unreachable_after_retries_and_recovers(replay):
    sleep = FakeSleep()
    replay.set_fault("gbif", "down")
    client = GbifClient(base_url=replay.base_url("gbif"), max_retries=2, connect_timeout=1.0).with_sleep(sleep)
    with pytest.raises(SourceUnreachable, match="cannot connect"):
        client.get_json("occurrence/search")
    assert len(sleep.calls) == 2
    replay.clear_fault("gbif")
    client.close()
    assert client.get_json("occurrence/search", {"taxonKey": 5, "limit": 1}).payload["count"] == 302


def test_slow_source_times_out_as_unreachable(replay):
    sleep = FakeSleep()
    replay.set_fault("gbif", "slow", delay_s=1.5)
    client = GbifClient(base_url=replay.base_url("gbif"), read_timeout=0.3, max_retries=1).with_sleep(sleep)
    with pytest.raises(SourceUnreachable, match="timed out"):
        client.get_json("occurrence/search", {"limit": 1})


def test_gbif_deep_paging_400_is_a_planning_error_not_retried(replay):
    sleep = FakeSleep()
    client = GbifClient(base_url=replay.base_url("gbif")).with_sleep(sleep)
    with pytest.raises(ClientRequestError) as caught:
        client.get_json("occurrence/search", {"offset": 100_000, "limit": 300})
    assert caught.value.status == 400 and sleep.calls == []


def test_parse_wait_seconds_reads_standard_and_vendor_headers():
    assert parse_wait_seconds({"retry-after": "12"}) == 12
    assert parse_wait_seconds({"x-rate-limit-retry-after-seconds": "38715"}) == 38715
    assert parse_wait_seconds({"x-ratelimit-reset": "30"}) == 30
    assert parse_wait_seconds({}) is None
    assert parse_wait_seconds({"retry-after": "soon"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_budget_spaces_requests_to_the_per_second_and_per_minute_limits():
    clock = FakeClock()
    budget = RequestBudget("inaturalist", BudgetLimits(per_second=1, per_minute=3), clock=clock, sleep=clock.sleep)
    for _ in range(4):
        budget.acquire()
    # 1/s for the first three, then the minute window is full until 60 s after the first request.
    assert clock.slept[:2] == [1.0, 1.0]
    assert clock.now == pytest.approx(1060.0)
    assert budget.spent == 4


def test_budget_refuses_to_sleep_for_a_daily_window():
    clock = FakeClock()
    budget = RequestBudget("opensky", BudgetLimits(per_day=2), clock=clock, sleep=clock.sleep, max_wait=120)
    budget.acquire()
    budget.acquire()
    with pytest.raises(RateLimited) as caught:
        budget.acquire()
    assert caught.value.retry_after == pytest.approx(86400)
    assert clock.slept == []


def test_budget_is_shared_across_client_instances_in_one_process(replay):
    a = inat(replay, FakeSleep(), per_minute=50)
    b = inat(replay, FakeSleep(), per_minute=50)
    a.get_json("observations", {"per_page": 1})
    b.get_json("observations", {"per_page": 1})
    assert a.budget is b.budget and a.budget.spent == 2


def test_every_request_carries_a_descriptive_user_agent_with_the_configured_contact(replay):
    client = inat(replay, FakeSleep())
    client.get_json("observations", {"per_page": 1})
    GbifClient(base_url=replay.base_url("gbif"), contact="ops@mycosoft.example").get_json("occurrence/search")
    (inat_request,) = api_requests(replay, "inaturalist")
    (gbif_request,) = api_requests(replay, "gbif")
    assert inat_request["user_agent"].startswith("mycosoft-mindex/")
    assert inat_request["user_agent"].endswith("(tests@example.org)")
    assert "(ops@mycosoft.example)" in gbif_request["user_agent"]
    assert inat_request["accept"] == "application/json"
