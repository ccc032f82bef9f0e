"""``mindex drill``: the failover drill, end to end, with the real ``dagster-daemon``.

For each API source (and then for all at once), against a temporary instance and the replay server:

1. materialize live (the main job's runs for the source);
2. switch the source's API(s) "down" with fault injection, and start the live refresh a schedule tick would;
3. wait for the resilience sensor's fallback run to succeed -> **failover time** (from "down");
4. check MINDEX still answers;
5. switch the API(s) back -> wait until every partition served from cache has a later live materialization
   -> **healing time** (from "up");
6. compare MINDEX with a reference run that never failed: no duplicate and no missing natural key.

The daemon runs the repo's ``dagster.yaml`` (queued runs, per-API recovery limits) with the sensors' intervals
shortened by ``MINDEX_RESILIENCE_INTERVAL_S`` / ``MINDEX_PROBE_INTERVAL_S`` (printed with the results).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
import sqlalchemy as sa

from mycosoft_assets.serving import RECOVERY_TAG
from mycosoft_assets.settings import REPO_ROOT

DRILL_SENSOR_INTERVAL_S = 2
DRILL_PROBE_INTERVAL_S = 3
FAILOVER_TARGET_S = 30.0
WAIT_LIMIT_S = 240.0

# The API sources, the replay sources (APIs) each one spends, and the MINDEX tables (with the rows it owns).
DRILL_SOURCES: dict[str, tuple[tuple[str, ...], list[tuple[str, str]]]] = {
    "inaturalist": (("inaturalist",), [("observations", "source = 'inaturalist'")]),
    "gbif": (("gbif",), [("observations", "source = 'gbif'")]),
    "nws_alerts": (("nws",), [("nws_alert_messages", "1=1")]),
    "weather": (("nws", "open_meteo"), [("weather_forecasts", "1=1")]),
    "openaq": (("openaq",), [("aq_measurements", "1=1"), ("aq_stations", "1=1")]),
}


@dataclass
class DrillResult:
    scenario: str
    sources: list[str]
    failover_s: float | None = None
    healing_s: float | None = None
    mindex_rows: int = 0
    duplicates: int = 0
    missing: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (not self.problems and self.failover_s is not None and self.healing_s is not None
                and self.duplicates == 0 and self.missing == 0 and self.mindex_rows > 0)

    def line(self) -> str:
        failover = f"{self.failover_s:5.1f} s" if self.failover_s is not None else "  -   "
        healing = f"{self.healing_s:5.1f} s" if self.healing_s is not None else "  -   "
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.scenario:<12} failover {failover} (target < {FAILOVER_TARGET_S:.0f} s)  "
                f"healing {healing}  MINDEX rows {self.mindex_rows}  duplicates {self.duplicates}  "
                f"missing {self.missing}" + (f"\n     {'; '.join(self.problems)}" if self.problems else ""))


def _set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


def _run_live(defs: dg.Definitions, instance: dg.DagsterInstance, source: str) -> list[str]:
    """The main job's runs for one source (snapshot, then refresh); returns failures."""
    from sensors.schedules import SNAPSHOT_ASSETS, refresh_tags

    failures = []
    jobs = ([f"{source}_snapshot"] if source in SNAPSHOT_ASSETS else []) + [f"{source}_sync"]
    for job in jobs:
        tags = refresh_tags(source, datetime.now(UTC), instance) if job.endswith("_sync") else {}
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, tags=tags, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
        if not result.success:
            failures.append(f"{job} failed live")
    return failures


def mindex_keys(db_url: str, source: str) -> tuple[int, int, set[tuple[Any, ...]]]:
    """(rows, duplicate natural keys, the natural keys) of the source's MINDEX tables."""
    engine = sa.create_engine(db_url)
    keys: set[tuple[Any, ...]] = set()
    rows = duplicates = 0
    try:
        with engine.connect() as conn:
            for table_name, where in DRILL_SOURCES[source][1]:
                table = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
                pk = [c.name for c in table.primary_key.columns]
                found = conn.execute(sa.text(f"SELECT {', '.join(pk)} FROM {table_name} WHERE {where}")).all()
                rows += len(found)
                distinct = {(table_name, *r) for r in found}
                duplicates += len(found) - len(distinct)
                keys |= distinct
    finally:
        engine.dispose()
    return rows, duplicates, keys


def _latest_recovery_run(instance: dg.DagsterInstance, source: str, kind: str, after: float) -> dg.RunRecord | None:
    records = instance.get_run_records(dg.RunsFilter(tags={RECOVERY_TAG: kind, "source": source},
                                                     created_after=datetime.fromtimestamp(after, UTC)), limit=20)
    done = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    return max(done, key=lambda r: r.end_time or 0) if done else None


def _cached_partitions_healed(instance: dg.DagsterInstance, source: str, since: float) -> bool:
    """Every partition a fallback served since ``since`` has a live materialization of the mirror that fallback
    stands in for (a snapshot fallback is healed by its snapshot, not by the partitioned refresh)."""
    from sensors.resilience import recovery_pairs, run_partition_keys

    records = instance.get_run_records(dg.RunsFilter(tags={RECOVERY_TAG: "fallback", "source": source},
                                                     created_after=datetime.fromtimestamp(since, UTC)), limit=50)
    mirror_of = {fallback: mirror for _monitored, fallback, mirror in recovery_pairs(source)}
    for record in records:
        run = record.dagster_run
        served_at = record.end_time or record.create_timestamp.timestamp()
        for key in run_partition_keys(source, run.job_name, run.tags):
            partitions = None if key == "snapshot" else [key]
            latest = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(mirror_of[run.job_name]), asset_partitions=partitions), limit=1).records
            if not latest or latest[0].timestamp <= served_at:
                return False
    return True


def _sensor_sees_healthy(instance: dg.DagsterInstance, source: str, after: float) -> bool:
    """The source's resilience sensor has recorded, since ``after``, every API up and nothing served from cache."""
    records = instance.fetch_observations(dg.AssetKey(_mirror(source)), limit=1).records
    if not records or records[0].timestamp <= after:
        return False
    metadata = {k: v.value for k, v in records[0].asset_observation.metadata.items()}
    states = [v for k, v in metadata.items() if k.endswith("_health")]
    return bool(states) and all(v == "up" for v in states) and not metadata.get("partitions_served_from_cache")


def _wait(condition, limit: float = WAIT_LIMIT_S, step: float = 0.5) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


@contextmanager
def daemon(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    binary = str(Path(sys.executable).with_name("dagster-daemon"))
    with open(log, "w") as out:
        process = subprocess.Popen([binary, "run", "-w", str(REPO_ROOT / "workspace.yaml")], cwd=REPO_ROOT,
                                   env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run_drill(scenarios: list[list[str]], fixtures_dir: Path, workdir: Path, out: TextIO = sys.stdout
              ) -> list[DrillResult]:
    from mindex.replay import ReplayServer
    from mycosoft_assets.definitions import build_definitions

    sources = sorted({s for scenario in scenarios for s in scenario})
    apis = sorted({a for s in sources for a in DRILL_SOURCES[s][0]})
    home, data, reference = workdir / "home", workdir / "data", workdir / "reference"
    for folder in (home, data, reference):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    results: list[DrillResult] = []
    with ReplayServer(fixtures_dir, sources=apis) as replay:
        env = {f"{api.upper()}_BASE_URL": replay.base_url(api) for api in apis}
        env.update({"DAGSTER_HOME": str(home), "MINDEX_DATA_DIR": str(data), "MINDEX_REQUEST_BUDGET": "off",
                    "OPENAQ_API_KEY": "replay-key",  # never a real secret to a replay server
                    "MINDEX_RESILIENCE_INTERVAL_S": str(DRILL_SENSOR_INTERVAL_S),
                    "MINDEX_PROBE_INTERVAL_S": str(DRILL_PROBE_INTERVAL_S)})
        # The reference: the same runs into another instance and MINDEX, with no fault at all.
        _set_env({**env, "MINDEX_DATA_DIR": str(reference), "DAGSTER_HOME": str(reference)})
        with dg.instance_for_test() as ref_instance:
            ref_defs = build_definitions()
            for source in sources:
                _run_live(ref_defs, ref_instance, source)
        _set_env(env)
        defs = build_definitions()
        db_url = f"sqlite:///{data / 'mindex.sqlite'}"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for source in sources:
                problems = _run_live(defs, instance, source)
                if problems:
                    print(f"live materialization failed: {problems}", file=out)
            with daemon(env, workdir / "daemon.log"):
                # The sensors' first ticks see every API up.
                if _wait(lambda: all(instance.fetch_observations(dg.AssetKey(_mirror(s)), limit=1).records
                                     for s in sources), limit=120) is None:
                    raise RuntimeError(f"the resilience sensors never ticked; see {workdir / 'daemon.log'}")
                for scenario in scenarios:
                    results.append(_scenario(scenario, defs, instance, replay, db_url, reference, out))
                    print(results[-1].line(), file=out)
    return results


def _mirror(source: str) -> str:
    from sensors.schedules import REFRESH_ASSETS

    return REFRESH_ASSETS[source][0]


def _scenario(sources: list[str], defs: dg.Definitions, instance: dg.DagsterInstance, replay: Any, db_url: str,
              reference: Path, out: TextIO) -> DrillResult:
    result = DrillResult("all" if len(sources) > 1 else sources[0], sources)
    apis = sorted({a for s in sources for a in DRILL_SOURCES[s][0]})
    # Sources sharing a downed API fail over too (NWS down takes weather's forecasts with it): the scenario ends
    # only when every one of them is healed, so the next one starts from a healthy platform.
    affected = [s for s in DRILL_SOURCES if set(DRILL_SOURCES[s][0]) & set(apis)]
    down_at = time.time()
    for api in apis:
        replay.set_fault(api, "down")
    # What the schedule ticks would do meanwhile: live refreshes, which fail on the API. One thread runs them in
    # turn: in-process executions in parallel threads of one process deadlock in Dagster.
    refresh = threading.Thread(target=lambda: [_run_live(defs, instance, s) for s in sources], daemon=True)
    refresh.start()
    failover = _wait(lambda: all(_latest_recovery_run(instance, s, "fallback", down_at) for s in sources))
    if failover is None:
        result.problems.append("no successful fallback run")
    else:
        result.failover_s = max((_latest_recovery_run(instance, s, "fallback", down_at).end_time or 0) - down_at
                                for s in sources)
    for source in sources:
        rows, _, _ = mindex_keys(db_url, source)
        if rows == 0:
            result.problems.append(f"MINDEX has no {source} rows while it is down")
    refresh.join(timeout=WAIT_LIMIT_S)
    if refresh.is_alive():
        result.problems.append("the live refreshes did not end while the source was down")
    up_at = time.time()
    for api in apis:
        replay.clear_fault(api)
    healed = _wait(lambda: all(_cached_partitions_healed(instance, s, down_at) and _sensor_sees_healthy(
        instance, s, up_at) for s in affected))
    if healed is None:
        result.problems.append("cached partitions were not healed live")
    else:
        result.healing_s = time.time() - up_at
    for source in sources:
        rows, duplicates, keys = mindex_keys(db_url, source)
        _, _, expected = mindex_keys(f"sqlite:///{reference / 'mindex.sqlite'}", source)
        result.mindex_rows += rows
        result.duplicates += duplicates
        result.missing += len(expected - keys)
    return result


def drill_main(sources: list[str] | None, replay_dir: str | None, keep: bool = False,
               out: TextIO = sys.stdout) -> int:
    from mindex.replay.cli import default_fixtures_dir

    fixtures = Path(replay_dir) if replay_dir else default_fixtures_dir()
    chosen = sources or list(DRILL_SOURCES)
    unknown = [s for s in chosen if s not in DRILL_SOURCES]
    if unknown:
        print(f"unknown source(s) {unknown}; choose from {list(DRILL_SOURCES)}", file=sys.stderr)
        return 2
    scenarios = [[s] for s in chosen] + ([chosen] if len(chosen) > 1 else [])
    workdir = Path(tempfile.mkdtemp(prefix="mindex-drill-"))
    print(f"drill: instance and data in {workdir}; sensor tick {DRILL_SENSOR_INTERVAL_S} s, probe every "
          f"{DRILL_PROBE_INTERVAL_S} s (backing off to {4 * DRILL_PROBE_INTERVAL_S} s while down)", file=out)
    try:
        results = run_drill(scenarios, fixtures, workdir, out)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results and all(r.passed for r in results) else 1
