"""GBIF mirror assets: Fungi occurrences (weekly partitions by lastInterpreted) and Fungi name usages."""


from datetime import timedelta

import dagster as dg

from mycosoft_assets import sla
from mycosoft_assets.assetkit import source_asset_args
from mycosoft_assets.gbif.normalize import (
    FUNGI_TAXON_KEY,
    OCCURRENCE_SCHEMA,
    SPECIES_SCHEMA,
    normalize_occurrence,
    normalize_species,
)
from mycosoft_assets.mirror import (
    Dataset,
    SyncConfig,
    cursor_before,
    fetch_plan,
    mirror_pages,
    report_materialization,
    run_windows,
    snapshot_window,
)
from resources.gbif import DayWindow, GbifClient
from resources.storage import PartitionStore

SOURCE = "gbif"

OCCURRENCES = Dataset(
    name="gbif_occurrences",
    schema=OCCURRENCE_SCHEMA,
    normalize=normalize_occurrence,
    natural_key="key",
    cursor_column="last_interpreted",
)
SPECIES = Dataset(name="gbif_species", schema=SPECIES_SCHEMA, normalize=normalize_species, natural_key="key")


@dg.asset(**source_asset_args(
    SOURCE, name=OCCURRENCES.name,
    description="Raw mirror of GBIF Fungi occurrences (taxonKey 5). A weekly partition holds the occurrences "
                "whose lastInterpreted falls in its window; the first partition synced also holds everything "
                "interpreted before it. GET /v1/occurrence/search, offset paging, windows split under the "
                "100,000 deep-paging cap.",
))
def gbif_occurrences(context: dg.AssetExecutionContext, config: SyncConfig, gbif: GbifClient,
                     mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = run_windows(mirror_store, OCCURRENCES.name, sla.partitions_def(SOURCE), context.partition_keys)
    plan = fetch_plan(mirror_store, OCCURRENCES.name, windows, full_refresh=config.full_refresh)
    # GBIF filters lastInterpreted by whole days, both ends inclusive; rows outside [start, end) are trimmed below.
    start, end = plan.since, windows[-1].end
    days = DayWindow(start.date() if start else None, (end - timedelta(microseconds=1)).date())
    context.log.info(f"syncing {len(windows)} partition(s), lastInterpreted {days.param()}; merging into "
                     f"{sorted(plan.merge) or 'none'}")
    with mirror_store.open_run(OCCURRENCES.name, OCCURRENCES.schema, windows, route_column="last_interpreted",
                               merge=plan.merge, key_columns=["key"], fetch_since=plan.since) as writer:
        pages = gbif.iter_occurrence_pages(FUNGI_TAXON_KEY, days)
        stats = mirror_pages(writer, pages, OCCURRENCES, keep=cursor_before("last_interpreted", end, start),
                             log=context.log.info)
        counts = writer.commit()
    return report_materialization(context, windows, counts, stats, writer, mirror_store, gbif.base_url)


@dg.asset(**source_asset_args(
    SOURCE, name=SPECIES.name, partitioned=False,
    description="Snapshot of the GBIF backbone's name usages under kingdom Fungi (highertaxonKey 5). "
                "GET /v1/species/search, offset paging, split by rank above the deep-paging cap.",
))
def gbif_species(context: dg.AssetExecutionContext, gbif: GbifClient,
                 mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    with mirror_store.open_run(SPECIES.name, SPECIES.schema, windows) as writer:
        stats = mirror_pages(writer, gbif.iter_species_pages(FUNGI_TAXON_KEY), SPECIES, log=context.log.info)
        counts = writer.commit()
    return report_materialization(context, windows, counts, stats, writer, mirror_store, gbif.base_url)
