"""Where things live by default, and which environment variables override it. Only resources read these."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DEFAULT_DAGSTER_HOME = REPO_ROOT / ".dagster_home"
DEFAULT_CONTACT = "mindex-operator@example.invalid"

# Every variable the platform reads. .env.example lists the same names; tests check the two agree.
ENV_VARS = {
    "MINDEX_DATA_DIR": "folder for Parquet partitions, raw archives and the SQLite MINDEX (default ./data)",
    "MINDEX_DATABASE_URL": "SQLAlchemy URL of MINDEX (default sqlite:///<data dir>/mindex.sqlite)",
    "MINDEX_CONTACT": "contact e-mail or URL sent in every User-Agent (NWS requires one)",
    "MINDEX_REPLAY_DIR": "run against recorded responses served on loopback (make run only)",
    "INATURALIST_BASE_URL": "iNaturalist API base (default https://api.inaturalist.org/v1)",
    "GBIF_BASE_URL": "GBIF API base (default https://api.gbif.org/v1)",
    "NWS_BASE_URL": "NWS API base (default https://api.weather.gov)",
    "OPEN_METEO_BASE_URL": "Open-Meteo API base (default https://api.open-meteo.com/v1)",
    "OPENAQ_BASE_URL": "OpenAQ API base; must be v3 (default https://api.openaq.org/v3)",
    "OPENAQ_API_KEY": "OpenAQ v3 API key, sent as X-API-Key (secret)",
    "OPENSKY_BASE_URL": "OpenSky API base (default https://opensky-network.org/api)",
    "OPENSKY_CLIENT_ID": "OpenSky OAuth2 client id (optional; anonymous without it)",
    "OPENSKY_CLIENT_SECRET": "OpenSky OAuth2 client secret (secret)",
    "OPENSKY_TOKEN_URL": "OpenSky OAuth2 token endpoint (default: OpenSky's auth server)",
    "AISSTREAM_URL": "AISStream websocket (default wss://stream.aisstream.io/v0/stream)",
    "AISSTREAM_API_KEY": "AISStream API key, sent in the subscription message (secret)",
    "MINDEX_PROBE_INTERVAL_S": "override the resilience sensors' probe interval (default: from the SLA table)",
    "MINDEX_RESILIENCE_INTERVAL_S": "minimum seconds between resilience sensor ticks (default 15)",
    "DAGSTER_HOME": "Dagster instance folder (default ./.dagster_home)",
    "MINDEX_REQUEST_BUDGET": "'off' lifts the per-API request budgets; only for the replay server on loopback",
}


def env_or(name: str, default: Any) -> Any:
    """An ``EnvVar`` when the variable is set (resolved at run time, shown as such in the UI), else the default.
    Dagster's EnvVar has no default of its own, and an unset EnvVar fails the run."""
    return dg.EnvVar(name) if os.environ.get(name) else default
