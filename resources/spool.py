"""The durable landing area of the stream collectors (OpenSky, AISStream): small immutable batch files per hour.

Layout under ``<data_dir>/spool/<source>/``::

    hour=2026-12-03T21/<first received ns>-<pid>-<seq>.jsonl   one flushed batch, never modified after rename
    _health/heartbeat.json                                      the collector's latest heartbeat (replaced atomically)

Every line of a batch is ``{"received_at": "<UTC ISO>", "kind": "<kind>", "record": {...}}``. ``received_at`` is
when the collector received the record; partitions and the rolling 24 h retention use it, while the record keeps
its own timestamps exactly as the source sent them. Disconnects are records too (``kind = "gap"``), so the gaps
of an hour are compacted with its data.

A batch is written to a hidden temp file in the same folder, fsynced, then renamed: a crash loses at most the
batch in flight, never a batch already flushed. Readers skip temp files; stale ones are swept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HOUR_PREFIX = "hour="
HOUR_FORMAT = "%Y-%m-%dT%H"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600
GAP_KIND = "gap"


def utc_now() -> datetime:
    return datetime.now(UTC)


def hour_of(moment: datetime) -> str:
    """The spool folder name (without prefix) of the UTC hour holding ``moment``."""
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def hour_start(hour: str) -> datetime:
    return datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)


def hour_from_partition_key(key: str) -> str:
    """Dagster hourly partition key ``2026-12-03-21:00`` -> spool hour ``2026-12-03T21``."""
    return datetime.strptime(key, "%Y-%m-%d-%H:%M").strftime(HOUR_FORMAT)


def partition_key_of_hour(hour: str) -> str:
    return hour_start(hour).strftime("%Y-%m-%d-%H:%M")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


@dataclass
class _Pending:
    lines: list[bytes] = field(default_factory=list)
    first_received: datetime | None = None


class SpoolWriter:
    """Buffers records and flushes them as atomic batch files, one per hour touched.

    A batch is flushed when it holds ``batch_size`` records or its oldest record is ``max_batch_seconds`` old
    (checked on every ``append`` and by ``maybe_flush``, which a collector calls on idle ticks too).
    """

    def __init__(self, root: Path | str, source: str, *, batch_size: int = 500, max_batch_seconds: float = 2.0,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.dir = Path(root) / "spool" / source
        self.source = source
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._seq = 0
        self.flushed_batches = 0
        self.flushed_records = 0
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def pending_records(self) -> int:
        return sum(len(p.lines) for p in self._pending.values())

    def append(self, kind: str, record: dict[str, Any], received_at: datetime | None = None) -> None:
        received = (received_at or self.clock()).astimezone(UTC)
        line = json.dumps({"received_at": received.isoformat(), "kind": kind, "record": record},
                          separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        pending = self._pending.setdefault(hour_of(received), _Pending())
        if pending.first_received is None:
            pending.first_received = received
        pending.lines.append(line)
        if self.pending_records >= self.batch_size:
            self.flush()
        else:
            self.maybe_flush()

    def maybe_flush(self) -> int:
        oldest = min((p.first_received for p in self._pending.values() if p.first_received), default=None)
        if oldest is not None and (self.clock() - oldest).total_seconds() >= self.max_batch_seconds:
            return self.flush()
        return 0

    def flush(self) -> int:
        """Write every pending record; returns how many were written."""
        written = 0
        for hour, pending in sorted(self._pending.items()):
            if not pending.lines:
                continue
            self._seq += 1
            stamp = int(pending.first_received.timestamp() * 1e9) if pending.first_received else time.time_ns()
            # Names sort by receipt; the random part keeps two writers (a restarted collector) from colliding.
            name = f"{stamp:020d}-{os.getpid()}-{self._seq:06d}-{uuid.uuid4().hex[:8]}.jsonl"
            path = self.dir / f"{HOUR_PREFIX}{hour}" / name
            write_atomically(path, b"".join(pending.lines))
            written += len(pending.lines)
            self.flushed_batches += 1
        self._pending.clear()
        self.flushed_records += written
        return written

    def record_gap(self, disconnected_at: datetime, reconnected_at: datetime | None, reason: str,
                   **detail: Any) -> None:
        """A disconnect (or silence) and when the stream came back; flushed at once so it is never lost."""
        self.append(GAP_KIND, {
            "disconnected_at": disconnected_at.astimezone(UTC).isoformat(),
            "reconnected_at": reconnected_at.astimezone(UTC).isoformat() if reconnected_at else None,
            "reason": reason,
            **detail,
        }, received_at=reconnected_at or disconnected_at)
        self.flush()

    def heartbeat(self, **fields: Any) -> dict[str, Any]:
        """Replace ``_health/heartbeat.json``: when the collector was last alive and what it last saw."""
        beat = {"source": self.source, "pid": os.getpid(), "at": self.clock().astimezone(UTC).isoformat(),
                "flushed_records": self.flushed_records, "pending_records": self.pending_records, **fields}
        write_atomically(self.dir / "_health" / "heartbeat.json", json.dumps(beat, default=str).encode())
        return beat


class SpoolReader:
    """Reads a source's spool: hours present, the records of an hour, the heartbeat, and retention."""

    def __init__(self, root: Path | str, source: str) -> None:
        self.dir = Path(root) / "spool" / source
        self.source = source

    def hours(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name[len(HOUR_PREFIX):] for p in self.dir.iterdir()
                      if p.is_dir() and p.name.startswith(HOUR_PREFIX))

    def batch_files(self, hour: str) -> list[Path]:
        folder = self.dir / f"{HOUR_PREFIX}{hour}"
        if not folder.exists():
            return []
        self._sweep_stale_temps(folder)
        return sorted(p for p in folder.iterdir() if p.suffix == ".jsonl" and not p.name.startswith(TEMP_PREFIX))

    def read_hour(self, hour: str) -> Iterator[dict[str, Any]]:
        """Every record of the hour in flush order. A line that does not parse (a disk fault, never our own
        write) is yielded as ``{"kind": "corrupt", ...}`` so the caller can count it instead of losing it."""
        for path in self.batch_files(hour):
            with open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:
                        text = line[:500].decode(errors="replace")
                        yield {"kind": "corrupt", "received_at": None,
                               "record": {"file": path.name, "line": number, "text": text}}

    def heartbeat(self) -> dict[str, Any] | None:
        path = self.dir / "_health" / "heartbeat.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def drop_hours_before(self, cutoff: datetime) -> list[str]:
        """Remove every hour folder that ends at or before ``cutoff``; returns the hours removed."""
        removed = []
        for hour in self.hours():
            if hour_start(hour) + timedelta(hours=1) <= cutoff:
                shutil.rmtree(self.dir / f"{HOUR_PREFIX}{hour}", ignore_errors=True)
                removed.append(hour)
        return removed

    @staticmethod
    def _sweep_stale_temps(folder: Path) -> None:
        now = time.time()
        for temp in folder.glob(f"{TEMP_PREFIX}*"):
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                    temp.unlink()
            except FileNotFoundError:
                pass
