"""Layer 1: the definitions load, validate, and carry everything the SLA table says (cases C15, C17)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from mycosoft_assets import sla
from mycosoft_assets.settings import ENV_VARS
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from mycosoft_assets.definitions import defs as loaded

    return loaded


def test_definitions_load_without_deprecation_or_supersession_warnings():
    """Case C17: the freshness API churned; a deprecated call must fail CI, not drift silently."""
    import mycosoft_assets.definitions as module

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(module)
        dg.Definitions.validate_loadable(module.defs)
    bad = [w for w in caught if issubclass(w.category, DeprecationWarning)
           or "Supersession" in w.category.__name__ or "Deprecat" in w.category.__name__]
    assert bad == [], [str(w.message) for w in bad]


def test_the_sla_table_has_all_seven_sources_with_the_products_numbers():
    assert set(sla.SLA_TABLE) == {"inaturalist", "gbif", "opensky", "aisstream", "openaq", "nws_alerts", "weather"}
    assert sla.sla("inaturalist").sla == timedelta(hours=24)
    assert sla.sla("gbif").sla == timedelta(days=7)
    assert sla.sla("openaq").sla == timedelta(hours=1)
    assert sla.sla("nws_alerts").sla == timedelta(minutes=5)
    assert sla.sla("weather").sla == timedelta(minutes=30)
    assert sla.retention("opensky") == sla.retention("aisstream") == timedelta(hours=24)
    for row in sla.SLA_TABLE.values():
        assert row.warn_after < row.sla
        assert row.sla >= timedelta(minutes=1), "fail_window must be at least a minute"
        for api in row.apis:
            assert api in sla.API_LIMITS
    # iNaturalist's published 60/min is never reached by our own budget (case C05).
    assert sla.api_limits("inaturalist").per_minute < 60


MIRRORS = {
    "inaturalist_observations": "inaturalist", "inaturalist_taxa": "inaturalist", "gbif_occurrences": "gbif",
    "gbif_species": "gbif", "nws_alerts": "nws_alerts", "weather_forecasts": "weather", "openaq_locations": "openaq",
    "openaq_latest": "openaq", "openaq_measurements": "openaq", "opensky_state_vectors": "opensky",
    "aisstream_vessel_positions": "aisstream", "aisstream_vessel_static": "aisstream",
}
MINDEX = {
    "mindex_inaturalist_observations": "inaturalist", "mindex_gbif_occurrences": "gbif", "mindex_taxa": "inaturalist",
    "mindex_nws_alerts": "nws_alerts", "mindex_weather_forecasts": "weather", "mindex_air_quality": "openaq",
    "mindex_air_quality_measurements": "openaq", "mindex_aircraft_states": "opensky",
    "mindex_vessel_positions": "aisstream", "mindex_vessel_static": "aisstream",
}
PARTITIONED = {"inaturalist_observations", "mindex_inaturalist_observations", "gbif_occurrences",
               "mindex_gbif_occurrences", "openaq_measurements", "mindex_air_quality_measurements",
               "opensky_state_vectors", "mindex_aircraft_states", "aisstream_vessel_positions",
               "aisstream_vessel_static", "mindex_vessel_positions", "mindex_vessel_static"}


def test_every_asset_has_its_sla_freshness_policy_group_and_partitions(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(MIRRORS) | set(MINDEX) | {"mindex_observations_unified"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        source = MIRRORS.get(name) or MINDEX.get(name) or "inaturalist"
        policy = node.freshness_policy
        assert policy is not None, f"{name} has no freshness policy"
        assert policy.fail_window.to_timedelta() == sla.sla(source).sla, name
        assert policy.warn_window.to_timedelta() == sla.sla(source).warn_after, name
        assert node.group_name == (source if name in MIRRORS else "mindex"), name
        assert node.description
        if name in PARTITIONED:
            assert node.partitions_def == sla.partitions_def(source)
            assert node.partitions_def.timezone == "UTC"
            assert node.backfill_policy == dg.BackfillPolicy.single_run()
        else:
            assert node.partitions_def is None, name


def test_the_environmental_slas_are_5_min_30_min_and_1_h(defs):
    graph = defs.resolve_asset_graph()
    expected = {"nws_alerts": timedelta(minutes=5), "weather_forecasts": timedelta(minutes=30),
                "openaq_measurements": timedelta(hours=1), "mindex_nws_alerts": timedelta(minutes=5),
                "mindex_weather_forecasts": timedelta(minutes=30), "mindex_air_quality": timedelta(hours=1)}
    for name, window in expected.items():
        assert graph.get(dg.AssetKey(name)).freshness_policy.fail_window.to_timedelta() == window


def test_lineage_is_one_way_mirror_to_mindex(defs):
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("inaturalist_observations") == set() and parents("gbif_occurrences") == set()
    assert parents("mindex_inaturalist_observations") == {"inaturalist_observations"}
    assert parents("mindex_gbif_occurrences") == {"gbif_occurrences"}
    assert parents("mindex_taxa") == {"inaturalist_taxa", "gbif_species"}
    assert parents("mindex_observations_unified") == {"mindex_inaturalist_observations", "mindex_gbif_occurrences",
                                                      "mindex_taxa"}


def test_api_pools_come_from_the_sla_table(defs):
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("inaturalist_observations")).pools == {"api_inaturalist"}
    assert graph.get(dg.AssetKey("gbif_species")).pools == {"api_gbif"}


def test_hourly_partitions_are_utc_and_24_a_day_across_dst():
    """Case C15: local clocks repeat or skip an hour on DST days (2026-11-01 01:00 happens twice in Los Angeles;
    2026-03-08 02:00 never happens); UTC partitions stay 24 a day."""
    hourly = sla.partitions_def("openaq")
    assert hourly.timezone == "UTC"
    for day in (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)):
        keys = hourly.get_partition_keys_in_range(dg.PartitionKeyRange(
            hourly.get_partition_key_for_timestamp(day.timestamp()),
            hourly.get_partition_key_for_timestamp((day + timedelta(hours=23)).timestamp())))
        assert len(keys) == 24 and len(set(keys)) == 24


def test_env_example_lists_every_variable_the_platform_reads():
    text = (REPO_ROOT / ".env.example").read_text()
    # Variables are listed commented out (an empty VAR= in .env would override the shell): "# VAR=" counts.
    listed = set(re.findall(r"^(?:#\s*)?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert listed == set(ENV_VARS)


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate",
                           "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mycosoft_mindex" in done.stdout + done.stderr
