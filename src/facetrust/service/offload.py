"""Blocking calls (the service database, argon2) run in worker threads, off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


async def in_worker_thread(
    fn: Callable[..., T], *args: object, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """``fn(*args)`` in a worker thread (of ``limiter``, else anyio's default pool).

    A request cancelled meanwhile (its timeout, a client gone) stops waiting at
    once; the call itself runs to its end in the thread.
    """
    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=limiter)
