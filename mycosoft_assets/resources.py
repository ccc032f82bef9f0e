"""The resources every run gets, configured from the SLA table and the environment."""

from __future__ import annotations

import os
from typing import Any

from mycosoft_assets import sla
from mycosoft_assets.settings import DEFAULT_CONTACT, DEFAULT_DATA_DIR
from mycosoft_assets.settings import env_or as _deferred_env
from resources.gbif import GBIF_BASE_URL, GbifClient
from resources.inaturalist import INATURALIST_BASE_URL, InaturalistClient
from resources.mindex_db import MindexDatabase
from resources.nws import NWS_BASE_URL, NwsClient
from resources.open_meteo import OPEN_METEO_BASE_URL, OpenMeteoClient
from resources.openaq import OPENAQ_BASE_URL, OpenAqClient
from resources.storage import PartitionStore


def _resolved_env(name: str, default: Any) -> Any:
    return os.environ.get(name) or default


def budget_config(api: str) -> dict[str, Any]:
    """The API's request budget from the SLA table. ``MINDEX_REQUEST_BUDGET=off`` lifts it, for the replay server
    on loopback only (it has no quota to respect; `mindex run` sets it when MINDEX_REPLAY_DIR is used)."""
    if os.environ.get("MINDEX_REQUEST_BUDGET", "").lower() == "off":
        return {"per_second": None, "per_minute": None, "per_hour": None, "per_day": None}
    limits = sla.api_limits(api)
    return {"per_second": limits.per_second, "per_minute": limits.per_minute, "per_hour": limits.per_hour,
            "per_day": limits.per_day}


def build_resources(resolved: bool = False) -> dict[str, Any]:
    """The resources of every run. With ``resolved``, environment variables are read now instead of being
    EnvVars resolved at run time: for sensors and schedules, which use the resources outside a run."""
    env_or = _resolved_env if resolved else _deferred_env
    data_dir = env_or("MINDEX_DATA_DIR", str(DEFAULT_DATA_DIR))
    contact = env_or("MINDEX_CONTACT", DEFAULT_CONTACT)
    return {
        "inaturalist": InaturalistClient(base_url=env_or("INATURALIST_BASE_URL", INATURALIST_BASE_URL),
                                         contact=contact, **budget_config("inaturalist")),
        "gbif": GbifClient(base_url=env_or("GBIF_BASE_URL", GBIF_BASE_URL), contact=contact,
                           **budget_config("gbif")),
        "nws": NwsClient(base_url=env_or("NWS_BASE_URL", NWS_BASE_URL), contact=contact, **budget_config("nws")),
        "open_meteo": OpenMeteoClient(base_url=env_or("OPEN_METEO_BASE_URL", OPEN_METEO_BASE_URL), contact=contact,
                                      **budget_config("open_meteo")),
        "openaq": OpenAqClient(base_url=env_or("OPENAQ_BASE_URL", OPENAQ_BASE_URL), contact=contact,
                               api_key=env_or("OPENAQ_API_KEY", None), **budget_config("openaq")),
        "mirror_store": PartitionStore(data_dir=data_dir),
        "mindex_db": MindexDatabase(url=env_or("MINDEX_DATABASE_URL", None), data_dir=data_dir),
    }
