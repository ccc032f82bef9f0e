"""NWS active alerts: one snapshot of /alerts/active per run (SLA 5 minutes). MINDEX keeps the messages."""

from collections.abc import Iterator

import dagster as dg

from mycosoft_assets.assetkit import source_asset_args
from mycosoft_assets.mirror import Dataset, mirror_pages, report_materialization, snapshot_window
from mycosoft_assets.nws_alerts.normalize import ALERT_SCHEMA, normalize_alert
from resources.http import ApiResponse
from resources.nws import NwsClient
from resources.storage import PartitionStore

SOURCE = "nws_alerts"

ALERTS = Dataset(name="nws_alerts", schema=ALERT_SCHEMA, normalize=normalize_alert, natural_key="id",
                 results_key="features")


class AlertsConfig(dg.Config):
    """Which alerts to mirror; empty means the whole national feed. Filters are NWS's own query parameters."""

    area: str | None = None  # state/territory codes, e.g. "OR,WA"
    zone: str | None = None  # UGC zone ids, e.g. "ORZ004"
    point: str | None = None  # "lat,lon"

    def filters(self) -> dict[str, str]:
        return {k: v for k, v in {"area": self.area, "zone": self.zone, "point": self.point}.items() if v}


@dg.asset(**source_asset_args(
    SOURCE, name=ALERTS.name,
    description="Snapshot of the NWS active alerts feed (GET /alerts/active, application/geo+json): every "
                "message with its id, messageType, references and zones. The feed's `updated` time is kept: it "
                "is the clock the MINDEX active-alerts view uses.",
))
def nws_alerts(context: dg.AssetExecutionContext, config: AlertsConfig, nws: NwsClient,
               mirror_store: PartitionStore) -> dg.MaterializeResult:
    windows = snapshot_window()
    feed: dict[str, str | None] = {}

    def pages() -> Iterator[ApiResponse]:
        for response in nws.iter_active_alert_pages(config.filters()):
            feed.setdefault("updated", response.payload.get("updated"))
            feed.setdefault("title", response.payload.get("title"))
            yield response

    with mirror_store.open_run(ALERTS.name, ALERTS.schema, windows) as writer:
        stats = mirror_pages(writer, pages(), ALERTS, log=context.log.info)
        counts = writer.commit(feed_updated=feed.get("updated"), feed_title=feed.get("title"),
                               filters=config.filters())
    result = report_materialization(context, windows, counts, stats, writer, mirror_store, nws.base_url)
    return dg.MaterializeResult(metadata={**result.metadata, "feed_updated": str(feed.get("updated")),
                                          "feed_title": str(feed.get("title"))})
