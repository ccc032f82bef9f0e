"""An id-ordered record store: real recorded records plus optional derived ones, as pre-serialized JSON.

Why this shape: an iNaturalist observation is ~40 KB of JSON and a volume test pages through 10,250 of them
(GBIF: 100,300 occurrences), so records are serialized once at load and every page is one bytes join.

Derived records (volume multiplier). When ``total`` exceeds the number of real records R, record k
(k = 0 .. total-R-1) is a copy of real record ``k % R`` with a new id ``max_real_id + 1 + k`` and the
``DeriveSpec.shift_fields`` timestamps moved ``1 + k // R`` whole days BACKWARD (never into the future).
Derived records are never materialised: their JSON is a small head (id, changed keys,
``"_replay_derived": true``) followed by the base record's JSON minus those keys. The head is rendered from a
per-record template built at load, so a 300-record page costs microseconds per record, not a json.dumps each.
This is synthetic volume for paging tests, not real data.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C string escaper
from typing import Any

from mindex.replay.timeutil import epoch_or_none

DAY_S = 86_400
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_LEADING_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is (as the APIs send it)."""
    return _ENCODER.encode(value)


@dataclass(frozen=True)
class DeriveSpec:
    """What a derived copy changes. Fields absent from a base record stay absent."""

    shift_fields: tuple[str, ...]  # ISO-8601 dates / date-times (or ``a/b`` intervals) moved back whole days
    null_fields: tuple[str, ...] = ()  # set to null (identifiers that would point at the real record)
    id_text_fields: tuple[str, ...] = ()  # set to the new id as a string (GBIF ``gbifID``)
    # keys computed from (base record, new id), e.g. a fresh iNat uuid; extra_keys names them
    extra: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    extra_keys: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return self.shift_fields + self.null_fields + self.id_text_fields + self.extra_keys


# One segment of a date template: (ordinal of a leading date or None, literal text that follows).
_Segments = tuple[tuple[int | None, str], ...]


def _date_segments(value: str) -> _Segments | None:
    """Split ``2024-10-04T01:16:33.192+00:00`` (or ``a/b``) into dates to shift and literal text."""
    segments = []
    for n, part in enumerate(value.split("/")):
        prefix = "/" if n else ""
        match = _LEADING_DATE.match(part)
        if match is None:
            segments.append((None, prefix + part))
            continue
        try:
            ordinal = date(int(match.group(1)), int(match.group(2)), int(match.group(3))).toordinal()
        except ValueError:
            segments.append((None, prefix + part))
            continue
        if prefix:
            segments.append((None, prefix))
        segments.append((ordinal, part[match.end() :]))
    return tuple(segments) if any(o is not None for o, _ in segments) else None


def _render(segments: _Segments, days: int) -> str:
    return "".join(
        (date.fromordinal(o - days).isoformat() + text) if o is not None else text for o, text in segments
    )


class RecordStore:
    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        *,
        id_key: str,
        total: int | None = None,
        derive: DeriveSpec | None = None,
        epoch_fields: Sequence[str] = (),
    ) -> None:
        self.id_key = id_key
        self.real: list[dict[str, Any]] = sorted(records, key=lambda r: r[id_key])
        # UTF-8 bytes, so a page is one bytes join with no per-request encoding.
        self.real_json: list[bytes] = [dumps(r).encode("utf-8") for r in self.real]
        self.real_count = r_count = len(self.real)
        size = r_count if total is None else int(total)
        if size < r_count:
            raise ValueError(f"volume {size} is below the {r_count} real records; it only adds records")
        if size > r_count and (derive is None or not self.real):
            raise ValueError("this dataset cannot derive extra records")
        self.size = size
        self.max_real_id: int = self.real[-1][id_key] if self.real else 0
        self._derive = derive
        # Per real record: the head template of its derived copies and its JSON tail without those keys.
        self._templates: list[list[tuple[str, _Segments | None]]] = []
        self._rest_tail: list[bytes] = []
        if size > r_count and derive is not None:
            for record in self.real:
                self._templates.append(self._template(record, derive))
                drop = {id_key, *derive.keys}
                rest = dumps({k: v for k, v in record.items() if k not in drop}).encode("utf-8")
                self._rest_tail.append(b"}" if rest == b"{}" else b"," + rest[1:])
        self.ids: list[int] = [r[id_key] for r in self.real] + list(
            range(self.max_real_id + 1, self.max_real_id + 1 + size - r_count)
        )
        # base_of[i]: the real record a record copies; shift_of[i]: days moved back (0 for real records).
        self.base_of: list[int] = list(range(r_count)) + [k % r_count for k in range(size - r_count)]
        self.shift_of: list[int] = [0] * r_count + [1 + k // r_count for k in range(size - r_count)]
        self._index_of_real_id = {rid: i for i, rid in enumerate(self.ids[:r_count])}
        self._epochs: dict[str, list[float | None]] = {}
        for name in epoch_fields:
            self.epochs(name)
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _template(record: dict[str, Any], spec: DeriveSpec) -> list[tuple[str, _Segments | None]]:
        """``[(literal JSON, None) | ('"key":', date segments)]`` for the changed keys of one base record."""
        out: list[tuple[str, _Segments | None]] = []
        for name in spec.shift_fields:
            if name not in record:
                continue
            value = record[name]
            segments = _date_segments(value) if isinstance(value, str) else None
            if segments is None:
                out.append((f",{dumps(name)}:{dumps(value)}", None))  # null or not a date: unchanged
            else:
                out.append((f",{dumps(name)}:", segments))
        nulls = "".join(f",{dumps(name)}:null" for name in spec.null_fields if name in record)
        if nulls:
            out.append((nulls, None))
        return out

    def __len__(self) -> int:
        return self.size

    def index_of(self, record_id: int) -> int | None:
        if record_id <= self.max_real_id:
            return self._index_of_real_id.get(record_id)
        k = record_id - self.max_real_id - 1
        return self.real_count + k if k < self.size - self.real_count else None

    def is_derived(self, index: int) -> bool:
        return index >= self.real_count

    def epochs(self, name: str) -> list[float | None]:
        """Per-record UTC epoch seconds of a timestamp field (derived records already shifted)."""
        cached = self._epochs.get(name)
        if cached is None:
            base = [epoch_or_none(r.get(name)) for r in self.real]
            derived_part = zip(self.base_of[self.real_count :], self.shift_of[self.real_count :], strict=True)
            cached = base + [None if base[b] is None else base[b] - s * DAY_S for b, s in derived_part]
            self._epochs[name] = cached
        return cached

    def _derived_head(self, index: int) -> bytes:
        """``{"id":..,<changed keys>,"_replay_derived":true`` (no closing brace) of a derived record."""
        spec = self._derive
        assert spec is not None
        new_id, days = self.ids[index], self.shift_of[index]
        parts = ["{", dumps(self.id_key), ":", str(new_id)]
        record = self.real[self.base_of[index]]
        for name in spec.id_text_fields:
            if name in record:
                parts.append(f',{dumps(name)}:"{new_id}"')
        if spec.extra is not None:
            extra = dumps(spec.extra(record, new_id))
            if extra != "{}":
                parts.append("," + extra[1:-1])
        for literal, segments in self._templates[self.base_of[index]]:
            parts.append(literal)
            if segments is not None:
                parts.append(encode_basestring(_render(segments, days)))
        parts.append(',"_replay_derived":true')
        return "".join(parts).encode("utf-8")

    def json_bytes(self, index: int) -> bytes:
        if index < self.real_count:
            return self.real_json[index]
        return self._derived_head(index) + self._rest_tail[self.base_of[index]]

    def record(self, index: int) -> dict[str, Any]:
        return self.real[index] if index < self.real_count else json.loads(self.json_bytes(index))

    def pieces(self, indices: Sequence[int]) -> list[bytes]:
        """``[`` rec ``,`` rec ... ``]`` as byte pieces, for one ``b"".join`` together with the envelope."""
        out = [b"["]
        real_count, real_json, rest_tail, base_of = (
            self.real_count,
            self.real_json,
            self._rest_tail,
            self.base_of,
        )
        for n, index in enumerate(indices):
            if n:
                out.append(b",")
            if index < real_count:
                out.append(real_json[index])
            else:
                out.append(self._derived_head(index))
                out.append(rest_tail[base_of[index]])
        out.append(b"]")
        return out

    def join(self, indices: Sequence[int]) -> bytes:
        return b"".join(self.pieces(indices))

    def cached(self, key: Hashable, compute: Callable[[], Any], max_entries: int = 64) -> Any:
        """Memoise a filtered index list: a pager repeats the same filter for hundreds of pages."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > max_entries:
                self._cache.popitem(last=False)
        return value
