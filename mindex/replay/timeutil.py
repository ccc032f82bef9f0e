"""ISO-8601 helpers shared by the replay sources (stdlib only)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_LEADING_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 date or date-time into an aware UTC datetime.

    Offsets are honoured (``2021-09-30T16:06:50+05:30``), ``Z`` is accepted, and a value without an offset
    (including a bare date) is taken as UTC. Raises ValueError on anything else.
    """
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # "+05:30" typed into a URL by hand arrives as " 05:30": restore the plus sign once.
        if " " in value:
            parsed = datetime.fromisoformat(value.replace(" ", "+"))
        else:
            raise
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def epoch_or_none(text: object) -> float | None:
    """Seconds since the epoch for an ISO-8601 string, None for None or an unparsable value."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_instant(text).timestamp()
    except ValueError:
        return None


def shift_days(value: object, days: int) -> object:
    """Move an ISO-8601 date / date-time string ``days`` days back, keeping its exact textual format.

    A whole-day shift changes only the ``YYYY-MM-DD`` part: time of day, fraction and offset stay as recorded,
    so the result is exactly ``days * 86400`` seconds earlier. Intervals (``a/b``, as a GBIF ``eventDate``
    may be) shift both ends. Non-strings and strings without a leading date are returned unchanged.
    """
    if not isinstance(value, str) or days == 0:
        return value
    if "/" in value:
        return "/".join(str(shift_days(part, days)) for part in value.split("/"))
    match = _LEADING_DATE.match(value)
    if not match:
        return value
    try:
        day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return value
    return (day - timedelta(days=days)).isoformat() + value[match.end() :]
