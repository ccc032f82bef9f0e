"""Replay server: the real iNaturalist v1 and GBIF v1 API paths, answered on loopback from recorded responses.

    from mindex.replay import ReplayServer, FAULT_KINDS
    with ReplayServer(fixtures_dir, volumes={"inaturalist": 10_250}) as srv:
        client = httpx.Client(base_url=srv.base_url("inaturalist"))
        srv.set_fault("gbif", "http_5xx", count=3)

All offline tests and demos run against it; ``mindex replay`` (``mindex.replay.cli.main``) serves it
from a shell.
New sources are one module in ``mindex/replay/sources/`` (see ``mindex.replay.base``).
"""

from mindex.replay.base import ApiError, ReplaySource, Request, Response, register_source, registered_sources
from mindex.replay.faults import FAULT_KINDS
from mindex.replay.server import ReplayServer

__all__ = [
    "FAULT_KINDS",
    "ApiError",
    "ReplayServer",
    "ReplaySource",
    "Request",
    "Response",
    "register_source",
    "registered_sources",
]
