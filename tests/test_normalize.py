"""Normalizers on real recorded records and on the failure cases' reduced examples (C03, C04, zero/sentinel
coordinates, missing fields, wrong types). Pure functions: no server, no files written."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mycosoft_assets.common import RecordRejected, parse_utc
from mycosoft_assets.gbif.normalize import (
    OCCURRENCE_SCHEMA,
    normalize_occurrence,
    normalize_species,
    republished_observation,
)
from mycosoft_assets.inaturalist.normalize import (
    OBSERVATION_SCHEMA,
    TAXON_SCHEMA,
    normalize_observation,
    normalize_taxon,
)
from tests.conftest import FIXTURES, load_fixture


def real_observations() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "inaturalist" / "derived_observation_results.jsonl")
            .read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_real_observation_normalizes_to_the_arrow_schema():
    rows = [normalize_observation(r) for r in real_observations()]
    batch = pa.RecordBatch.from_pylist(rows, schema=OBSERVATION_SCHEMA)
    assert batch.num_rows == 29
    by_id = {r["id"]: r for r in rows}
    # 2026-02-20T11:36:34+01:00 is 10:36:34 UTC.
    assert by_id[339412090]["updated_at"] == datetime(2026, 2, 20, 10, 36, 34, tzinfo=UTC)
    assert by_id[339412090]["updated_at_raw"] == "2026-02-20T11:36:34+01:00"
    assert by_id[24970904]["latitude"] == pytest.approx(44.456176)
    assert by_id[24970904]["longitude"] == pytest.approx(-121.641247)
    assert by_id[24970904]["coord_status"] == "exact"


def test_real_observation_without_location_is_missing_not_zero():
    record = load_fixture("inaturalist/mo_no_location.json")["results"][0]
    row = normalize_observation(record)
    assert row["id"] == 12826267
    assert row["latitude"] is None and row["longitude"] is None
    assert row["coord_status"] == "missing"


def test_real_obscured_observation_is_marked_obscured():
    row = next(normalize_observation(r) for r in real_observations() if r["id"] == 70963477)
    assert row["coord_status"] == "obscured"
    assert row["latitude"] is not None


def test_c03_private_and_taxon_obscured_coordinates():
    private = {"id": 101, "geoprivacy": "private", "taxon_geoprivacy": None, "obscured": True,
               "location": None, "geojson": None, "updated_at": "2024-01-01T00:00:00Z"}
    taxon_obscured = {"id": 102, "geoprivacy": None, "taxon_geoprivacy": "obscured", "obscured": True,
                      "location": "45.0,-120.0", "positional_accuracy": None, "updated_at": "2024-01-01T00:00:00Z"}
    p, t = normalize_observation(private), normalize_observation(taxon_obscured)
    assert (p["latitude"], p["longitude"], p["coord_status"]) == (None, None, "private")
    assert (t["latitude"], t["longitude"], t["coord_status"]) == (45.0, -120.0, "obscured")
    # Open geoprivacy but obscured by the taxon's status is still obscured (iNaturalistAndroid#911).
    open_but_taxon = dict(taxon_obscured, id=103, geoprivacy="open", obscured=False)
    assert normalize_observation(open_but_taxon)["coord_status"] == "obscured"


def test_zero_coordinates_become_null_with_a_flag():
    record = copy.deepcopy(real_observations()[2])
    record["location"] = "0,0"
    row = normalize_observation(record)
    assert row["latitude"] is None and row["longitude"] is None
    assert "zero_coordinates" in row["qc_flags"]


def test_private_fields_are_never_stored():
    record = dict(real_observations()[2], private_location="1.0,2.0", private_geojson={"coordinates": [2, 1]})
    row = normalize_observation(record)
    assert not any(name.startswith("private") for name in row)
    assert row["latitude"] != 1.0


@pytest.mark.parametrize("bad", [None, "12", [], {"id": None}, {"id": "abc"}, {"id": True}])
def test_records_without_an_integer_id_are_rejected_clearly(bad):
    with pytest.raises(RecordRejected):
        normalize_observation(bad)


def test_wrong_types_become_null_with_flags_not_crashes():
    record = {"id": "55", "updated_at": 12345, "location": "north,south", "taxon": "Amanita", "obscured": "yes"}
    row = normalize_observation(record)
    assert row["id"] == 55
    assert row["updated_at"] is None and row["taxon_id"] is None and row["obscured"] is None
    assert set(row["qc_flags"].split(",")) == {"missing_updated_at", "no_taxon", "unparseable_location"}
    pa.RecordBatch.from_pylist([row], schema=OBSERVATION_SCHEMA)


def test_c04_taxon_swap_merge_and_split():
    swapped = normalize_taxon({"id": 5001, "name": "Oldus namus", "is_active": False,
                               "current_synonymous_taxon_ids": [5002]})
    split = normalize_taxon({"id": 6001, "name": "Splitus one", "is_active": False,
                             "current_synonymous_taxon_ids": [6002, 6003]})
    active = normalize_taxon({"id": 47170, "name": "Fungi", "is_active": True, "current_synonymous_taxon_ids": None})
    assert (swapped["resolved_taxon_id"], swapped["taxon_ambiguous"], swapped["is_active"]) == (5002, False, False)
    assert (split["resolved_taxon_id"], split["taxon_ambiguous"]) == (None, True)
    assert "taxon_ambiguous" in split["qc_flags"] and "inactive" in split["qc_flags"]
    assert (active["resolved_taxon_id"], active["taxon_ambiguous"]) == (47170, False)
    pa.RecordBatch.from_pylist([swapped, split, active], schema=TAXON_SCHEMA)


def test_real_embedded_taxon_normalizes():
    taxon = real_observations()[2]["taxon"]
    row = normalize_taxon(taxon)
    assert row["id"] == taxon["id"] and row["name"] == taxon["name"]
    assert row["ancestor_ids"].split(",") == [str(a) for a in taxon["ancestor_ids"]]
    assert "47170" in row["ancestor_ids"].split(",")


def test_real_gbif_occurrences_normalize():
    records = load_fixture("gbif/occurrence_search_taxonKey3329049_fungi_limit300.json")["results"]
    rows = [normalize_occurrence(r) for r in records]
    pa.RecordBatch.from_pylist(rows, schema=OCCURRENCE_SCHEMA)
    first = rows[0]
    assert first["key"] == 4909740830
    assert first["last_interpreted"] == datetime(2024, 10, 2, 10, 4, 31, 233000, tzinfo=UTC)
    assert first["species"] == "Amanita muscaria" and first["kingdom"] == "Fungi"
    assert first["decimal_latitude"] == pytest.approx(56.278502)
    assert first["republished_source"] is None


def test_gbif_records_republishing_inaturalist_are_linked():
    records = load_fixture("gbif/spocc_occ2df_accipiter_striatus_limit10.json")["results"]
    for record in records:
        source, source_id = republished_observation(record)
        assert source == "inaturalist"
        assert source_id == str(int(record["catalogNumber"]))
        assert record["occurrenceID"].endswith("/" + source_id)


def test_gbif_zero_and_out_of_range_coordinates():
    record = load_fixture("gbif/occurrence_search_taxonKey3329049_fungi_limit300.json")["results"][0]
    zero = normalize_occurrence(dict(record, decimalLatitude=0, decimalLongitude=0))
    far = normalize_occurrence(dict(record, decimalLatitude=91.0, decimalLongitude=181.0))
    assert zero["decimal_latitude"] is None and "zero_coordinates" in zero["qc_flags"]
    assert far["decimal_latitude"] is None and "coordinates_out_of_range" in far["qc_flags"]


def test_gbif_species_real_records():
    records = load_fixture("gbif/species_datasetKey_limit100.json")["results"]
    fungi = [normalize_species(r) for r in records if r.get("kingdom") == "Fungi"]
    assert len(fungi) == 8
    assert all(r["kingdom_key"] == 5 for r in fungi)


def test_parse_utc_handles_offsets_z_and_garbage():
    assert parse_utc("2021-03-10T15:49:01-06:00") == datetime(2021, 3, 10, 21, 49, 1, tzinfo=UTC)
    assert parse_utc("2024-10-02T10:04:31.233Z") == datetime(2024, 10, 2, 10, 4, 31, 233000, tzinfo=UTC)
    assert parse_utc("not a date") is None and parse_utc(None) is None and parse_utc(17) is None
