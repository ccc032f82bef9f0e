"""Pure functions from raw iNaturalist v1 records to typed rows. No I/O: failure cases are unit tests here."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from mycosoft_assets.common import (
    UTC_TS,
    RecordRejected,
    as_float,
    as_int,
    as_list,
    as_str,
    join_flags,
    parse_date,
    parse_utc,
    valid_coordinates,
)

FUNGI_TAXON_ID = 47170

OBSERVATION_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("uuid", pa.string()),
    pa.field("taxon_id", pa.int64()),
    pa.field("taxon_name", pa.string()),
    pa.field("taxon_rank", pa.string()),
    pa.field("iconic_taxon_name", pa.string()),
    pa.field("community_taxon_id", pa.int64()),
    pa.field("quality_grade", pa.string()),
    pa.field("observed_on", pa.date32()),
    pa.field("time_observed_at", UTC_TS),
    pa.field("created_at", UTC_TS),
    pa.field("updated_at", UTC_TS),
    pa.field("updated_at_raw", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("coord_status", pa.string()),
    pa.field("positional_accuracy_m", pa.float64()),
    pa.field("geoprivacy", pa.string()),
    pa.field("taxon_geoprivacy", pa.string()),
    pa.field("obscured", pa.bool_()),
    pa.field("place_guess", pa.string()),
    pa.field("user_login", pa.string()),
    pa.field("license_code", pa.string()),
    pa.field("captive", pa.bool_()),
    pa.field("uri", pa.string()),
    pa.field("qc_flags", pa.string()),
])

TAXON_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("rank", pa.string()),
    pa.field("rank_level", pa.float64()),
    pa.field("is_active", pa.bool_()),
    pa.field("parent_id", pa.int64()),
    pa.field("ancestor_ids", pa.string()),
    pa.field("iconic_taxon_name", pa.string()),
    pa.field("preferred_common_name", pa.string()),
    pa.field("current_synonymous_taxon_ids", pa.string()),
    pa.field("resolved_taxon_id", pa.int64()),
    pa.field("taxon_ambiguous", pa.bool_()),
    pa.field("observations_count", pa.int64()),
    pa.field("qc_flags", pa.string()),
])


def coordinates(record: dict[str, Any]) -> tuple[float | None, float | None, list[str]]:
    """Public coordinates only. ``location`` is "lat,lon"; ``geojson.coordinates`` is [lon, lat]."""
    flags: list[str] = []
    lat = lon = None
    location = record.get("location")
    if isinstance(location, str) and "," in location:
        lat_text, lon_text = location.split(",", 1)
        lat, lon = as_float(lat_text), as_float(lon_text)
    elif isinstance(record.get("geojson"), dict):
        coords = record["geojson"].get("coordinates")
        if isinstance(coords, list) and len(coords) == 2:
            lon, lat = as_float(coords[0]), as_float(coords[1])
    if (lat is None) != (lon is None):
        flags.append("half_coordinates")  # one of the pair is missing or unparseable: no position at all
        return None, None, flags
    if lat is not None and lon is not None:
        if lat == 0 and lon == 0:
            # Case C03 / inaturalist#914: a private observation once surfaced at 0,0. 0,0 is never a position.
            flags.append("zero_coordinates")
            lat = lon = None
        elif not valid_coordinates(lat, lon):
            flags.append("coordinates_out_of_range")
            lat = lon = None
    elif location not in (None, ""):
        flags.append("unparseable_location")
    return lat, lon, flags


def coord_status(record: dict[str, Any], has_position: bool) -> str:
    """exact | obscured | private | missing, from ``obscured``, ``geoprivacy`` and ``taxon_geoprivacy`` (case C03).
    Obscuring may come from the taxon's conservation status even when the user's geoprivacy is open."""
    geoprivacy = record.get("geoprivacy")
    taxon_geoprivacy = record.get("taxon_geoprivacy")
    if not has_position:
        return "private" if "private" in (geoprivacy, taxon_geoprivacy) else "missing"
    if record.get("obscured") is True or "obscured" in (geoprivacy, taxon_geoprivacy) \
            or "private" in (geoprivacy, taxon_geoprivacy):
        return "obscured"
    return "exact"


def normalize_observation(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordRejected(f"observation is a {type(record).__name__}, not an object")
    obs_id = as_int(record.get("id"))
    if obs_id is None:
        raise RecordRejected(f"observation without an integer id: {record.get('id')!r}")
    flags: list[str] = []
    taxon = record.get("taxon") if isinstance(record.get("taxon"), dict) else {}
    lat, lon, coord_flags = coordinates(record)
    flags.extend(coord_flags)
    updated_at = parse_utc(record.get("updated_at"))
    if updated_at is None:
        flags.append("missing_updated_at")
    if not taxon:
        flags.append("no_taxon")
    accuracy = as_float(record.get("public_positional_accuracy", record.get("positional_accuracy")))
    return {
        "id": obs_id,
        "uuid": as_str(record.get("uuid")),
        "taxon_id": as_int(taxon.get("id")),
        "taxon_name": as_str(taxon.get("name")),
        "taxon_rank": as_str(taxon.get("rank")),
        "iconic_taxon_name": as_str(taxon.get("iconic_taxon_name")),
        "community_taxon_id": as_int(record.get("community_taxon_id")),
        "quality_grade": as_str(record.get("quality_grade")),
        "observed_on": parse_date(record.get("observed_on")),
        "time_observed_at": parse_utc(record.get("time_observed_at")),
        "created_at": parse_utc(record.get("created_at")),
        "updated_at": updated_at,
        "updated_at_raw": as_str(record.get("updated_at")),
        "latitude": lat,
        "longitude": lon,
        "coord_status": coord_status(record, lat is not None),
        "positional_accuracy_m": accuracy,
        "geoprivacy": as_str(record.get("geoprivacy")),
        "taxon_geoprivacy": as_str(record.get("taxon_geoprivacy")),
        "obscured": record.get("obscured") if isinstance(record.get("obscured"), bool) else None,
        "place_guess": as_str(record.get("place_guess")),
        "user_login": as_str((record.get("user") or {}).get("login")) if isinstance(record.get("user"), dict)
        else None,
        "license_code": as_str(record.get("license_code")),
        "captive": record.get("captive") if isinstance(record.get("captive"), bool) else None,
        "uri": as_str(record.get("uri")),
        "qc_flags": join_flags(flags),
    }


def resolve_taxon(record: dict[str, Any]) -> tuple[int | None, bool]:
    """(resolved_taxon_id, ambiguous). Case C04: an inactive taxon with exactly one current synonym resolves to it
    (a swap or merge); with several (a split) it is ambiguous and resolves to nothing."""
    taxon_id = as_int(record.get("id"))
    if record.get("is_active") is not False:
        return taxon_id, False
    synonyms = [as_int(i) for i in as_list(record.get("current_synonymous_taxon_ids"))]
    synonyms = [i for i in synonyms if i is not None]
    if len(synonyms) == 1:
        return synonyms[0], False
    return None, len(synonyms) > 1


def normalize_taxon(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordRejected(f"taxon is a {type(record).__name__}, not an object")
    taxon_id = as_int(record.get("id"))
    if taxon_id is None:
        raise RecordRejected(f"taxon without an integer id: {record.get('id')!r}")
    flags: list[str] = []
    resolved, ambiguous = resolve_taxon(record)
    if record.get("is_active") is False:
        flags.append("inactive")
    if ambiguous:
        flags.append("taxon_ambiguous")
    ancestors = [as_int(a) for a in as_list(record.get("ancestor_ids"))]
    synonyms = [as_int(i) for i in as_list(record.get("current_synonymous_taxon_ids"))]
    return {
        "id": taxon_id,
        "name": as_str(record.get("name")),
        "rank": as_str(record.get("rank")),
        "rank_level": as_float(record.get("rank_level")),
        "is_active": record.get("is_active") if isinstance(record.get("is_active"), bool) else None,
        "parent_id": as_int(record.get("parent_id")),
        "ancestor_ids": ",".join(str(a) for a in ancestors if a is not None) or None,
        "iconic_taxon_name": as_str(record.get("iconic_taxon_name")),
        "preferred_common_name": as_str(record.get("preferred_common_name")),
        "current_synonymous_taxon_ids": ",".join(str(i) for i in synonyms if i is not None) or None,
        "resolved_taxon_id": resolved,
        "taxon_ambiguous": ambiguous,
        "observations_count": as_int(record.get("observations_count")),
        "qc_flags": join_flags(flags),
    }
