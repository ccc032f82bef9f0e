"""AISStream envelopes → rows (case C10), against the recorded files. Expected counts are computed here from the
raw files, independently of the normalizer and of ``load_recorded_envelopes``."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mycosoft_assets.aisstream.normalize import (
    POSITION_SCHEMA,
    POSITION_TYPES,
    STATIC_SCHEMA,
    STATIC_TYPES,
    load_recorded_envelopes,
    mmsi_text,
    normalize_envelope,
    parse_go_time,
    unflatten_position,
    unflatten_static,
)
from mycosoft_assets.common import RecordRejected
from tests.conftest import FIXTURES

AIS = FIXTURES / "aisstream"
RECEIVED = "2025-06-19T07:35:00+00:00"
pytestmark = pytest.mark.skipif(not AIS.exists(), reason="aisstream fixtures not available")

# Case C10, verbatim.
C10_FIRST = json.loads('{"MessageType":"PositionReport","Message":{"PositionReport":{"UserID":211000001,'
                       '"Latitude":91,"Longitude":181,"Sog":102.3,"Cog":360,"TrueHeading":511,"Valid":true}}}')
C10_SECOND = json.loads('{"MessageType":"PositionReport","Message":{"PositionReport":{"UserID":211000002,'
                        '"Latitude":0,"Longitude":0,"TrueHeading":456,"Valid":true}}}')


def _raw_files() -> tuple[list[dict], list[dict], list[dict]]:
    positions = json.loads((AIS / "aisstream_PositionReport_flattened_2025-06-19.json").read_text())
    statics = json.loads((AIS / "aisstream_ShipStaticData_flattened_2025-06-19.json").read_text())
    text = (AIS / "leixoesbridge_aisstream_concatenated_envelopes_2023-10-22.json").read_text()
    decoder, index, leixoes = json.JSONDecoder(), 0, []
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        value, index = decoder.raw_decode(text, index)
        leixoes.append(value)
    return positions, statics, leixoes


def _flags(row: dict) -> set[str]:
    return set((row["qc_flags"] or "").split(",")) - {""}


def test_every_recorded_envelope_normalizes_with_exact_counts():
    positions, statics, leixoes = _raw_files()
    assert len(leixoes) == 25
    leixoes_types = Counter(e["MessageType"] for e in leixoes)
    expected = Counter({
        "position": len({(r["MMSI"], r["timestamp"]) for r in positions})
        + sum(n for t, n in leixoes_types.items() if t in POSITION_TYPES),
        "static": len({(r["MMSI"], r["timestamp"]) for r in statics})
        + sum(n for t, n in leixoes_types.items() if t in STATIC_TYPES),
        None: sum(n for t, n in leixoes_types.items() if t not in POSITION_TYPES | STATIC_TYPES),
    })
    assert expected == Counter({"position": 2510 + 18, "static": 1951 + 5, None: 2})  # SOURCES.md

    envelopes = load_recorded_envelopes(FIXTURES)
    assert len(envelopes) == len(positions) + len(statics) + len(leixoes)
    results = [normalize_envelope(e, RECEIVED) for e in envelopes]
    assert Counter(r[0] if r else None for r in results) == expected

    rows = {"position": [], "static": []}
    for kind, row in filter(None, results):
        rows[kind].append(row)
    for kind, schema in (("position", POSITION_SCHEMA), ("static", STATIC_SCHEMA)):
        table = pa.Table.from_pylist(rows[kind], schema=schema)
        assert table.num_rows == expected[kind]
        keys = {(r["mmsi"], r["message_type"], r["time_utc_raw"]) for r in rows[kind]}
        assert len(keys) == expected[kind]  # the natural key is unique within the recording
        assert all(len(r["mmsi"]) == 9 and r["mmsi"].isdigit() for r in rows[kind])
        assert all(r["time_utc"] is not None and r["received_at"] == datetime(2025, 6, 19, 7, 35, tzinfo=UTC)
                   for r in rows[kind])
    # In time order (the recording is replayed as a live feed).
    times = [parse_go_time(e["MetaData"]["time_utc"]) for e in envelopes]
    assert times == sorted(times)


def test_schemas_keep_mmsi_as_text():
    assert POSITION_SCHEMA.field("mmsi").type == pa.string()
    assert STATIC_SCHEMA.field("mmsi").type == pa.string()
    assert POSITION_SCHEMA.field("time_utc_raw").type == pa.string()
    for column in ("dim_a", "eta_month", "eta_minute", "imo_number", "ship_type"):
        assert column in STATIC_SCHEMA.names


def test_mmsi_is_nine_character_text():
    assert mmsi_text(2240998) == "002240998"
    assert mmsi_text("2240998") == "002240998"
    assert mmsi_text(263441631) == "263441631"
    assert mmsi_text("1234567890") is None and mmsi_text("abc") is None and mmsi_text(True) is None
    # A 7-digit base station MMSI in a supported message; MMSI_String is a number as in the Leixões recording.
    envelope = {"MessageType": "PositionReport",
                "MetaData": {"MMSI": 2240998, "MMSI_String": 2240998, "ShipName": "",
                             "time_utc": "2023-10-22 14:59:00.871077686 +0000 UTC"},
                "Message": {"PositionReport": {"UserID": 2240998, "Latitude": 42.17, "Longitude": -8.78}}}
    kind, row = normalize_envelope(envelope, RECEIVED)
    assert (kind, row["mmsi"], row["ship_name"]) == ("position", "002240998", None)
    # Only UserID: still a key.
    _, row = normalize_envelope({"MessageType": "PositionReport",
                                 "Message": {"PositionReport": {"UserID": 2240998}}}, RECEIVED)
    assert row["mmsi"] == "002240998"


def test_go_time_format_parses_to_utc_microseconds():
    assert parse_go_time("2025-06-19 07:34:29.35955696 +0000 UTC") == datetime(2025, 6, 19, 7, 34, 29, 359556,
                                                                                tzinfo=UTC)
    assert parse_go_time("2023-10-22 14:58:58.618097983 +0000 UTC") == datetime(2023, 10, 22, 14, 58, 58, 618097,
                                                                                 tzinfo=UTC)
    assert parse_go_time("2025-06-19 09:34:29 +0200 CEST") == datetime(2025, 6, 19, 7, 34, 29, tzinfo=UTC)
    assert parse_go_time("2025-06-19 07:34:29.5 +0000 UTC m=+0.000123") == datetime(2025, 6, 19, 7, 34, 29, 500000,
                                                                                     tzinfo=UTC)
    assert parse_go_time("yesterday") is None
    positions, _, _ = _raw_files()
    kind, row = normalize_envelope(unflatten_position(positions[0]), RECEIVED)
    assert row["time_utc_raw"] == positions[0]["timestamp"] == "2025-06-19 07:34:29.35955696 +0000 UTC"
    assert row["time_utc"] == datetime(2025, 6, 19, 7, 34, 29, 359556, tzinfo=UTC)
    assert row["ship_name"] == "ML FREYJA" and row["mmsi"] == "247386800" and row["sog"] == 13.3


def test_c10_not_available_sentinels_become_null_with_flags():
    kind, row = normalize_envelope(C10_FIRST, RECEIVED)
    assert kind == "position" and row["mmsi"] == "211000001"
    assert row["latitude"] is None and row["longitude"] is None
    assert row["sog"] is None and row["cog"] is None and row["true_heading"] is None
    assert row["valid"] is True  # kept, but not trusted: the flags are still there
    assert {"latitude_not_available", "longitude_not_available", "sog_not_available", "cog_not_available",
            "heading_not_available", "missing_time_utc"} <= _flags(row)
    assert row["time_utc"] is None and row["time_utc_raw"] is None

    kind, row = normalize_envelope(C10_SECOND, RECEIVED)
    assert row["latitude"] is None and row["longitude"] is None and row["true_heading"] is None
    assert {"zero_position", "heading_out_of_range"} <= _flags(row)

    # Above the sentinels, and the raw-unit forms: still "not available", never a value.
    body = {"UserID": 211000003, "Latitude": 45.0, "Longitude": -8.0, "Sog": 150.0, "Cog": 3600,
            "TrueHeading": 359, "RateOfTurn": -128}
    _, row = normalize_envelope({"MessageType": "StandardClassBPositionReport",
                                 "Message": {"StandardClassBPositionReport": body}}, RECEIVED)
    assert (row["latitude"], row["longitude"], row["sog"], row["cog"], row["true_heading"], row["rate_of_turn"]) == (
        45.0, -8.0, None, None, 359, None)
    assert {"sog_not_available", "cog_not_available", "rate_of_turn_not_available"} <= _flags(row)


def test_recorded_sentinels_are_flagged():
    positions, _, _ = _raw_files()
    zero = next(r for r in positions if r["lat"] == 0 and r["lon"] == 0 and r["SOG"] == 102.3)
    _, row = normalize_envelope(unflatten_position(zero), RECEIVED)
    assert row["latitude"] is None and row["sog"] is None and row["cog"] is None
    assert {"zero_position", "sog_not_available", "cog_not_available"} <= _flags(row)


def test_eta_sentinels_and_padded_text():
    _, statics, leixoes = _raw_files()
    record = next(r for r in statics if r["Eta"] == {"Day": 0, "Hour": 24, "Minute": 60, "Month": 0})
    _, row = normalize_envelope(unflatten_static(record), RECEIVED)
    assert (row["eta_month"], row["eta_day"], row["eta_hour"], row["eta_minute"]) == (None, None, None, None)
    assert {"eta_month_not_available", "eta_day_not_available", "eta_hour_not_available",
            "eta_minute_not_available"} <= _flags(row)

    record = next(r for r in statics if r["Destination"] == "BE OSTEND           ")
    _, row = normalize_envelope(unflatten_static(record), RECEIVED)
    assert row["destination"] == "BE OSTEND" and row["mmsi"] == "246400000"
    assert (row["eta_month"], row["eta_day"], row["eta_hour"], row["eta_minute"]) == (6, 19, 6, 30)
    assert (row["dim_a"], row["dim_b"], row["dim_c"], row["dim_d"]) == (13, 93, 12, 4)
    assert row["ship_type"] == 33 and row["qc_flags"] is None

    sanmartin = next(e for e in leixoes if e["MessageType"] == "ShipStaticData" and e["MetaData"]["MMSI"] == 225990254)
    kind, row = normalize_envelope(sanmartin, RECEIVED)
    assert kind == "static" and row["ship_name"] == "SANMARTIN" and row["call_sign"] == "EBSK"
    assert row["destination"] == "VIGO" and row["imo_number"] == 9831945 and row["maximum_static_draught"] == 2.0
    assert row["eta_hour"] is None and "eta_hour_not_available" in _flags(row)


def test_static_data_report_part_a_and_padded_ship_name():
    _, _, leixoes = _raw_files()
    report = next(e for e in leixoes if e["MessageType"] == "StaticDataReport")
    kind, row = normalize_envelope(report, RECEIVED)
    assert kind == "static" and row["message_type"] == "StaticDataReport"
    assert row["ship_name"] == report["Message"]["StaticDataReport"]["ReportA"]["Name"].strip()
    assert row["part_number"] == 0 and row["call_sign"] is None  # ReportB is Valid: false in part A
    nereu = next(e for e in leixoes if e["MetaData"]["ShipName"].startswith("NEREU"))
    assert normalize_envelope(nereu, RECEIVED)[1]["ship_name"] == "NEREU"


def test_unsupported_types_are_skipped_not_rejected():
    _, _, leixoes = _raw_files()
    datalink = [e for e in leixoes if e["MessageType"] == "DataLinkManagementMessage"]
    assert len(datalink) == 2 and all(normalize_envelope(e, RECEIVED) is None for e in datalink)


def test_record_rejected_without_mmsi_or_body():
    with pytest.raises(RecordRejected):
        normalize_envelope({"MessageType": "PositionReport", "MetaData": {"ShipName": "X"},
                            "Message": {"PositionReport": {"Latitude": 1, "Longitude": 2}}}, RECEIVED)
    with pytest.raises(RecordRejected):
        normalize_envelope({"MetaData": {"MMSI": 211000001}, "Message": {}}, RECEIVED)
    with pytest.raises(RecordRejected):
        normalize_envelope({"MessageType": "PositionReport", "MetaData": {"MMSI": 211000001}}, RECEIVED)
    with pytest.raises(RecordRejected):
        normalize_envelope({"MessageType": "DataLinkManagementMessage",
                            "Message": {"DataLinkManagementMessage": {"Valid": True}}}, RECEIVED)
