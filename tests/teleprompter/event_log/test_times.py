"""TIME arguments: ISO 8601, relative to now, now, epoch milliseconds; anything else is refused."""

from __future__ import annotations

import pytest

from teleprompter.event_log.times import TimeFormatError, format_time, parse_time

NOW = 1_748_779_200_000  # 2025-06-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T12:00:00Z", NOW),
        ("2025-06-01T12:00:00", NOW),  # no offset: UTC
        ("2025-06-01T14:00:00+02:00", NOW),
        ("2025-06-01 12:00:00.250", NOW + 250),
        ("2025-06-01", NOW - 12 * 3_600_000),
        ("now", NOW),
        (" NOW ", NOW),
        ("-15m", NOW - 15 * 60_000),
        ("-2h", NOW - 2 * 3_600_000),
        ("-1.5h", NOW - 90 * 60_000),
        ("-30s", NOW - 30_000),
        ("-1d", NOW - 86_400_000),
        ("1748779200000", NOW),
    ],
)
def test_accepted_forms(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-15", "15m", "-5x", "12", "2025-13-01", "+1h"])
def test_anything_else_names_the_forms_it_takes(text: str) -> None:
    with pytest.raises(TimeFormatError) as raised:
        parse_time(text, now_ms=NOW)

    assert repr(text) in str(raised.value)
    assert "ISO 8601" in str(raised.value) and "-15m" in str(raised.value)


def test_format_is_iso_utc_to_the_millisecond() -> None:
    assert format_time(NOW + 7) == "2025-06-01T12:00:00.007Z"
    assert parse_time(format_time(NOW + 7)) == NOW + 7
