"""Dagster home and environment set-up shared by the `mindex` subcommands and the Makefile."""

from __future__ import annotations

import os
from pathlib import Path

from mycosoft_assets.settings import DEFAULT_DAGSTER_HOME, REPO_ROOT


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME defaults to ./.dagster_home; the repo's dagster.yaml is linked into it when it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and not config.is_symlink():
        config.symlink_to(REPO_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
