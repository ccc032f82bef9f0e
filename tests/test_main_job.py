"""The main job end to end, as `make run` runs it: `mindex run` with MINDEX_REPLAY_DIR starts the replay server
on loopback, syncs every source into a fresh Dagster instance and MINDEX, and stops. Run twice: same counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from tests.conftest import REPO_ROOT

ASSETS = ["inaturalist_observations", "inaturalist_taxa", "gbif_occurrences", "gbif_species",
          "mindex_inaturalist_observations", "mindex_gbif_occurrences", "mindex_taxa", "mindex_observations_unified",
          "nws_alerts", "mindex_nws_alerts", "weather_forecasts", "mindex_weather_forecasts", "openaq_locations",
          "openaq_latest", "openaq_measurements", "mindex_air_quality", "mindex_air_quality_measurements",
          "opensky_state_vectors", "mindex_aircraft_states", "aisstream_vessel_positions", "aisstream_vessel_static",
          "mindex_vessel_positions", "mindex_vessel_static"]


def run_main(tmp_path: Path, fixtures_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), MINDEX_DATA_DIR=str(tmp_path / "data"),
               MINDEX_REPLAY_DIR=str(fixtures_dir))
    env.pop("MINDEX_DATABASE_URL", None)
    mindex = os.path.join(os.path.dirname(sys.executable), "mindex")
    return subprocess.run([mindex, "run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def latest_row_counts(home: Path, partitions: dict[str, str | None] | None = None) -> dict[str, tuple]:
    """(partition, row_count) of each asset's latest materialization, or of the given partition's latest one."""
    os.environ["DAGSTER_HOME"] = str(home)
    counts = {}
    with dg.DagsterInstance.get() as instance:
        for name in ASSETS:
            key = dg.AssetKey(name)
            partition = (partitions or {}).get(name)
            if partition:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
                event = records[0].event_log_entry if records else None
            else:
                event = instance.get_latest_materialization_event(key)
            assert event is not None, f"{name} was never materialized"
            materialization = event.asset_materialization
            counts[name] = (materialization.partition, materialization.metadata["dagster/row_count"].value)
    return counts


def test_make_run_in_replay_mode_materializes_everything_twice_with_the_same_counts(tmp_path, fixtures_dir,
                                                                                    monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = run_main(tmp_path, fixtures_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "replay: inaturalist answered at http://127.0.0.1:" in first.stdout
    assert (tmp_path / "home" / "dagster.yaml").is_symlink()
    counts = latest_row_counts(tmp_path / "home")
    assert all(rows > 0 for _, rows in counts.values()), counts
    assert counts["inaturalist_observations"][1] == 22 and counts["gbif_occurrences"][1] == 302
    assert counts["mindex_observations_unified"][1] == 22 + 302
    assert counts["nws_alerts"][1] == 623 and counts["openaq_measurements"][1] == 2546
    # The stream collectors ran against the replay servers: the global snapshot (polled 3 times, stored once) and
    # the recorded AIS stream (positions and static reports, deduplicated on MMSI + type + time_utc).
    assert counts["opensky_state_vectors"][1] == counts["mindex_aircraft_states"][1] == 6553
    assert counts["aisstream_vessel_positions"][1] == counts["mindex_vessel_positions"][1] == 2528
    assert counts["aisstream_vessel_static"][1] == counts["mindex_vessel_static"][1] == 1956

    second = run_main(tmp_path, fixtures_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    # The same partitions again (a day, a week or an hour may have turned between the runs: then the newest
    # partition is a new, empty one, and the one compared here was closed by the second run).
    assert latest_row_counts(tmp_path / "home", {k: p for k, (p, _) in counts.items()}) == counts

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'mindex.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM observations")).scalar() == 324
        assert conn.execute(sa.text("SELECT COUNT(*) FROM taxa")).scalar() == 119
    engine.dispose()
    assert list((tmp_path / "data" / "raw" / "inaturalist_observations").glob("*.jsonl.gz"))


def test_main_job_fails_loudly_when_a_source_is_down(tmp_path, fixtures_dir):
    """Against an address where nothing listens, the run ends non-zero and says which source and why."""
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), MINDEX_DATA_DIR=str(tmp_path / "data"),
               INATURALIST_BASE_URL="http://127.0.0.1:9/v1", GBIF_BASE_URL="http://127.0.0.1:9/v1",
               NWS_BASE_URL="http://127.0.0.1:9", OPEN_METEO_BASE_URL="http://127.0.0.1:9/v1",
               OPENAQ_BASE_URL="http://127.0.0.1:9/v3", OPENAQ_API_KEY="k")
    env.pop("MINDEX_REPLAY_DIR", None)
    mindex = os.path.join(os.path.dirname(sys.executable), "mindex")
    done = subprocess.run([mindex, "run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "FAIL inaturalist_sync" in done.stdout
    assert "cannot connect" in done.stdout
