"""Shared fixtures. Recorded responses are read from ../shared/fixtures (never copied into the repo)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MINDEX_FIXTURES_DIR") or REPO_ROOT.parent / "shared" / "fixtures").resolve()

# Dagster marks some parameters we rely on (backfill_policy, pools) as beta/preview; that is not a deprecation.
warnings.filterwarnings("ignore", category=Warning, module="dagster")


def load_fixture(relative: str):
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def fungi_observation_ids() -> set[int]:
    """Distinct iNaturalist observation ids in the recorded v1 files whose taxon descends from Fungi (47170).
    Computed here from the files, independently of the replay server."""
    ids = set()
    for path in sorted((FIXTURES / "inaturalist").glob("*.json")):
        if path.name.startswith("pyinat_v2"):
            continue
        body = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(body, str):
            body = json.loads(body)
        for record in (body.get("results") or []) if isinstance(body, dict) else []:
            taxon = record.get("taxon") or {}
            if "quality_grade" in record and (taxon.get("id") == 47170 or 47170 in (taxon.get("ancestor_ids") or [])):
                ids.add(record["id"])
    return ids


def fungi_occurrence_keys() -> set[int]:
    keys = set()
    for path in sorted((FIXTURES / "gbif").glob("*.json")):
        if not (path.name.startswith("occurrence_search") or path.name.startswith("spocc")
                or path.name == "occurrence_142316497.json"):
            continue
        body = json.loads(path.read_text(encoding="utf-8"))
        records = body.get("results", [body]) if isinstance(body, dict) else []
        keys.update(r["key"] for r in records if r.get("kingdomKey") == 5)
    return keys


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"recorded responses not found at {FIXTURES}; set MINDEX_FIXTURES_DIR")
    return FIXTURES


@pytest.fixture
def replay(fixtures_dir: Path) -> Iterator:
    from mindex.replay import ReplayServer

    with ReplayServer(fixtures_dir) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    from resources.budget import reset_budgets

    reset_budgets()
    yield
    reset_budgets()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
