"""Pure functions from raw GBIF v1 records to typed rows. No I/O."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from mycosoft_assets.common import (
    UTC_TS,
    RecordRejected,
    as_float,
    as_int,
    as_str,
    join_flags,
    parse_date,
    parse_utc,
    valid_coordinates,
)
from resources.gbif import INATURALIST_RESEARCH_GRADE_DATASET

FUNGI_TAXON_KEY = 5
INAT_OBSERVATION_URL = re.compile(r"^https?://(?:www\.)?inaturalist\.org/observations/(\d+)/?$")

OCCURRENCE_SCHEMA = pa.schema([
    pa.field("key", pa.int64(), nullable=False),
    pa.field("dataset_key", pa.string()),
    pa.field("publishing_country", pa.string()),
    pa.field("basis_of_record", pa.string()),
    pa.field("occurrence_status", pa.string()),
    pa.field("taxon_key", pa.int64()),
    pa.field("accepted_taxon_key", pa.int64()),
    pa.field("species_key", pa.int64()),
    pa.field("scientific_name", pa.string()),
    pa.field("accepted_scientific_name", pa.string()),
    pa.field("species", pa.string()),
    pa.field("taxon_rank", pa.string()),
    pa.field("kingdom", pa.string()),
    pa.field("phylum", pa.string()),
    pa.field("class_name", pa.string()),
    pa.field("order_name", pa.string()),
    pa.field("family", pa.string()),
    pa.field("genus", pa.string()),
    pa.field("decimal_latitude", pa.float64()),
    pa.field("decimal_longitude", pa.float64()),
    pa.field("coordinate_uncertainty_m", pa.float64()),
    pa.field("coord_status", pa.string()),
    pa.field("information_withheld", pa.string()),
    pa.field("country_code", pa.string()),
    pa.field("locality", pa.string()),
    pa.field("event_date_raw", pa.string()),
    pa.field("event_date", pa.date32()),
    pa.field("event_time", UTC_TS),
    pa.field("recorded_by", pa.string()),
    pa.field("license", pa.string()),
    pa.field("catalog_number", pa.string()),
    pa.field("occurrence_id", pa.string()),
    pa.field("republished_source", pa.string()),
    pa.field("republished_id", pa.string()),
    pa.field("issues", pa.string()),
    pa.field("modified", UTC_TS),
    pa.field("last_interpreted", UTC_TS),
    pa.field("qc_flags", pa.string()),
])

SPECIES_SCHEMA = pa.schema([
    pa.field("key", pa.int64(), nullable=False),
    pa.field("nub_key", pa.int64()),
    pa.field("accepted_key", pa.int64()),
    pa.field("parent_key", pa.int64()),
    pa.field("scientific_name", pa.string()),
    pa.field("canonical_name", pa.string()),
    pa.field("rank", pa.string()),
    pa.field("taxonomic_status", pa.string()),
    pa.field("kingdom", pa.string()),
    pa.field("kingdom_key", pa.int64()),
    pa.field("dataset_key", pa.string()),
    pa.field("vernacular_name", pa.string()),
    pa.field("num_descendants", pa.int64()),
    pa.field("qc_flags", pa.string()),
])


def republished_observation(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """GBIF carries iNaturalist research-grade observations. Their ``occurrenceID`` is the observation URL and
    ``catalogNumber`` the observation id; either identifies the iNaturalist record this one republishes."""
    match = INAT_OBSERVATION_URL.match(str(record.get("occurrenceID") or "").strip())
    if match:
        return "inaturalist", match.group(1)
    if record.get("datasetKey") == INATURALIST_RESEARCH_GRADE_DATASET:
        catalog = as_int(record.get("catalogNumber"))
        if catalog is not None:
            return "inaturalist", str(catalog)
    return None, None


def normalize_occurrence(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordRejected(f"occurrence is a {type(record).__name__}, not an object")
    key = as_int(record.get("key", record.get("gbifID")))
    if key is None:
        raise RecordRejected(f"occurrence without an integer key: {record.get('key')!r}")
    flags: list[str] = []
    lat, lon = as_float(record.get("decimalLatitude")), as_float(record.get("decimalLongitude"))
    if lat is not None and lon is not None:
        if lat == 0 and lon == 0:
            flags.append("zero_coordinates")
            lat = lon = None
        elif not valid_coordinates(lat, lon):
            flags.append("coordinates_out_of_range")
            lat = lon = None
    elif (lat is None) != (lon is None):
        flags.append("half_coordinates")
        lat = lon = None
    last_interpreted = parse_utc(record.get("lastInterpreted"))
    if last_interpreted is None:
        flags.append("missing_last_interpreted")
    event_raw = as_str(record.get("eventDate"))
    event_first = event_raw.split("/")[0] if event_raw else None
    event_time = parse_utc(event_first) if event_first and "T" in event_first else None
    withheld = " ".join(filter(None, (as_str(record.get("informationWithheld")),
                                      as_str(record.get("dataGeneralizations"))))) or None
    if lat is None:
        status = "missing"
    elif withheld:
        # Publishers blur sensitive records ("Occurrence blurred", "coordinates generalised to 0.1 degrees"):
        # never treat them as precise (case C03's rule, applied to GBIF).
        status = "obscured"
    else:
        status = "exact"
    source, source_id = republished_observation(record)
    issues = record.get("issues") if isinstance(record.get("issues"), list) else []
    return {
        "key": key,
        "dataset_key": as_str(record.get("datasetKey")),
        "publishing_country": as_str(record.get("publishingCountry")),
        "basis_of_record": as_str(record.get("basisOfRecord")),
        "occurrence_status": as_str(record.get("occurrenceStatus")),
        "taxon_key": as_int(record.get("taxonKey")),
        "accepted_taxon_key": as_int(record.get("acceptedTaxonKey")),
        "species_key": as_int(record.get("speciesKey")),
        "scientific_name": as_str(record.get("scientificName")),
        "accepted_scientific_name": as_str(record.get("acceptedScientificName")),
        "species": as_str(record.get("species")),
        "taxon_rank": as_str(record.get("taxonRank")),
        "kingdom": as_str(record.get("kingdom")),
        "phylum": as_str(record.get("phylum")),
        "class_name": as_str(record.get("class")),
        "order_name": as_str(record.get("order")),
        "family": as_str(record.get("family")),
        "genus": as_str(record.get("genus")),
        "decimal_latitude": lat,
        "decimal_longitude": lon,
        "coordinate_uncertainty_m": as_float(record.get("coordinateUncertaintyInMeters")),
        "coord_status": status,
        "information_withheld": withheld,
        "country_code": as_str(record.get("countryCode")),
        "locality": as_str(record.get("locality")),
        "event_date_raw": event_raw,
        "event_date": parse_date(event_first),
        "event_time": event_time,
        "recorded_by": as_str(record.get("recordedBy")),
        "license": as_str(record.get("license")),
        "catalog_number": as_str(record.get("catalogNumber")),
        "occurrence_id": as_str(record.get("occurrenceID")),
        "republished_source": source,
        "republished_id": source_id,
        "issues": ",".join(str(i) for i in issues) or None,
        "modified": parse_utc(record.get("modified")),
        "last_interpreted": last_interpreted,
        "qc_flags": join_flags(flags),
    }


def normalize_species(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordRejected(f"name usage is a {type(record).__name__}, not an object")
    key = as_int(record.get("key"))
    if key is None:
        raise RecordRejected(f"name usage without an integer key: {record.get('key')!r}")
    vernacular = record.get("vernacularName")
    if vernacular is None and isinstance(record.get("vernacularNames"), list) and record["vernacularNames"]:
        first = record["vernacularNames"][0]
        vernacular = first.get("vernacularName") if isinstance(first, dict) else None
    return {
        "key": key,
        "nub_key": as_int(record.get("nubKey")),
        "accepted_key": as_int(record.get("acceptedKey")),
        "parent_key": as_int(record.get("parentKey")),
        "scientific_name": as_str(record.get("scientificName")),
        "canonical_name": as_str(record.get("canonicalName")),
        "rank": as_str(record.get("rank")),
        "taxonomic_status": as_str(record.get("taxonomicStatus")),
        "kingdom": as_str(record.get("kingdom")),
        "kingdom_key": as_int(record.get("kingdomKey")),
        "dataset_key": as_str(record.get("datasetKey")),
        "vernacular_name": as_str(vernacular),
        "num_descendants": as_int(record.get("numDescendants")),
        "qc_flags": None,
    }
