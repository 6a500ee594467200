"""The one parser of times a person types: ISO 8601 dates and times, UTC unless they say.

Every entry point (the library, the CLI, the REST service, the console) reads
``--since 2026-01-01``, ``?since=2026-01-01T09:00`` or ``2026-01-01T09:00+02:00``
the same way: a date is midnight UTC, a time without a zone is UTC, a time
with a zone keeps it. A consent's expiry is read by the same rules, so a date
typed at the CLI (``--expires 2027-01-31``), in a consent CSV or in the
console's date field is one instant: 2027-01-31T00:00:00+00:00. Where a
guess is not wanted (the REST API's ``expires_at``), ``zone_required``
refuses a text without a zone instead of reading it as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import InvalidParameter


def parse_time(
    value: str | datetime, what: str = "time", *, zone_required: bool = False
) -> datetime:
    """``value`` as a timezone-aware datetime (naive values are taken as UTC).

    Parameters
    ----------
    value : str or datetime
        An ISO 8601 date (``2026-01-01``) or date and time
        (``2026-01-01T09:30``, ``2026-01-01T09:30:00+02:00``, ``...Z``).
        Never a number: ``1900000000`` is no time (Unix seconds would read
        ``20270131`` as a day of 1970).
    what : str
        What the value is, for the error message (e.g. ``"since"``).
    zone_required : bool
        Refuse a date, or a time without a zone, instead of reading it as UTC.

    Raises
    ------
    InvalidParameter
        The value is not an ISO 8601 date or time (a number, a day that does
        not exist such as 2027-02-30, a leap second ``23:59:60``), or it has no
        zone and ``zone_required`` is set.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidParameter(
                f"The '{what}' must be an ISO 8601 date or time such as 2026-01-31 or "
                f"2026-01-31T09:30 (UTC unless a zone like +02:00 is given). Got {text!r}."
            ) from None
    else:
        got = repr(value) if isinstance(value, int | float) else type(value).__name__
        raise InvalidParameter(
            f"The '{what}' must be an ISO 8601 date or time written as text, such as "
            f"2026-01-31T09:30:00+00:00 (a number is no time). Got {got}."
        )
    if moment.tzinfo is None and zone_required:
        raise InvalidParameter(
            f"The '{what}' must say its time zone, such as 2026-01-31T00:00:00Z or "
            f"2026-01-31T09:30:00+02:00. Got {moment.isoformat()!r}, which has none."
        )
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
