"""The one parser of times a person types: ISO 8601 dates and times, UTC unless they say.

Every entry point (the library, the CLI, the REST service, the console) reads
``--since 2026-01-01``, ``?since=2026-01-01T09:00`` or ``2026-01-01T09:00+02:00``
the same way: a date is midnight UTC, a time without a zone is UTC, a time
with a zone keeps it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import InvalidParameter


def parse_time(value: str | datetime, what: str = "time") -> datetime:
    """``value`` as a timezone-aware datetime (naive values are taken as UTC).

    Parameters
    ----------
    value : str or datetime
        An ISO 8601 date (``2026-01-01``) or date and time
        (``2026-01-01T09:30``, ``2026-01-01T09:30:00+02:00``, ``...Z``).
    what : str
        What the value is, for the error message (e.g. ``"since"``).

    Raises
    ------
    InvalidParameter
        The text is not an ISO 8601 date or time.
    """
    if isinstance(value, datetime):
        moment = value
    else:
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidParameter(
                f"The '{what}' must be an ISO 8601 date or time such as 2026-01-31 or "
                f"2026-01-31T09:30 (UTC unless a zone like +02:00 is given). Got {text!r}."
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_utc(moment: datetime, what: str) -> datetime:
    """``moment`` (timezone-aware) in UTC, the zone the gallery records times in.

    Raises
    ------
    InvalidParameter
        In UTC the time would fall outside the years 1 to 9999, which no
        datetime can hold (e.g. 9999-12-31T23:59:59-05:00).
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(
            f"The '{what}' {moment.isoformat()} falls outside the years 1 to 9999 in UTC, "
            "the times the gallery can record. Give a time between 0001-01-02 and 9999-12-30."
        ) from None
