"""MINDEX data platform: Dagster assets that mirror public fungal and environmental APIs into MINDEX."""
