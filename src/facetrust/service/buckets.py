"""Token buckets by name, in memory or in the service database (shared by replicas).

The rate limits of :mod:`.limits` (requests per key, failed authentications
per client address) are token buckets: ``burst`` tokens,
refilled at ``rate`` tokens a second. :class:`MemoryBuckets` keeps them in
one process; :class:`SqlBuckets` keeps them in the service database
(:mod:`.service_db`), so that N replicas enforce one limit, not N: a client
spreading its attempts over every replica gets the same allowance as one
talking to a single process.

Shared buckets are read and written in one statement per request (an
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: one round trip, atomic
under concurrent replicas), and run on the wall clock of the replica
serving the request: keep the hosts' clocks in step (NTP); a replica whose
clock is ahead refills buckets early by its offset times the rate.
"""

from __future__ import annotations

import threading
from typing import Protocol

from .service_db import ServiceDatabase

__all__ = ["Buckets", "MemoryBuckets", "SqlBuckets", "refilled"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_buckets (
    name TEXT PRIMARY KEY,
    tokens {real} NOT NULL,
    updated {real} NOT NULL,
    full_at {real} NOT NULL,
    spent INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_buckets_full_at ON service_buckets (full_at)
"""

#: A shared store deletes buckets that are full again once every this many writes.
_SWEEP_EVERY = 256


def refilled(tokens: float, last: float, now: float, rate: float, burst: float) -> float:
    """Tokens of a bucket that held ``tokens`` at ``last``, refilled at ``rate`` a second
    until ``now`` (seconds), capped at ``burst``."""
    return min(burst, tokens + max(0.0, now - last) * rate)


class Buckets(Protocol):
    """Where named token buckets live (an unknown name is a full bucket)."""

    def level(self, name: str, now: float, rate: float, burst: float) -> float | None:
        """Tokens in ``name``'s bucket at ``now``; None if it has never been spent from."""
        ...

    def spend(self, name: str, now: float, rate: float, burst: float, *, partial: bool) -> float:
        """Take one token from ``name``'s bucket; returns the tokens before taking
        (with ``partial`` and less than one token left: 0.0).

        With ``partial`` the bucket is emptied down to 0 even when it holds less
        than one token (counting failures); without, a bucket with less than
        one token is left as it is (a refused request spends nothing).
        """
        ...

    def give_back(self, name: str, now: float, rate: float, burst: float) -> None:
        """Return one token to ``name``'s bucket (capped at ``burst``): a token
        taken for an attempt that turned out not to need it."""
        ...


def _after(level: float, partial: bool) -> float:
    if level >= 1.0:
        return level - 1.0
    return 0.0 if partial else level


class MemoryBuckets:
    """Token buckets of one process, at most ``max_names`` of them (thread-safe).

    When more names are tracked, full buckets are forgotten first (then half
    of all), so the buckets cannot be used to fill the memory.
    """

    def __init__(self, max_names: int = 10_000) -> None:
        self.max_names = max_names
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float, float, float]] = {}

    def level(self, name: str, now: float, rate: float, burst: float) -> float | None:
        with self._lock:
            found = self._tokens.get(name)
        return None if found is None else refilled(found[0], found[1], now, rate, burst)

    def spend(self, name: str, now: float, rate: float, burst: float, *, partial: bool) -> float:
        with self._lock:
            tokens, last, _, _ = self._tokens.get(name, (burst, now, rate, burst))
            level = refilled(tokens, last, now, rate, burst)
            self._tokens[name] = (_after(level, partial), now, rate, burst)
            if len(self._tokens) > self.max_names:
                self._forget(now)
        return level

    def give_back(self, name: str, now: float, rate: float, burst: float) -> None:
        with self._lock:
            found = self._tokens.get(name)
            if found is not None:  # a forgotten bucket is a full one
                level = refilled(found[0], found[1], now, rate, burst)
                self._tokens[name] = (min(burst, level + 1.0), now, rate, burst)

    def _forget(self, now: float) -> None:
        full = [
            n for n, (t, last, rate, burst) in self._tokens.items()
            if refilled(t, last, now, rate, burst) >= burst
        ]
        for name in full or list(self._tokens)[: len(self._tokens) // 2]:
            del self._tokens[name]


class SqlBuckets:
    """Token buckets in the service database, shared by every process that opens it.

    Buckets that are full again are deleted from time to time (a full
    bucket and a missing one are the same), so the table holds only the
    names that spent recently.
    """

    def __init__(self, database: ServiceDatabase) -> None:
        self.database = database
        database.create_tables(_SCHEMA)
        self._writes = 0

    def level(self, name: str, now: float, rate: float, burst: float) -> float | None:
        row = self.database.execute(
            "SELECT tokens, updated FROM service_buckets WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else refilled(float(row[0]), float(row[1]), now, rate, burst)

    def spend(self, name: str, now: float, rate: float, burst: float, *, partial: bool) -> float:
        db = self.database
        least, greatest = ("LEAST", "GREATEST") if db.is_postgres else ("min", "max")
        # the bucket refilled to now, from the row as it was (every SET reads the old row)
        level = (
            f"{least}(?, service_buckets.tokens + {greatest}(0, ? - service_buckets.updated) * ?)"
        )
        after = f"CASE WHEN {level} >= 1 THEN {level} - 1 WHEN ? THEN 0 ELSE {level} END"
        refill = (burst, now, rate)
        row = db.execute(
            "INSERT INTO service_buckets VALUES (?, ?, ?, ?, 1) ON CONFLICT (name) DO UPDATE SET "
            f"tokens = {after}, spent = CASE WHEN {level} >= 1 THEN 1 ELSE 0 END, "
            f"updated = ?, full_at = ? + (? - ({after})) / ? RETURNING tokens, spent",
            (
                name, burst - 1.0, now, now + 1.0 / rate,
                *refill, *refill, partial, *refill,  # tokens
                *refill,  # spent
                now, now, burst, *refill, *refill, partial, *refill, rate,  # updated, full_at
            ),
        ).fetchone()
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            db.execute("DELETE FROM service_buckets WHERE full_at < ?", (now,))
        return float(row[0]) + float(row[1])

    def give_back(self, name: str, now: float, rate: float, burst: float) -> None:
        db = self.database
        least, greatest = ("LEAST", "GREATEST") if db.is_postgres else ("min", "max")
        # a missing row is a full bucket: nothing to return it to
        level = f"{least}(?, tokens + {greatest}(0, ? - updated) * ? + 1)"
        refill = (burst, now, rate)
        db.execute(
            f"UPDATE service_buckets SET tokens = {level}, updated = ?, "
            f"full_at = ? + (? - {level}) / ? WHERE name = ?",
            (*refill, now, now, burst, *refill, rate, name),
        )
