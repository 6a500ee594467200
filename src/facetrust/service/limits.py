"""Request limits: body size cap, request timeout, a per-key token bucket, and the
throttle of failed authentication attempts.

The token bucket and the throttle keep their levels in
:mod:`.buckets`: in memory for a lone process, in the service database when
the service runs as several processes or replicas (then one limit holds for
all of them).

The middlewares are plain ASGI, so the body cap refuses a request from its
``Content-Length`` before reading it, and stops a chunked upload as soon as
it passes the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .buckets import Buckets, MemoryBuckets
from .problems import SERVICE_PROBLEMS, Problem, problem_response


class BodyTooLarge(Problem):
    def __init__(self, limit: int) -> None:
        super().__init__(
            "body-too-large",
            f"The request body is larger than {limit:,} bytes. Send a smaller image.",
            max_body_bytes=limit,
        )


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 problem+json."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        received = 0
        exceeded = False

        async def limited() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded(message: Message) -> None:
            # Whatever the app answers once the body overflowed (frameworks turn
            # the exception into a 400 "cannot parse"), the client gets a 413.
            if not exceeded:
                await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, limited, guarded)
        if exceeded:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(self.max_bytes)
        response = problem_response(
            error.problem, error.detail, instance=scope.get("path"),
            headers={"Connection": "close"}, **error.extra,
        )
        await response(scope, receive, send)


class RequestTimeout:
    """Answer 503 ``request-timeout`` when a request runs longer than ``seconds``.

    Work the request started in a thread keeps running to its end (a gallery
    write is never cut in half); only the client stops waiting.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking), self.seconds)
        except TimeoutError:
            if started:
                raise
            response = problem_response(
                SERVICE_PROBLEMS["request-timeout"],
                f"The request took longer than {self.seconds:g} s. Try again later, or with a "
                "smaller image.",
                instance=scope.get("path"),
            )
            await response(scope, receive, send)


class TokenBucket:
    """Per-key rate limit: ``burst`` requests at once, refilled at ``per_minute``.

    Thread-safe; ``clock`` returns seconds and is injectable for tests.
    ``buckets`` holds the levels: this process's memory by default, or the
    service database (:class:`~facetrust.service.buckets.SqlBuckets`, with a
    wall ``clock``) to share one limit between replicas.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        buckets: Buckets | None = None,
        prefix: str = "rate:",
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.buckets: Buckets = buckets or MemoryBuckets()
        self.prefix = prefix
        self._clock = clock

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else seconds until one is available."""
        level = self.buckets.spend(
            self.prefix + key, self._clock(), self.rate, self.burst, partial=False
        )
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate


class FailureThrottle:
    """Count failed attempts per name (a client address); block the name when it has
    failed ``burst`` times faster than ``per_minute`` allows.

    A token bucket of failures: every attempt takes a token *before* it is
    checked (:meth:`reserve`), and one that succeeds gives it back
    (:meth:`give_back`), so attempts in flight at once cannot all pass the same
    check. While the bucket is empty, :meth:`reserve` says how long to wait. In
    memory (the default), at most ``max_names`` names are tracked (fully
    recovered names are forgotten first), so the throttle itself cannot be used
    to fill the memory; with
    shared ``buckets`` (see :class:`TokenBucket`), recovered names are deleted
    from the table from time to time.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_names: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        buckets: Buckets | None = None,
        prefix: str = "failures:",
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_names = max_names
        self.buckets: Buckets = buckets or MemoryBuckets(max_names)
        self.prefix = prefix
        self._clock = clock

    def reserve(self, name: str) -> float:
        """Take a token for an attempt by ``name`` before it is checked: 0.0 if taken,
        else the seconds until one is available (nothing is taken then)."""
        level = self.buckets.spend(
            self.prefix + name, self._clock(), self.rate, self.burst, partial=False
        )
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def give_back(self, name: str) -> None:
        """Return the token :meth:`reserve` took for an attempt that succeeded."""
        self.buckets.give_back(self.prefix + name, self._clock(), self.rate, self.burst)


def rate_limited(retry_after: float, what: str) -> Problem:
    """The 429 problem for a refused request, with ``Retry-After`` in whole seconds."""
    seconds = retry_seconds(retry_after)
    return Problem(
        "rate-limited",
        f"This key has made too many {what.replace('_', ' ')} requests. "
        f"Retry after {seconds} s.",
        headers={"Retry-After": str(seconds)},
        retry_after_s=seconds,
    )


def retry_seconds(retry_after: float) -> int:
    """``retry_after`` as the whole seconds of a ``Retry-After`` header (at least 1)."""
    return max(1, int(retry_after + 0.999))
