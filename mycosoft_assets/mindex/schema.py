"""MINDEX tables and views (SQLAlchemy Core, dialect-neutral: SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

# One row per source record; natural key (source, source_id). GBIF rows that republish an iNaturalist
# observation carry republished_source/republished_id so the unified view can count it once.
observations = sa.Table(
    "observations", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("taxon_source_id", sa.String(64)),
    sa.Column("scientific_name", sa.Text),
    sa.Column("taxon_rank", sa.String(32)),
    sa.Column("kingdom", sa.String(64)),
    sa.Column("observed_on", sa.Date),
    sa.Column("observed_at", sa.DateTime(timezone=True)),
    sa.Column("latitude", sa.Float),
    sa.Column("longitude", sa.Float),
    sa.Column("coord_status", sa.String(16)),
    sa.Column("coordinate_uncertainty_m", sa.Float),
    sa.Column("quality", sa.String(64)),
    sa.Column("country_code", sa.String(8)),
    sa.Column("locality", sa.Text),
    sa.Column("observer", sa.Text),
    sa.Column("license", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("dataset_key", sa.String(64)),
    sa.Column("republished_source", sa.String(32)),
    sa.Column("republished_id", sa.String(64)),
    sa.Column("source_updated_at", sa.DateTime(timezone=True)),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("qc_flags", sa.Text),
)
sa.Index("ix_observations_republished", observations.c.republished_source, observations.c.republished_id)
sa.Index("ix_observations_name", observations.c.scientific_name)

taxa = sa.Table(
    "taxa", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("rank", sa.String(32)),
    sa.Column("kingdom", sa.String(64)),
    sa.Column("parent_id", sa.String(64)),
    sa.Column("ancestor_ids", sa.Text),
    sa.Column("is_active", sa.Boolean),
    sa.Column("taxonomic_status", sa.String(64)),
    # Case C04: inactive rows stay; resolved_taxon_id points at the current taxon after a swap or merge.
    sa.Column("resolved_taxon_id", sa.String(64)),
    sa.Column("taxon_ambiguous", sa.Boolean),
    sa.Column("common_name", sa.Text),
    sa.Column("qc_flags", sa.Text),
)

VIEWS = {
    # A GBIF occurrence that republishes an iNaturalist observation we also hold is counted once, as iNat.
    "observations_unified": """
        SELECT o.* FROM observations o
        WHERE NOT (
            o.source = 'gbif' AND o.republished_source = 'inaturalist' AND EXISTS (
                SELECT 1 FROM observations i
                WHERE i.source = 'inaturalist' AND i.source_id = o.republished_id))
    """,
    "species_observation_counts": """
        SELECT scientific_name, kingdom, COUNT(*) AS observations,
               SUM(CASE WHEN source = 'inaturalist' THEN 1 ELSE 0 END) AS from_inaturalist,
               SUM(CASE WHEN source = 'gbif' THEN 1 ELSE 0 END) AS from_gbif
        FROM observations_unified
        WHERE scientific_name IS NOT NULL
        GROUP BY scientific_name, kingdom
    """,
}


_ready: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and views, once per process and database. Never drops anything, so readers
    are not disturbed while a run starts."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _ready:
        return
    metadata.create_all(engine)
    create = "CREATE OR REPLACE VIEW" if engine.dialect.name == "postgresql" else "CREATE VIEW IF NOT EXISTS"
    with engine.begin() as conn:
        for name, body in VIEWS.items():
            conn.execute(sa.text(f"{create} {name} AS {body}"))
    _ready.add(key)
