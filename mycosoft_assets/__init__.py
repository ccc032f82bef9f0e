"""MINDEX data platform: Dagster assets that mirror public fungal and environmental APIs into MINDEX."""

import warnings

import dagster as _dg

# backfill_policy (one run per partition range, so incremental windows are computed in order) is marked beta
# in dagster 1.13. We pin dagster exactly and test the behaviour, so the warning is noise on every CLI call.
# Deprecations and supersessions are NOT silenced: tests/test_definitions.py fails on them (case C17).
warnings.filterwarnings("ignore", category=_dg.BetaWarning)
# Partition-aware asset checks (partitions_def on AssetCheckSpec) are "preview" in 1.13; case C19 asks for them.
warnings.filterwarnings("ignore", category=_dg.PreviewWarning)
