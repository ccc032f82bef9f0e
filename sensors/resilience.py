"""Resilience: source health, fallback from the local cache when an API fails, and healing when it returns.

One sensor per source, built from the SLA table and the job tables, so a mirror added later is covered without
new code. Each tick of ``<source>_resilience``:

1. **Fallback.** Reads the source's refresh/snapshot runs that failed since the last tick. When the step failure is
   an API error (``resources/errors.py``: unreachable, 5xx, rate-limited beyond budget, HTML/problem+json answers,
   bad payloads) and not a failed check or a bug, it requests ``<source>_fallback``: the MINDEX assets of the
   failed partitions, re-materialized from the last good mirror partitions, tagged ``served_from=cache`` with the
   source error. A probe that finds the API down requests the same for the open partitions, so failover does
   not wait for the next scheduled refresh.
2. **Health.** Probes each API of the source with one cheap request (no retries) every ``probe_interval``,
   backing off while it is down and waiting out a rate limit's ``Retry-After``: it never hammers. State lives in
   the cursor; changes (and a periodic heartbeat) are recorded as observations on the mirror asset.
3. **Healing.** When every API of the source is up, requests a live refresh of the partitions served from
   cache, oldest first, a few at a time, with a run key that carries the fallback's data version, so a partition
   healed once can be healed again after a later outage (case C14).

Mirror assets are only materialized by live fetches, so their freshness keeps telling the truth about the source;
the fallback materializes what consumers read. Recovery runs carry ``mindex/recovery_source``, which dagster.yaml
limits to one run per source at a time (no thundering herd), and every step that calls an API runs in that API's
pool (one step at a time per API). Fallback runs execute in process: they only read the local cache and write
MINDEX, so a subprocess per step would only delay the failover.
Stream sources (collectors) have no API call in their runs; their health is the collector's heartbeat.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import dagster as dg

from mycosoft_assets import sla
from mycosoft_assets.serving import (
    FAILED_RUN_TAG,
        RECOVERY_SOURCE_TAG,
    RECOVERY_TAG,
    SERVED_FROM_TAG,
    SOURCE_ERROR_TAG,
)
from resources import errors
from sensors.schedules import REFRESH_ASSETS, SNAPSHOT_ASSETS, range_tags, stream_datasets

SNAPSHOT_KEY = "snapshot"
HEAL_BATCH = 24  # partitions per healing run: a day of hourly partitions, within any API's budget
HEAL_TIMEOUT_S = 900  # a heal run not seen to succeed by then is requested again, under a new run key
OBSERVATION_EVERY_S = 600  # health heartbeat on the mirror asset when nothing changed (bounded event log)
HANDLED_RUNS_KEPT = 200

API_ERROR_NAMES = {cls.__name__ for cls in (
    errors.ApiError, errors.SourceUnreachable, errors.ServerError, errors.RateLimited, errors.AuthError,
    errors.EndpointRetired, errors.BlockedByEdge, errors.ProblemDetail, errors.BadPayload,
    errors.ClientRequestError, errors.DeepPagingCapExceeded)}


def sensor_interval_s() -> int:
    return int(os.environ.get("MINDEX_RESILIENCE_INTERVAL_S", "15"))


def probe_interval_s(source: str) -> float:
    """How often a healthy API is probed: a twelfth of the SLA, between 30 s and 15 min (the drill and tests may
    shorten it with MINDEX_PROBE_INTERVAL_S). While down, the interval doubles up to four times this."""
    override = os.environ.get("MINDEX_PROBE_INTERVAL_S")
    if override:
        return float(override)
    return min(900.0, max(30.0, sla.sla(source).sla.total_seconds() / 12))


# --- jobs ---------------------------------------------------------------------------------------------------
def _mindex_assets(assets: Iterable[str]) -> list[str]:
    return [a for a in assets if a.startswith("mindex_")]


def recovery_pairs(source: str) -> list[tuple[str, str, str]]:
    """(monitored job, fallback job, mirror asset whose partitions are the cache) for an API-fed source."""
    pairs = []
    if _mindex_assets(REFRESH_ASSETS.get(source, ())):
        pairs.append((f"{source}_sync", f"{source}_fallback", REFRESH_ASSETS[source][0]))
    if _mindex_assets(SNAPSHOT_ASSETS.get(source, ())):
        pairs.append((f"{source}_snapshot", f"{source}_snapshot_fallback", SNAPSHOT_ASSETS[source][0]))
    return pairs


def fallback_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    jobs = []
    for source in api_sources():
        for monitored, fallback, _mirror in recovery_pairs(source):
            table = REFRESH_ASSETS if monitored.endswith("_sync") else SNAPSHOT_ASSETS
            jobs.append(dg.define_asset_job(
                name=fallback,
                selection=dg.AssetSelection.assets(*_mindex_assets(table[source])),
                description=f"Serve {source}'s MINDEX tables from the local cache (last good mirror partitions) "
                            f"while its API fails. Requested by {source}_resilience; never touches the API.",
                tags={"source": source, SERVED_FROM_TAG: "cache"},
                executor_def=dg.in_process_executor,  # local reads and one MINDEX write: no subprocess per step
            ))
    return jobs


def api_sources() -> list[str]:
    return [s for s in REFRESH_ASSETS if not stream_datasets(s)]


# --- cursor state -------------------------------------------------------------------------------------------
@dataclass
class ApiHealth:
    state: str = "unknown"  # up | down | rate_limited | unknown
    since: float = 0.0
    checked_at: float = 0.0
    next_probe_at: float = 0.0
    failures: int = 0
    latency_ms: float | None = None
    last_error: str | None = None


@dataclass
class CachedPartition:
    job: str  # the live job that heals it
    key: str  # partition key, or "snapshot"
    since: float  # when it was first served from cache in this outage: the data version in heal run keys
    error: str
    heal_requested_at: float | None = None
    heal_attempts: int = 0  # a heal run not seen to succeed is requested again, under a new run key


@dataclass
class ResilienceState:
    runs_checked_until: float = 0.0
    handled_runs: list[str] = field(default_factory=list)
    health: dict[str, ApiHealth] = field(default_factory=dict)
    cached: dict[str, CachedPartition] = field(default_factory=dict)
    last_observation_at: float = 0.0

    @classmethod
    def load(cls, cursor: str | None) -> ResilienceState:
        if not cursor:
            return cls()
        raw = json.loads(cursor)
        return cls(runs_checked_until=raw.get("runs_checked_until", 0.0), handled_runs=raw.get("handled_runs", []),
                   health={k: ApiHealth(**v) for k, v in raw.get("health", {}).items()},
                   cached={k: CachedPartition(**v) for k, v in raw.get("cached", {}).items()},
                   last_observation_at=raw.get("last_observation_at", 0.0))

    def dump(self) -> str:
        return json.dumps({"runs_checked_until": self.runs_checked_until,
                           "handled_runs": self.handled_runs[-HANDLED_RUNS_KEPT:],
                           "health": {k: asdict(v) for k, v in self.health.items()},
                           "cached": {k: asdict(v) for k, v in self.cached.items()},
                           "last_observation_at": self.last_observation_at}, sort_keys=True)


# --- failure classification ---------------------------------------------------------------------------------
def failure_cause(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The API error that failed the run (``"SourceUnreachable: inaturalist: cannot connect ..."``), or None when
    the run failed for another reason (a failed blocking check, a bug), which the cache cannot fix."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        error = event.event_specific_data.error if event and event.event_specific_data else None
        seen = 0
        while error is not None and seen < 10:
            if error.cls_name in API_ERROR_NAMES:
                message = error.message.strip()
                prefix, _, rest = message.partition(": ")
                if prefix.endswith(error.cls_name):  # "resources.errors.SourceUnreachable: ..."
                    message = rest
                cause = f"{error.cls_name}: {message}"
                wait = errors.retry_after_in(cause)
                if len(cause) > 300 and wait is not None:  # keep the wait when the text is cut
                    return f"{cause[:270]}... [retry after {wait:.0f} s]"
                return cause[:300]
            error = error.cause or error.context
            seen += 1
    return None


def run_partition_keys(source: str, job: str, tags: dict[str, str]) -> list[str]:
    """The partitions a run of ``job`` covered (its range tags), or ["snapshot"] for an unpartitioned job: every
    job of an unpartitioned source, and the reference-snapshot jobs (and their fallbacks) of a partitioned one."""
    partitions = sla.partitions_def(source)
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if partitions is None or job in (f"{source}_snapshot", f"{source}_snapshot_fallback"):
        return [SNAPSHOT_KEY]
    if start and end:
        return list(partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    single = tags.get("dagster/partition")
    return [single] if single else []


def contiguous(keys: list[str], ordered: list[str]) -> list[list[str]]:
    """Split ``keys`` into runs of consecutive partitions (a partition-range run must be contiguous)."""
    position = {k: i for i, k in enumerate(ordered)}
    chunks: list[list[str]] = []
    for key in sorted(keys, key=lambda k: position.get(k, -1)):
        if chunks and position.get(key, -2) == position.get(chunks[-1][-1], -10) + 1:
            chunks[-1].append(key)
        else:
            chunks.append([key])
    return chunks


# --- probing ------------------------------------------------------------------------------------------------
def probe(client: Any, path: str) -> tuple[str, float, str | None, float | None]:
    """One request, no retries: (state, latency ms, error, retry_after)."""
    quick = client.model_copy(update={"max_retries": 0, "connect_timeout": 3.0, "read_timeout": 10.0})
    route, _, query = path.partition("?")
    started = time.monotonic()
    try:
        quick.get_json(route, params=dict(parse_qsl(query)))
        return "up", (time.monotonic() - started) * 1000, None, None
    except errors.RateLimited as exc:
        return "rate_limited", (time.monotonic() - started) * 1000, str(exc), exc.retry_after
    except errors.ApiError as exc:  # a 503 may say when to come back, too
        return "down", (time.monotonic() - started) * 1000, f"{type(exc).__name__}: {exc}", exc.retry_after
    finally:
        quick.close()


def update_health(health: ApiHealth, outcome: tuple[str, float, str | None, float | None], now: float,
                  interval: float) -> bool:
    """Apply a probe outcome; returns True when the state changed."""
    state, latency, error, retry_after = outcome
    changed = state != health.state
    if changed:
        health.since = now
    health.state, health.latency_ms, health.checked_at = state, round(latency, 1), now
    if state == "up":
        health.failures, health.last_error = 0, None
        health.next_probe_at = now + interval
    else:
        health.failures += 1
        health.last_error = error
        backoff = min(interval * 4, interval * 2 ** (health.failures - 1))
        health.next_probe_at = now + max(backoff, retry_after or 0.0)
    return changed


# --- the sensor ---------------------------------------------------------------------------------------------
def _mirror_live_after(instance: dg.DagsterInstance, asset: str, key: str, after: float) -> bool:
    """Has the mirror asset been materialized (always live) for this partition since ``after``?"""
    partitions = None if key == SNAPSHOT_KEY else [key]
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=partitions), limit=1).records
    return bool(records) and records[0].timestamp > after


def resilience_sensor(source: str, jobs: dict[str, Any]) -> dg.SensorDefinition:
    """``jobs``: every job of the Definitions by name (the sensor targets the source's live and fallback jobs)."""
    if stream_datasets(source):
        return collector_health_sensor(source)
    row = sla.sla(source)
    pairs = recovery_pairs(source)
    heal_job = {monitored: mirror for monitored, _fallback, mirror in pairs}
    fallback_of = {monitored: fallback for monitored, fallback, _mirror in pairs}

    @dg.sensor(name=f"{source}_resilience", minimum_interval_seconds=sensor_interval_s(),
               default_status=dg.DefaultSensorStatus.RUNNING,
               jobs=[jobs[name] for pair in fallback_of.items() for name in pair],
               description=f"{row.description}: probe the API(s) {', '.join(row.apis)}, serve MINDEX from the cache "
                           "when a run fails on the API, heal the cached partitions live when it is back.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from mycosoft_assets.resources import build_resources

        resources = build_resources(resolved=True)
        store = resources["mirror_store"]
        state = ResilienceState.load(context.cursor)
        now = time.time()
        requests: list[dg.RunRequest] = []
        notes: list[str] = []

        def request_fallback(monitored: str, keys: list[str], error: str, origin: str) -> None:
            mirror = heal_job[monitored]
            cached = [k for k in keys if store.manifest(mirror, k) is not None]
            fresh = [k for k in cached if f"{monitored}|{k}" not in state.cached
                     or state.cached[f"{monitored}|{k}"].heal_requested_at is not None]
            if not fresh:
                notes.append(f"{monitored}: nothing cached to serve for {keys[:3]}" if not cached else
                             f"{monitored}: {len(cached)} partition(s) already served from cache")
                return
            ordered = (sla.partitions_def(source).get_partition_keys(current_time=datetime.now(UTC))
                       if sla.partitions_def(source) else [SNAPSHOT_KEY])
            for chunk in contiguous(fresh, ordered):
                tags = {SERVED_FROM_TAG: "cache", SOURCE_ERROR_TAG: error[:250], FAILED_RUN_TAG: origin,
                        RECOVERY_TAG: "fallback", RECOVERY_SOURCE_TAG: source, "source": source}
                if chunk != [SNAPSHOT_KEY]:
                    tags.update(range_tags(chunk))
                requests.append(dg.RunRequest(run_key=f"fallback:{origin}:{chunk[0]}..{chunk[-1]}",
                                              job_name=fallback_of[monitored], tags=tags))
            for key in fresh:
                state.cached[f"{monitored}|{key}"] = CachedPartition(monitored, key, now, error[:250])

        # A change of health, or of what is served from cache, is recorded as an observation on the mirror (the
        # UI shows it); otherwise only a heartbeat every OBSERVATION_EVERY_S.
        changed = False
        served_before = set(state.cached)

        # 1. runs that failed on the API since the last tick
        since = datetime.fromtimestamp(max(0.0, state.runs_checked_until - 60), UTC)
        for monitored in fallback_of:
            records = context.instance.get_run_records(
                dg.RunsFilter(job_name=monitored, statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since),
                limit=50)
            for record in sorted(records, key=lambda r: r.update_timestamp.timestamp()):
                run = record.dagster_run
                if run.run_id in state.handled_runs:
                    continue
                state.handled_runs.append(run.run_id)
                cause = failure_cause(context.instance, run.run_id)
                if cause is None:
                    notes.append(f"run {run.run_id[:8]} failed, but not on the API: no fallback")
                    continue
                wait = errors.retry_after_in(cause)  # the server (or our budget) said when to come back
                for api in row.apis:
                    health = state.health.setdefault(api, ApiHealth())
                    if health.state == "up":
                        health.state = "rate_limited" if cause.startswith("RateLimited") else "down"
                        health.since, health.last_error = now, cause
                        health.next_probe_at = now + probe_interval_s(source)
                        changed = True
                    if wait is not None:
                        health.next_probe_at = max(health.next_probe_at, now + wait)
                request_fallback(monitored, run_partition_keys(source, monitored, run.tags), cause, run.run_id)
        state.runs_checked_until = now

        # 2. probe the APIs that are due
        events: list[dg.AssetObservation] = []
        for api in row.apis:
            health = state.health.setdefault(api, ApiHealth())
            if now < health.next_probe_at:
                continue
            was_up = health.state in ("up", "unknown")
            changed |= update_health(health, probe(resources[api], sla.API_PROBES[api]), now,
                                     probe_interval_s(source))
            if was_up and health.state != "up":
                # The API went down between refreshes: serve the open partitions from cache now.
                from sensors.schedules import refresh_tags

                for monitored in fallback_of:
                    live = monitored == f"{source}_sync"
                    tags = refresh_tags(source, datetime.now(UTC), context.instance) if live else {}
                    keys = run_partition_keys(source, monitored, tags)
                    request_fallback(monitored, keys, f"probe: {health.last_error}", f"probe@{int(now)}")

        # 3. heal what was served from cache, once every API of the source is up
        for name, cached in list(state.cached.items()):
            if _mirror_live_after(context.instance, heal_job[cached.job], cached.key, cached.since):
                del state.cached[name]
        all_up = all(state.health.get(api, ApiHealth()).state == "up" for api in row.apis)
        if all_up and state.cached:
            for monitored in fallback_of:
                waiting = sorted((c for c in state.cached.values() if c.job == monitored and (
                    c.heal_requested_at is None or now - c.heal_requested_at > HEAL_TIMEOUT_S)),
                    key=lambda c: c.key)[:HEAL_BATCH]
                if not waiting:
                    continue
                ordered = (sla.partitions_def(source).get_partition_keys(current_time=datetime.now(UTC))
                           if sla.partitions_def(source) else [SNAPSHOT_KEY])
                for chunk in contiguous([c.key for c in waiting], ordered):
                    held = [state.cached[f"{monitored}|{k}"] for k in chunk]
                    version = int(min(c.since for c in held))
                    attempt = max(c.heal_attempts for c in held) + 1
                    for c in held:
                        c.heal_attempts = attempt
                    tags = {RECOVERY_TAG: "heal", RECOVERY_SOURCE_TAG: source, "source": source}
                    if chunk != [SNAPSHOT_KEY]:
                        tags.update(range_tags(chunk))
                    # The data version names the outage (case C14); the attempt lets a heal run that died without
                    # healing be launched again (Dagster launches a run key once).
                    run_key = f"heal:{monitored}:{chunk[0]}..{chunk[-1]}:{version}"
                    requests.append(dg.RunRequest(run_key=run_key if attempt == 1 else f"{run_key}:retry{attempt - 1}",
                                                  job_name=monitored, tags=tags))
                for c in waiting:
                    c.heal_requested_at = now

        changed |= set(state.cached) != served_before
        if changed or now - state.last_observation_at > OBSERVATION_EVERY_S:
            state.last_observation_at = now
            for asset in dict.fromkeys(heal_job.values()):
                events.append(dg.AssetObservation(asset_key=asset, metadata=health_metadata(source, state)))
        if notes:
            context.log.info("; ".join(notes))
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=state.dump())

    return _sensor


def health_metadata(source: str, state: ResilienceState) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for api, health in state.health.items():
        metadata[f"{api}_health"] = health.state
        metadata[f"{api}_health_since"] = datetime.fromtimestamp(health.since, UTC).isoformat() if health.since else "-"
        if health.latency_ms is not None:
            metadata[f"{api}_latency_ms"] = health.latency_ms
        metadata[f"{api}_last_error"] = health.last_error or "none"
    metadata["partitions_served_from_cache"] = dg.MetadataValue.json(sorted(c.key for c in state.cached.values()))
    return metadata


def collector_health_sensor(source: str) -> dg.SensorDefinition:
    """Stream sources: health is the collector's heartbeat (their runs read the local spool, never the API)."""
    mirrors = [d.name for d in stream_datasets(source)]

    @dg.sensor(name=f"{source}_resilience", minimum_interval_seconds=max(30, sensor_interval_s()),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"{sla.sla(source).description}: record the collector's health (heartbeat, gaps) on "
                           "the mirror assets when it changes.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from mycosoft_assets.resources import build_resources
        from mycosoft_assets.streams import collector_health

        previous = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        health = collector_health(build_resources(resolved=True)["mirror_store"], source)
        status = health["collector_status"]
        events = []
        if status != previous.get("status") or now - previous.get("observed_at", 0) > OBSERVATION_EVERY_S:
            events = [dg.AssetObservation(asset_key=m, metadata=health) for m in mirrors]
            previous = {"status": status, "observed_at": now}
        return dg.SensorResult(asset_events=events, cursor=json.dumps(previous))

    return _sensor


def resilience_sensors(jobs: Iterable[Any]) -> list[dg.SensorDefinition]:
    by_name = {job.name: job for job in jobs}
    return [resilience_sensor(source, by_name) for source in REFRESH_ASSETS]
