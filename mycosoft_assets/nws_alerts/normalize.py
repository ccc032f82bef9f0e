"""Pure functions from NWS alert features to typed rows, and the Alert/Update/Cancel chain logic. No I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import UTC_TS, RecordRejected, as_str, join_flags, parse_utc

ALERT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("message_type", pa.string()),
    pa.field("status", pa.string()),
    pa.field("event", pa.string()),
    pa.field("severity", pa.string()),
    pa.field("certainty", pa.string()),
    pa.field("urgency", pa.string()),
    pa.field("category", pa.string()),
    pa.field("headline", pa.string()),
    pa.field("area_desc", pa.string()),
    pa.field("sender", pa.string()),
    pa.field("sender_name", pa.string()),
    pa.field("sent", UTC_TS),
    pa.field("effective", UTC_TS),
    pa.field("onset", UTC_TS),
    pa.field("expires", UTC_TS),
    pa.field("ends", UTC_TS),
    pa.field("references", pa.string()),  # comma list of referenced message ids, oldest first
    pa.field("ugc_codes", pa.string()),
    pa.field("same_codes", pa.string()),
    pa.field("geometry", pa.string()),  # GeoJSON text, NULL for zone-based alerts (case C12)
    pa.field("vtec", pa.string()),
    pa.field("qc_flags", pa.string()),
])


def _codes(geocode: Any, key: str) -> list[str]:
    values = geocode.get(key) if isinstance(geocode, dict) else None
    return [str(v) for v in values if v] if isinstance(values, list) else []


def normalize_alert(feature: Any) -> dict[str, Any]:
    if not isinstance(feature, dict):
        raise RecordRejected(f"alert feature is a {type(feature).__name__}, not an object")
    props = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
    alert_id = as_str(props.get("id")) or as_str(feature.get("id"))
    if alert_id is None:
        raise RecordRejected("alert without an id")
    if alert_id.startswith("https://"):
        alert_id = alert_id.rsplit("/", 1)[-1]  # ids are opaque; the feature id is the URL of the same id
    flags: list[str] = []
    geometry = feature.get("geometry")
    if geometry is None:
        flags.append("no_geometry")
    references = props.get("references") if isinstance(props.get("references"), list) else []
    ref_ids = [as_str(r.get("identifier")) for r in references if isinstance(r, dict)]
    ref_sent = {as_str(r.get("identifier")): parse_utc(r.get("sent")) for r in references if isinstance(r, dict)}
    ordered = sorted((i for i in ref_ids if i), key=lambda i: (ref_sent.get(i) is None, ref_sent.get(i) or 0, i))
    ugc = _codes(props.get("geocode"), "UGC")
    if not ugc:
        # Zone-based alerts carry their area in affectedZones when geocode is missing.
        ugc = [str(z).rsplit("/", 1)[-1] for z in props.get("affectedZones") or [] if z]
    message_type = as_str(props.get("messageType"))
    if message_type not in ("Alert", "Update", "Cancel", "Ack", "Error"):
        flags.append("unknown_message_type")
    sent = parse_utc(props.get("sent"))
    if sent is None:
        flags.append("missing_sent")
    parameters = props.get("parameters") if isinstance(props.get("parameters"), dict) else {}
    vtec = parameters.get("VTEC")
    return {
        "id": alert_id,
        "message_type": message_type,
        "status": as_str(props.get("status")),
        "event": as_str(props.get("event")),
        "severity": as_str(props.get("severity")),
        "certainty": as_str(props.get("certainty")),
        "urgency": as_str(props.get("urgency")),
        "category": as_str(props.get("category")),
        "headline": as_str(props.get("headline")),
        "area_desc": as_str(props.get("areaDesc")),
        "sender": as_str(props.get("sender")),
        "sender_name": as_str(props.get("senderName")),
        "sent": sent,
        "effective": parse_utc(props.get("effective")),
        "onset": parse_utc(props.get("onset")),
        "expires": parse_utc(props.get("expires")),
        "ends": parse_utc(props.get("ends")),
        "references": ",".join(ordered) or None,
        "ugc_codes": ",".join(ugc) or None,
        "same_codes": ",".join(_codes(props.get("geocode"), "SAME")) or None,
        "geometry": json.dumps(geometry, separators=(",", ":")) if geometry is not None else None,
        "vtec": ",".join(str(v) for v in vtec) if isinstance(vtec, list) else as_str(vtec),
        "qc_flags": join_flags(flags),
    }


@dataclass(frozen=True)
class ChainState:
    chain_id: str
    superseded_by: str | None
    cancelled: bool


def chain_states(messages: Iterable[tuple[str, str | None, datetime | None, str | None]]) -> dict[str, ChainState]:
    """Messages are (id, message_type, sent, references).

    - A message referenced by a newer one is ``superseded_by`` it (the newest referencing message).
    - A message is ``cancelled`` when it is a Cancel or a Cancel references it, directly or through the messages it
      references. Only that lineage: when NWS splits a product by area, an Update for one area and a Cancel for
      another reference the same parent, and the Update stays live.
    - ``chain_id`` groups messages linked by references (union-find, named by the earliest message), for browsing;
      a forked product has several live heads in one group, each of them one active alert.
    References to messages we never saw still link and cancel through them."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    info: dict[str, tuple[str | None, datetime | None]] = {}
    refs: dict[str, list[str]] = {}
    superseded: dict[str, tuple[datetime | None, str]] = {}
    for message_id, message_type, sent, references in messages:
        info[message_id] = (message_type, sent)
        find(message_id)
        refs[message_id] = [r for r in (references or "").split(",") if r]
        for ref in refs[message_id]:
            parent[find(ref)] = find(message_id)
            current = superseded.get(ref)
            if current is None or (sent and (current[0] is None or sent > current[0])):
                superseded[ref] = (sent, message_id)
    cancelled: set[str] = set()
    stack = [m for m, (kind, _) in info.items() if kind == "Cancel"]
    while stack:
        message_id = stack.pop()
        if message_id in cancelled:
            continue
        cancelled.add(message_id)
        stack.extend(refs.get(message_id, []))
    groups: dict[str, list[str]] = {}
    for message_id in info:
        groups.setdefault(find(message_id), []).append(message_id)
    states = {}
    for members in groups.values():
        earliest = min(members, key=lambda m: (info[m][1].timestamp() if info[m][1] else float("inf"), m))
        for m in members:
            by = superseded.get(m)
            states[m] = ChainState(chain_id=earliest, superseded_by=by[1] if by and by[1] in info else None,
                                   cancelled=m in cancelled)
    return states
