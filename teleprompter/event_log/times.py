"""TIME arguments of the analysts' commands: ISO 8601, relative to now, or Unix epoch ms.

2025-06-01T12:00:00Z   ISO 8601; an offset (+02:00) is honoured, none means UTC
2025-06-01             midnight UTC that day
-15m, -2h, -30s, -1d   that long before now (s, m, h, d; decimals allowed: -1.5h)
now                    now
1748779200000          Unix epoch milliseconds (as the events' `event_time_ms`)
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Final

logger = logging.getLogger(__name__)

TIME_FORMS: Final = "ISO 8601 (2025-06-01T12:00:00Z), relative (-15m, -2h, -1d), now, or epoch ms"

_RELATIVE: Final = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Epoch milliseconds have 12-14 digits from 2001 to 5138; shorter numbers are more likely typos.
_EPOCH_MS: Final = re.compile(r"^\d{12,14}$")


class TimeFormatError(ValueError):
    """A TIME argument is in none of the accepted forms; the message names it and them."""


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """Unix epoch milliseconds for a TIME argument."""
    value = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if value.lower() == "now":
        return now
    if match := _RELATIVE.match(value):
        amount, unit = match.groups()
        return now - round(float(amount) * _UNIT_MS[unit])
    if _EPOCH_MS.match(value):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TimeFormatError(f"{text!r} is not a time: use {TIME_FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def format_time(epoch_ms: float) -> str:
    """ISO 8601 in UTC to the millisecond: 2025-06-01T12:00:00.000Z."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
