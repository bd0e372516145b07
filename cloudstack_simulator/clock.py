"""The simulator's clock and CloudStack's date formats.

Simulated time is real time plus an offset that tests move forward, so purge and expiry can be
exercised without sleeping. Dates are written as CloudStack writes them: `yyyy-MM-dd'T'HH:mm:ssZ`
in the management server's own time zone.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

_OFFSET_RE = re.compile(r"^(?:UTC|GMT|Z|([+-])(\d{2}):?(\d{2}))$")


def parse_timezone(text: str) -> timezone:
    """ "-0700", "+05:30", "Z" or "UTC" -> a fixed-offset time zone; ValueError otherwise."""
    match = _OFFSET_RE.match(text.strip())
    if not match:
        raise ValueError(f"time zone must be an offset like -0700 or +05:30, got {text!r:.32}")
    if match.group(1) is None:
        return UTC
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 18 or minutes > 59:
        raise ValueError(f"time zone offset out of range: {text!r:.32}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if match.group(1) == "-" else delta)


class SimClock:
    """Real time plus a controllable offset, formatted in the server's time zone."""

    def __init__(self, tz: timezone = UTC) -> None:
        self.tz = tz
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        return self.now()

    def format(self, when: float) -> str:
        """Unix seconds -> `2012-07-05T12:18:27-0700` in the server's time zone."""
        return datetime.fromtimestamp(int(when), self.tz).strftime("%Y-%m-%dT%H:%M:%S%z")


# The forms CloudStack's DateUtil.parseTZDateString accepts (ISO offset, `Z`, `+0000`,
# microseconds, and the legacy `...'Z'+0000`), normalised to something fromisoformat reads.
_TZDATE_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z(?=[+-]\d{4}$))?"
    r"(Z|[+-]\d{2}:?\d{2})$"
)


def parse_tz_date(text: str) -> float:
    """A CloudStack TZDATE parameter (`expires`, `startdate`) -> Unix seconds; ValueError if not."""
    match = _TZDATE_RE.match(text.strip())
    if not match:
        raise ValueError(f"Unparseable date: {text!r:.64}")
    base, fraction, _legacy_z, zone = match.groups()
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    micro = (fraction or "")[:7]
    try:
        return datetime.fromisoformat(base + micro + zone).timestamp()
    except ValueError:
        raise ValueError(f"Unparseable date: {text!r:.64}") from None


def parse_start_date(text: str, tz: timezone) -> float:
    """`startdate` of listAsyncJobs: a TZDATE, or a plain `yyyy-MM-dd` in the server's zone."""
    try:
        return parse_tz_date(text)
    except ValueError:
        pass
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"Unparseable date: {text!r:.64}") from None
    return day.replace(tzinfo=tz).timestamp()
