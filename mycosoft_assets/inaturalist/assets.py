"""iNaturalist mirror assets: fungi observations (daily partitions by update time) and fungal taxa (snapshot)."""


import itertools

import dagster as dg

from mycosoft_assets import sla
from mycosoft_assets.assetkit import source_asset_args
from mycosoft_assets.inaturalist.normalize import (
    FUNGI_TAXON_ID,
    OBSERVATION_SCHEMA,
    TAXON_SCHEMA,
    normalize_observation,
    normalize_taxon,
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
from resources.inaturalist import InaturalistClient
from resources.storage import PartitionStore

SOURCE = "inaturalist"

OBSERVATIONS = Dataset(
    name="inaturalist_observations",
    schema=OBSERVATION_SCHEMA,
    normalize=normalize_observation,
    natural_key="id",
    cursor_column="updated_at",
)
TAXA = Dataset(name="inaturalist_taxa", schema=TAXON_SCHEMA, normalize=normalize_taxon, natural_key="id")


@dg.asset(**source_asset_args(
    SOURCE, name=OBSERVATIONS.name,
    description="Raw mirror of iNaturalist fungi observations (taxon 47170). A daily partition holds the "
                "observations whose updated_at falls in its window; the first partition synced also holds "
                "everything updated before it. GET /v1/observations, keyset paging by id.",
))
def inaturalist_observations(context: dg.AssetExecutionContext, config: SyncConfig,
                             inaturalist: InaturalistClient, mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = run_windows(mirror_store, OBSERVATIONS.name, sla.partitions_def(SOURCE), context.partition_keys)
    plan = fetch_plan(mirror_store, OBSERVATIONS.name, windows, full_refresh=config.full_refresh)
    context.log.info(f"syncing {len(windows)} partition(s) ending {windows[-1].end.isoformat()}, updated since "
                     f"{plan.describe()}; merging into {sorted(plan.merge) or 'none'}")
    with mirror_store.open_run(OBSERVATIONS.name, OBSERVATIONS.schema, windows, route_column="updated_at",
                               merge=plan.merge, key_columns=["id"], fetch_since=plan.since) as writer:
        pages = inaturalist.iter_observation_pages(FUNGI_TAXON_ID, updated_since=plan.since)
        stats = mirror_pages(writer, pages, OBSERVATIONS,
                             keep=cursor_before("updated_at", windows[-1].end, plan.since), log=context.log.info)
        counts = writer.commit()
    return report_materialization(context, windows, counts, stats, writer, mirror_store, inaturalist.base_url)


@dg.asset(**source_asset_args(
    SOURCE, name=TAXA.name, partitioned=False,
    description="Snapshot of iNaturalist fungal taxa (descendants of 47170), active and inactive, with swaps "
                "and merges resolved. GET /v1/taxa?taxon_id=47170, keyset paging by id.",
))
def inaturalist_taxa(context: dg.AssetExecutionContext, inaturalist: InaturalistClient,
                     mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    with mirror_store.open_run(TAXA.name, TAXA.schema, windows) as writer:
        # Active and inactive taxa, asked for explicitly: inactive ones must stay (case C04) because
        # observations may still point at them after a swap or merge.
        pages = itertools.chain(inaturalist.iter_taxa_pages(FUNGI_TAXON_ID, extra={"is_active": "true"}),
                                inaturalist.iter_taxa_pages(FUNGI_TAXON_ID, extra={"is_active": "false"}))
        stats = mirror_pages(writer, pages, TAXA, log=context.log.info)
        counts = writer.commit()
    return report_materialization(context, windows, counts, stats, writer, mirror_store, inaturalist.base_url)
