"""The one SLA table: every source's freshness, partitioning, refresh cadence, retention and API budget.

Freshness policies, partitions definitions, schedules, retention windows and request budgets are all derived
from these rows by the functions below; no asset restates them. Adding a source is one row here plus one
module under ``mycosoft_assets/<source>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import dagster as dg

Partitioning = Literal["daily", "weekly", "hourly", "none"]


@dataclass(frozen=True)
class ApiLimits:
    """Published (or conservatively assumed) request limits of one API, kept below the vendor's numbers."""

    per_second: float | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    max_concurrent: int = 1


@dataclass(frozen=True)
class SourceSLA:
    source: str
    description: str
    sla: timedelta  # data older than this is a failed SLA: the freshness fail window
    warn_after: timedelta  # the freshness warn window
    partitioning: Partitioning
    history_start: str  # first partition key; the first sync of a source also covers everything before it
    refresh_cron: str  # how often the schedule refreshes the open partition(s)
    apis: tuple[str, ...]  # which rows of API_LIMITS this source spends
    retention: timedelta | None = None  # rolling window: partitions and rows older than this are removed
    initial_lookback: timedelta | None = None  # how far back a first sync reaches, when not to the beginning
    # For sources partitioned by event time (measurements): how late a record may still be published. Refreshes
    # re-read partitions this recent, so a late hour lands in its partition.
    late_arrival: timedelta | None = None
    # How long the Dagster instance keeps this source's runs (and their event logs). Frequent refreshes add
    # hundreds of runs a day; the prune job deletes older ones so the instance stays bounded (dagster#33785).
    run_history: timedelta = timedelta(days=30)
    # Stream sources: a collector gap (disconnect, silence, refused poll) longer than this fails the gap check.
    max_gap: timedelta | None = None
    notes: str = ""


# Limits per API (several sources may share one API, e.g. weather uses NWS and Open-Meteo).
# Numbers come from ../shared/fixtures/API_NOTES.md; where a vendor publishes none we pick a polite one.
API_LIMITS: dict[str, ApiLimits] = {
    # pyinaturalist's defaults mirror iNat's recommended practices: 1/s, 60/min, 10k/day. Stay under them.
    "inaturalist": ApiLimits(per_second=1.0, per_minute=55, per_day=9_000),
    # GBIF publishes no per-second number for search; 3/s keeps us well inside fair use.
    "gbif": ApiLimits(per_second=3.0, per_minute=150),
    # OpenSky credits are counted per day (anonymous 400); the collector converts credits to an interval.
    "opensky": ApiLimits(per_second=0.1, per_day=400),
    # AISStream is a websocket with no numeric quota; reconnects are what must be limited.
    "aisstream": ApiLimits(per_minute=6),
    "openaq": ApiLimits(per_second=1.0, per_minute=55, per_hour=1_900),
    # NWS publishes no number; stay polite.
    "nws": ApiLimits(per_second=2.0, per_minute=60),
    # Open-Meteo keyless: 600/min and 10k/day per IP, and one request at a time (case C05).
    "open_meteo": ApiLimits(per_second=2.0, per_minute=500, per_day=9_000, max_concurrent=1),
}


# One cheap request per API that says whether it answers (paths under the client's base URL). The resilience
# sensors probe with it, without retries, and count it against the API's budget like any request.
API_PROBES: dict[str, str] = {
    "inaturalist": "/taxa/47170",
    "gbif": "/occurrence/count?taxonKey=5",
    "nws": "/alerts/active/count",
    "open_meteo": "/forecast?latitude=39.7469&longitude=-104.9871&current=temperature_2m&timezone=GMT",
    "openaq": "/locations?limit=1",
}


SLA_TABLE: dict[str, SourceSLA] = {
    row.source: row
    for row in [
        SourceSLA(
            source="inaturalist",
            description="iNaturalist v1: fungi observations (taxon 47170) and taxa, full mirror",
            sla=timedelta(hours=24),
            warn_after=timedelta(hours=12),
            partitioning="daily",
            history_start="2008-03-01",
            refresh_cron="15 */6 * * *",
            apis=("inaturalist",),
        ),
        SourceSLA(
            source="gbif",
            description="GBIF: Fungi occurrences (taxonKey 5) and species, incremental by lastInterpreted",
            sla=timedelta(days=7),
            warn_after=timedelta(days=3),
            partitioning="weekly",
            history_start="2007-01-07",
            refresh_cron="45 3 * * *",
            apis=("gbif",),
        ),
        SourceSLA(
            source="opensky",
            description="OpenSky: aircraft state vectors, rolling 24 h",
            # Anonymous global polling is every 864 s (400 credits/day at 4 credits a call) and compaction adds up
            # to 5 min, so a healthy default collector's data is up to ~20 min old: warn after 22, fail after 30.
            # A bbox or credentials poll far more often; the windows hold for the slowest case.
            sla=timedelta(minutes=30),
            warn_after=timedelta(minutes=22),
            partitioning="hourly",
            history_start="2026-01-01-00:00",
            refresh_cron="*/5 * * * *",
            apis=("opensky",),
            retention=timedelta(hours=24),
            run_history=timedelta(days=2),
            max_gap=timedelta(minutes=30),
        ),
        SourceSLA(
            source="aisstream",
            description="AISStream: vessel positions from the websocket, rolling 24 h",
            sla=timedelta(minutes=10),
            warn_after=timedelta(minutes=5),
            partitioning="hourly",
            history_start="2026-01-01-00:00",
            refresh_cron="*/5 * * * *",
            apis=("aisstream",),
            retention=timedelta(hours=24),
            run_history=timedelta(days=2),
            max_gap=timedelta(minutes=2),  # AISStream drops sockets every ~2 min (C13); reconnects take seconds
        ),
        SourceSLA(
            source="openaq",
            description="OpenAQ v3: air-quality stations and measurements",
            sla=timedelta(hours=1),
            warn_after=timedelta(minutes=40),
            partitioning="hourly",
            history_start="2025-01-01-00:00",
            refresh_cron="5,35 * * * *",
            apis=("openaq",),
            run_history=timedelta(days=7),
            # A first sync takes each station's last 90 days (from its datetimeLast), not its whole history.
            initial_lookback=timedelta(days=90),
            late_arrival=timedelta(hours=3),
        ),
        SourceSLA(
            source="nws_alerts",
            description="NWS: active alerts with their Alert/Update/Cancel lifecycle",
            sla=timedelta(minutes=5),
            warn_after=timedelta(minutes=4, seconds=30),
            partitioning="none",
            history_start="2026-01-01",
            refresh_cron="*/4 * * * *",
            apis=("nws",),
            retention=timedelta(hours=24),  # alert messages stay in MINDEX 24 h after they were last seen
            run_history=timedelta(days=2),
        ),
        SourceSLA(
            source="weather",
            description="Weather: NWS gridpoint forecasts and Open-Meteo",
            sla=timedelta(minutes=30),
            warn_after=timedelta(minutes=20),
            partitioning="none",
            history_start="2026-01-01",
            refresh_cron="*/15 * * * *",
            apis=("nws", "open_meteo"),
            retention=timedelta(hours=48),  # forecasts older than 48 h go, except each site's latest
            run_history=timedelta(days=2),
        ),
    ]
}


def sla(source: str) -> SourceSLA:
    try:
        return SLA_TABLE[source]
    except KeyError:
        raise KeyError(f"no SLA row for source {source!r}; add one to mycosoft_assets/sla.py") from None


def freshness_policy(source: str) -> dg.FreshnessPolicy:
    row = sla(source)
    return dg.FreshnessPolicy.time_window(fail_window=row.sla, warn_window=row.warn_after)


def partitions_def(source: str) -> dg.TimeWindowPartitionsDefinition | None:
    """UTC partitions (case C15: never a local zone). ``end_offset=1`` keeps the open window (today, this
    week) as a partition so the schedule can refresh it inside the SLA instead of waiting for it to close."""
    row = sla(source)
    if row.partitioning == "daily":
        return dg.DailyPartitionsDefinition(start_date=row.history_start, timezone="UTC", end_offset=1)
    if row.partitioning == "weekly":
        return dg.WeeklyPartitionsDefinition(start_date=row.history_start, timezone="UTC", end_offset=1)
    if row.partitioning == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=row.history_start, timezone="UTC", end_offset=1)
    return None


def api_limits(api: str) -> ApiLimits:
    return API_LIMITS[api]


def retention(source: str) -> timedelta | None:
    return sla(source).retention
