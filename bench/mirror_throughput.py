"""Mirror throughput on derived volume: how many records a second the machinery moves end to end.

Starts the replay server with more records than were recorded (derived from the real ones: new ids, dates shifted
back by whole days, everything else real), runs the first sync of iNaturalist observations and GBIF occurrences
into a temporary data folder, then the MINDEX upserts, and prints records/s and peak memory. Loopback only.

    .venv/bin/python bench/mirror_throughput.py --inaturalist 10250 --gbif 100300

The plan's figures: 21,757 iNaturalist observations and ~100k GBIF records today, 10x that, and 1M data points a
day on one machine. Compare "records/s" with 1,000,000 / 86,400 ≈ 12 records/s sustained.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mindex.replay import ReplayServer  # noqa: E402
from mycosoft_assets import sla  # noqa: E402
from mycosoft_assets.gbif.assets import gbif_occurrences  # noqa: E402
from mycosoft_assets.inaturalist.assets import inaturalist_observations  # noqa: E402
from mycosoft_assets.mindex.assets import mindex_gbif_occurrences, mindex_inaturalist_observations  # noqa: E402
from resources.gbif import GbifClient  # noqa: E402
from resources.inaturalist import InaturalistClient  # noqa: E402
from resources.mindex_db import MindexDatabase  # noqa: E402
from resources.storage import PartitionStore  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(label: str, assets: list, resources: dict, partition: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = dg.materialize(assets, resources=resources, partition_key=partition)
    elapsed = time.perf_counter() - started
    events = result.asset_materializations_for_node(assets[0].key.path[-1])
    rows = sum(m.metadata["dagster/row_count"].value for m in events)
    print(f"{label:<42} {rows:>9,} rows {elapsed:>8.1f} s {rows / elapsed:>10,.0f} rows/s  "
          f"peak RSS {peak_rss_mb():,.0f} MB")
    return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures"))
    parser.add_argument("--inaturalist", type=int, default=10_250)
    parser.add_argument("--gbif", type=int, default=100_300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ReplayServer(Path(args.fixtures), volumes={
            "inaturalist": args.inaturalist, "gbif": args.gbif}) as replay:
        resources = {
            "inaturalist": InaturalistClient(base_url=replay.base_url("inaturalist")),
            "gbif": GbifClient(base_url=replay.base_url("gbif")),
            "mirror_store": PartitionStore(data_dir=tmp),
            "mindex_db": MindexDatabase(data_dir=tmp),
        }
        print(f"derived volume: iNaturalist {args.inaturalist:,} observations (all taxa), GBIF {args.gbif:,} "
              "occurrences; no request budget (loopback)")
        inat_key = sla.partitions_def("inaturalist").get_partition_keys()[-1]
        gbif_key = sla.partitions_def("gbif").get_partition_keys()[-1]
        run("iNaturalist first sync (fetch+archive+parquet)", [inaturalist_observations], resources, inat_key)
        run("MINDEX upsert of that partition", [mindex_inaturalist_observations], resources, inat_key)
        run("GBIF first sync (split under the cap)", [gbif_occurrences], resources, gbif_key)
        run("MINDEX upsert of that partition", [mindex_gbif_occurrences], resources, gbif_key)
        print("\nAt the real APIs the request budget dominates: iNaturalist 200 records per request at <= 1/s is "
              "~200 records/s; GBIF 300 per request at <= 3/s is ~900 records/s.")


if __name__ == "__main__":
    main()
