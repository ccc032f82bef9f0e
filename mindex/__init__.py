"""The `mindex` command: what Dagster's own CLI does not do (replay, the main job, and later status, backup...)."""
