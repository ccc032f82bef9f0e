"""The main job: sync every source's open partitions and snapshots, then the derived MINDEX tables.

It runs the same jobs the daemon's schedules run, in this process, against the Dagster instance in
DAGSTER_HOME, so every run, materialization and its metadata shows in the UI afterwards. With
``MINDEX_REPLAY_DIR`` it first starts the replay server on free loopback ports and points every client at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from mindex.home import ensure_dagster_home
from sensors.schedules import RANGE_END_TAG, RANGE_START_TAG, main_job_plan, refresh_tags, stream_datasets

# Dagster logs every event at DEBUG to the console; the summary below is what a person wants to read.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class JobOutcome:
    job: str
    partitions: str
    success: bool
    seconds: float
    error: str | None = None


# In replay mode the stream collectors run this long (bounded, so the main job ends); live they run on their own.
REPLAY_COLLECTOR_SECONDS = 12
REPLAY_OPENSKY_POLLS = 3


def start_replay_collectors(out=sys.stdout) -> list[subprocess.Popen]:
    """Start both collectors against the replay servers for a bounded time, as `mindex collect` would run them."""
    mindex = str(Path(sys.executable).with_name("mindex"))
    commands = [
        [mindex, "collect", "opensky", "--polls", str(REPLAY_OPENSKY_POLLS), "--interval", "1",
         "--allow-fast-replay"],
        [mindex, "collect", "aisstream", "--duration", str(REPLAY_COLLECTOR_SECONDS)],
    ]
    processes = []
    for command in commands:
        print(f"collector: {' '.join(command[1:])}", file=out)
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return processes


def wait_for_collectors(processes: list[subprocess.Popen], out=sys.stdout) -> None:
    for process in processes:
        try:
            _, err = process.communicate(timeout=REPLAY_COLLECTOR_SECONDS + 60)
        except subprocess.TimeoutExpired:
            process.terminate()
            _, err = process.communicate(timeout=30)
        if process.returncode != 0:
            print(f"collector {' '.join(process.args[1:3])} exited {process.returncode}: {err.strip()[-500:]}",
                  file=out)


def run_main_job(replay_dir: str | None = None, out=sys.stdout) -> int:
    ensure_dagster_home()
    replay = None
    ais_replay = None
    collectors: list[subprocess.Popen] = []
    if replay_dir:
        from mindex.replay import ReplayServer
        from mindex.replay.ais_ws import AisReplayServer

        replay = ReplayServer(Path(replay_dir)).start()
        for source in replay.sources:
            os.environ[f"{source.upper()}_BASE_URL"] = replay.base_url(source)
            print(f"replay: {source} answered at {replay.base_url(source)}", file=out)
        ais_replay = AisReplayServer(Path(replay_dir)).start()
        os.environ["AISSTREAM_URL"] = ais_replay.url
        print(f"replay: aisstream streamed at {ais_replay.url}", file=out)
        # The replay servers want keys like the real APIs, but any non-empty one: a real secret exported in this
        # shell is never sent to them, and OpenSky polls anonymously (its token URL is the real auth server).
        os.environ.update(OPENAQ_API_KEY="replay-key", AISSTREAM_API_KEY="replay-key")
        for name in ("OPENSKY_CLIENT_ID", "OPENSKY_CLIENT_SECRET"):
            os.environ.pop(name, None)
        # A loopback server has no quota: don't pace requests to the real APIs' limits.
        os.environ.setdefault("MINDEX_REQUEST_BUDGET", "off")
        collectors = start_replay_collectors(out)
    try:
        # Build definitions only now, so the resources see the replay URLs.
        from mycosoft_assets.definitions import build_definitions

        defs = build_definitions()
        outcomes = []
        started_all = time.time()
        with dg.DagsterInstance.get() as instance:
            for job_name, tags, partitions in main_job_plan(datetime.now(UTC), instance):
                source = job_name.removesuffix("_sync")
                if job_name.endswith("_sync") and stream_datasets(source):
                    # Stream hours are known once the collectors have landed what they received.
                    wait_for_collectors(collectors, out)
                    collectors = []
                    tags = refresh_tags(source, datetime.now(UTC), instance)
                    partitions = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
                started = time.monotonic()
                result = defs.resolve_job_def(job_name).execute_in_process(
                    instance=instance, tags=tags, raise_on_error=False, run_config=QUIET_LOGS)
                error = None
                if not result.success:
                    error = first_failure(result)
                outcomes.append(JobOutcome(job_name, partitions, result.success, time.monotonic() - started,
                                           error))
                print(f"{'ok  ' if result.success else 'FAIL'} {job_name:<22} {partitions:<24} "
                      f"{outcomes[-1].seconds:6.1f} s  run {result.run_id[:8]}"
                      + (f"\n     {error}" if error else ""), file=out)
            print_materializations(defs, instance, out, since=started_all)
        return 0 if all(o.success for o in outcomes) else 1
    finally:
        for process in collectors:
            process.terminate()
        if replay is not None:
            replay.stop()
        if ais_replay is not None:
            ais_replay.stop()


def first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The root cause of the first failed step (Dagster wraps it in its own execution error)."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.message.strip()}"
    return "run failed"


def print_materializations(defs: dg.Definitions, instance: dg.DagsterInstance, out=sys.stdout,
                           since: float | None = None) -> None:
    """The latest materialization of every asset. Rows this run did not refresh are marked, so a failed sync
    is not mistaken for fresh data."""
    print(f"\n{'asset':<34} {'last materialized (UTC)':<22} {'row_count':>10}  {'partition':<18} this run", file=out)
    for key in sorted(defs.resolve_all_asset_keys(), key=lambda k: k.to_user_string()):
        event = instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization is None:
            print(f"{key.to_user_string():<34} {'never':<22} {'-':>10}  {'-':<18} NO", file=out)
            continue
        materialization = event.asset_materialization
        rows = materialization.metadata.get("dagster/row_count")
        when = datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        fresh = "yes" if since is None or event.timestamp >= since else "NO (older)"
        print(f"{key.to_user_string():<34} {when:<22} {rows.value if rows else '-':>10}  "
              f"{materialization.partition or '-':<18} {fresh}", file=out)
