"""Limits on a request's headers, before the app sees the request.

uvicorn's C parser (httptools) buffers a header block of any size and waits
for it as long as the client likes: one client could send a gigabyte of
header (the server's memory grew by 240 MB for 200 MB sent, and other
clients waited seconds for ``/healthz``), or hold thousands of connections
open with half a request line each, before any middleware (body cap, request
timeout, refusal audit) runs. :class:`BoundedHttpToolsProtocol` adds the two
limits a proxy such as nginx has:

- a header block (request line and headers) over :data:`MAX_HEADER_BYTES`
  is answered ``431 headers-too-large`` and the connection closed;
- headers not complete :data:`HEADER_TIMEOUT_S` after the connection opened
  or the request's first byte are answered ``408 header-timeout`` (or, when
  not a byte of a request came, the connection is just closed).

Such a request never reaches the app, so it is in no audit log: like a
request the parser cannot read (400), it names no route anyone could act on.
Keep-alive connections idle between requests are closed by uvicorn itself
after its ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .headers import privacy_headers
from .problems import PROBLEM_MEDIA_TYPE, SERVICE_PROBLEMS

__all__ = ["HEADER_TIMEOUT_S", "MAX_HEADER_BYTES", "BoundedHttpToolsProtocol"]

#: Most bytes of a request line and headers (nginx allows 4 x 8 KiB by default).
MAX_HEADER_BYTES = 64 * 1024
#: Most seconds a client may take to send its request line and headers.
HEADER_TIMEOUT_S = 10.0

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :data:`MAX_HEADER_BYTES` and :data:`HEADER_TIMEOUT_S`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True  # a new connection's first bytes are a request's
        self._header_bytes = 0
        self._header_clock: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so a chunk that holds the headers and the start of the
        # body is never refused; what is parsed past the cap is one read, bounded.
        if self._reading_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, "headers-too-large",
                             f"The request line and headers are longer than "
                             f"{MAX_HEADER_BYTES:,} bytes. Send shorter headers.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._header_bytes = 0
        if self._header_clock is None:
            self._start_header_clock()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._stop_header_clock()
        super().on_headers_complete()

    def _start_header_clock(self) -> None:
        self._header_clock = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        if self.transport.is_closing() or not self._reading_headers:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._start_header_clock()  # a pipelined request waits for the one before
            return
        if self._header_bytes == 0:
            self.transport.close()  # not a byte of a request: nobody to answer
            return
        self._refuse(408, "header-timeout",
                     f"The request's headers did not arrive within {HEADER_TIMEOUT_S:g} s. "
                     "Send the whole request at once.")

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        problem = SERVICE_PROBLEMS[slug]
        body = json.dumps({"type": problem.uri, "title": problem.title, "status": status,
                           "detail": detail}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in
                 self.server_state.default_headers]
        # as the app's answers (PrivacyHeaders): the request's path is not read yet
        head += [f"{name}: {value}\r\n".encode() for name, value in privacy_headers("").items()]
        head += [b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        self._reading_headers = False
        self._stop_header_clock()
