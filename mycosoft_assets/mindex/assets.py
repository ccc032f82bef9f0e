"""Derived MINDEX tables: read the mirrors' Parquet partitions, upsert by natural key, one transaction each."""


from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa

from mycosoft_assets import sla
from mycosoft_assets.gbif.assets import OCCURRENCES, SPECIES
from mycosoft_assets.inaturalist.assets import OBSERVATIONS, TAXA
from mycosoft_assets.mindex.schema import ensure_schema, observations, taxa
from mycosoft_assets.quality import quarantine
from mycosoft_assets.serving import refuse_partitions_that_failed_checks, serving_metadata
from resources.mindex_db import MindexDatabase, upsert
from resources.storage import PartitionStore

GROUP = "mindex"

# iNaturalist's iconic taxa are not all kingdoms; map them so species counts group across sources.
ICONIC_TO_KINGDOM = {
    "Fungi": "Fungi", "Plantae": "Plantae", "Protozoa": "Protozoa", "Chromista": "Chromista",
    "Animalia": "Animalia", "Aves": "Animalia", "Amphibia": "Animalia", "Reptilia": "Animalia",
    "Mammalia": "Animalia", "Actinopterygii": "Animalia", "Mollusca": "Animalia", "Arachnida": "Animalia",
    "Insecta": "Animalia",
}


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def inaturalist_observation_row(row: dict[str, Any], partition_key: str) -> dict[str, Any]:
    return {
        "source": "inaturalist",
        "source_id": str(row["id"]),
        "taxon_source_id": None if row["taxon_id"] is None else str(row["taxon_id"]),
        "scientific_name": row["taxon_name"],
        "taxon_rank": _lower(row["taxon_rank"]),
        "kingdom": ICONIC_TO_KINGDOM.get(row["iconic_taxon_name"] or ""),
        "observed_on": row["observed_on"],
        "observed_at": row["time_observed_at"],
        "latitude": row["latitude"],
        "longitude": row["longitude"],
        "coord_status": row["coord_status"],
        "coordinate_uncertainty_m": row["positional_accuracy_m"],
        "quality": row["quality_grade"],
        "country_code": None,
        "locality": row["place_guess"],
        "observer": row["user_login"],
        "license": row["license_code"],
        "url": row["uri"],
        "dataset_key": None,
        "republished_source": None,
        "republished_id": None,
        "source_updated_at": row["updated_at"],
        "partition_key": partition_key,
        "qc_flags": row["qc_flags"],
    }


def gbif_occurrence_row(row: dict[str, Any], partition_key: str) -> dict[str, Any]:
    return {
        "source": "gbif",
        "source_id": str(row["key"]),
        "taxon_source_id": None if row["taxon_key"] is None else str(row["taxon_key"]),
        # The canonical species name (no authorship) matches iNaturalist's taxon names for counting.
        "scientific_name": row["species"] or row["scientific_name"],
        "taxon_rank": _lower(row["taxon_rank"]),
        "kingdom": row["kingdom"],
        "observed_on": row["event_date"],
        "observed_at": row["event_time"],
        "latitude": row["decimal_latitude"],
        "longitude": row["decimal_longitude"],
        "coord_status": row["coord_status"],
        "coordinate_uncertainty_m": row["coordinate_uncertainty_m"],
        "quality": row["basis_of_record"],
        "country_code": row["country_code"],
        "locality": row["locality"],
        "observer": row["recorded_by"],
        "license": row["license"],
        "url": f"https://www.gbif.org/occurrence/{row['key']}",
        "dataset_key": row["dataset_key"],
        "republished_source": row["republished_source"],
        "republished_id": row["republished_id"],
        "source_updated_at": row["last_interpreted"],
        "partition_key": partition_key,
        "qc_flags": row["qc_flags"],
    }


def inaturalist_taxon_row(row: dict[str, Any], _key: str) -> dict[str, Any]:
    return {
        "source": "inaturalist",
        "source_id": str(row["id"]),
        "name": row["name"],
        "rank": _lower(row["rank"]),
        "kingdom": ICONIC_TO_KINGDOM.get(row["iconic_taxon_name"] or ""),
        "parent_id": None if row["parent_id"] is None else str(row["parent_id"]),
        "ancestor_ids": row["ancestor_ids"],
        "is_active": row["is_active"],
        "taxonomic_status": None,
        "resolved_taxon_id": None if row["resolved_taxon_id"] is None else str(row["resolved_taxon_id"]),
        "taxon_ambiguous": row["taxon_ambiguous"],
        "common_name": row["preferred_common_name"],
        "qc_flags": row["qc_flags"],
    }


def gbif_species_row(row: dict[str, Any], _key: str) -> dict[str, Any]:
    status = row["taxonomic_status"]
    accepted = row["accepted_key"] if status and status != "ACCEPTED" and row["accepted_key"] else row["key"]
    return {
        "source": "gbif",
        "source_id": str(row["key"]),
        "name": row["canonical_name"] or row["scientific_name"],
        "rank": _lower(row["rank"]),
        "kingdom": row["kingdom"],
        "parent_id": None if row["parent_key"] is None else str(row["parent_key"]),
        "ancestor_ids": None,
        "is_active": None,
        "taxonomic_status": status,
        "resolved_taxon_id": str(accepted),
        "taxon_ambiguous": False,
        "common_name": row["vernacular_name"],
        "qc_flags": row["qc_flags"],
    }


def _rows(store: PartitionStore, dataset: str, key: str, to_row: Callable[[dict[str, Any], str], dict[str, Any]]
          ) -> Iterator[list[dict[str, Any]]]:
    for batch in store.read_batches(dataset, key):
        yield [to_row(r, key) for r in pa.Table.from_batches([batch]).to_pylist()]


def load_partitions(store: PartitionStore, db: MindexDatabase, dataset: str, keys: list[str], table: sa.Table,
                    to_row: Callable[[dict[str, Any], str], dict[str, Any]], newer_column: str | None
                    ) -> dict[str, int]:
    """Upsert each partition in its own transaction: a failure leaves earlier partitions committed and the
    failing one untouched."""
    ensure_schema(db.engine)
    counts: dict[str, int] = {}
    for key in keys:
        sent = 0
        with db.engine.begin() as conn:
            for rows in _rows(store, dataset, key, to_row):
                good, bad = quarantine.split(table.name, rows)
                sent += upsert(conn, table, good, ["source", "source_id"], newer_column=newer_column)
                quarantine.store(conn, dataset, key, ["source", "source_id"], bad, good)
        counts[key] = sent
    return counts


def source_window(store: PartitionStore, dataset: str, key: str) -> dict[str, Any]:
    """The mirror partition's source window, repeated on the MINDEX partition built from it."""
    window = store.stored_window(dataset, key)
    if window is None:
        return {}
    return {"source_window": window.describe(), "mirror_fetched_at": (store.manifest(dataset, key) or {}).get(
        "fetched_at", "")}


def report_table_load(context: dg.AssetExecutionContext, store: PartitionStore, dataset: str, db: MindexDatabase,
                      table: sa.Table, source: str, counts: dict[str, int]) -> dg.MaterializeResult:
    """Each partition reports the rows it upserted; the run reports the table's size for the source."""
    with db.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.source == source)).scalar()
    for key, count in counts.items():
        with db.engine.connect() as conn:
            held = quarantine.count(conn, dataset, key)
        context.add_asset_metadata({"dagster/row_count": count, **source_window(store, dataset, key),
                                    "quarantined": dg.MetadataValue.json(held)}, partition_key=key)
    return dg.MaterializeResult(metadata={
        **serving_metadata(context, store, dataset, list(counts)),
        "mindex_table": table.name,
        "mindex_rows_for_source": int(total or 0),
        "run_row_count": sum(counts.values()),
        "database": db.describe(),
    })


def _mindex_args(source: str, name: str, upstream: str, description: str, partitioned: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": name,
        "group_name": GROUP,
        "deps": [upstream],
        "description": description,
        "freshness_policy": sla.freshness_policy(source),
        "kinds": {"sql"},
        "tags": {"source": source},
    }
    if partitioned:
        args["partitions_def"] = sla.partitions_def(source)
        args["backfill_policy"] = dg.BackfillPolicy.single_run()
    return args


@dg.asset(**_mindex_args("inaturalist", "mindex_inaturalist_observations", OBSERVATIONS.name,
                         "iNaturalist observations upserted into MINDEX `observations` (source='inaturalist'), "
                         "newest update wins.", partitioned=True))
def mindex_inaturalist_observations(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                                    mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, OBSERVATIONS.name, list(context.partition_keys))
    counts = load_partitions(mirror_store, mindex_db, OBSERVATIONS.name, context.partition_keys, observations,
                             inaturalist_observation_row, newer_column="source_updated_at")
    return report_table_load(context, mirror_store, OBSERVATIONS.name, mindex_db, observations, "inaturalist", counts)


@dg.asset(**_mindex_args("gbif", "mindex_gbif_occurrences", OCCURRENCES.name,
                         "GBIF Fungi occurrences upserted into MINDEX `observations` (source='gbif'), with the "
                         "iNaturalist observation each one republishes.", partitioned=True))
def mindex_gbif_occurrences(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                            mindex_db: MindexDatabase) -> dg.MaterializeResult:
    refuse_partitions_that_failed_checks(context, OCCURRENCES.name, list(context.partition_keys))
    counts = load_partitions(mirror_store, mindex_db, OCCURRENCES.name, context.partition_keys, observations,
                             gbif_occurrence_row, newer_column="source_updated_at")
    return report_table_load(context, mirror_store, OCCURRENCES.name, mindex_db, observations, "gbif", counts)


@dg.asset(
    name="mindex_taxa",
    group_name=GROUP,
    deps=[TAXA.name, SPECIES.name],
    description="iNaturalist taxa and GBIF name usages in MINDEX `taxa`. Inactive taxa are kept, with "
                "resolved_taxon_id after swaps and merges; rows are never deleted.",
    freshness_policy=sla.freshness_policy("inaturalist"),
    kinds={"sql"},
    automation_condition=dg.AutomationCondition.eager(),
)
def mindex_taxa(context: dg.AssetExecutionContext, mirror_store: PartitionStore,
                mindex_db: MindexDatabase) -> dg.MaterializeResult:
    ensure_schema(mindex_db.engine)
    counts: dict[str, int] = {}
    for dataset, to_row in ((TAXA.name, inaturalist_taxon_row), (SPECIES.name, gbif_species_row)):
        if mirror_store.manifest(dataset, "snapshot") is None:
            context.log.warning(f"{dataset} has no snapshot yet; skipping it")
            continue
        counts.update({dataset: load_partitions(mirror_store, mindex_db, dataset, ["snapshot"], taxa, to_row,
                                                newer_column=None)["snapshot"]})
    with mindex_db.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(taxa)).scalar()
        inactive = conn.execute(sa.select(sa.func.count()).select_from(taxa).where(taxa.c.is_active.is_(False))
                                ).scalar()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": sum(counts.values()),
        "rows_by_mirror": dg.MetadataValue.json(counts),
        "mindex_table": "taxa",
        "mindex_rows": int(total or 0),
        "inactive_taxa": int(inactive or 0),
        "database": mindex_db.describe(),
    })


@dg.asset(
    name="mindex_observations_unified",
    group_name=GROUP,
    deps=["mindex_inaturalist_observations", "mindex_gbif_occurrences", "mindex_taxa"],
    description="View `observations_unified`: every observation once. A GBIF occurrence that republishes an "
                "iNaturalist observation MINDEX holds is counted as the iNaturalist row. View "
                "`species_observation_counts` counts species on it.",
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=min(sla.sla("inaturalist").sla, sla.sla("gbif").sla),
        warn_window=min(sla.sla("inaturalist").warn_after, sla.sla("gbif").warn_after)),
    kinds={"sql"},
    automation_condition=dg.AutomationCondition.eager(),
)
def mindex_observations_unified(mindex_db: MindexDatabase) -> dg.MaterializeResult:
    ensure_schema(mindex_db.engine)
    with mindex_db.engine.connect() as conn:
        unified = conn.execute(sa.text("SELECT COUNT(*) FROM observations_unified")).scalar()
        by_source = dict(conn.execute(sa.text(
            "SELECT source, COUNT(*) FROM observations GROUP BY source")).all())
        collapsed = conn.execute(sa.text(
            "SELECT COUNT(*) FROM observations WHERE source = 'gbif' AND republished_source = 'inaturalist' "
            "AND source_id NOT IN (SELECT source_id FROM observations_unified WHERE source = 'gbif')")).scalar()
        species = conn.execute(sa.text("SELECT COUNT(*) FROM species_observation_counts")).scalar()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": int(unified or 0),
        "observations_by_source": dg.MetadataValue.json({k: int(v) for k, v in by_source.items()}),
        "gbif_rows_counted_as_inaturalist": int(collapsed or 0),
        "species_with_observations": int(species or 0),
        "database": mindex_db.describe(),
    })
