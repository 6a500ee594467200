"""A light HTTP load client for the service benchmarks.

The load generator shares the benchmark machine's cores with the service it
measures. httpx spends about 2.4 ms of CPU per identification request (request
building, multipart encoding, response parsing), which competes with the
replicas for the cores and their caches; in a deployment the clients run
elsewhere. This client sends a multipart body encoded once per photo over a
keep-alive ``http.client`` connection: about 0.7 ms per request.
"""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

BOUNDARY = uuid.uuid4().hex


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> bytes:
    """A ``multipart/form-data`` body (boundary :data:`BOUNDARY`) with ``fields`` and one file."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode() + data + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


class LightClient:
    """One keep-alive connection to ``url`` sending requests with an API key."""

    def __init__(self, url: str, key: str, timeout: float = 120.0) -> None:
        address = urlsplit(url)
        self._connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=timeout
        )
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        }

    def post_form(self, path: str, body: bytes) -> tuple[int, Any]:
        """POST a :func:`multipart` ``body``; the status and the decoded JSON answer."""
        try:
            self._connection.request("POST", path, body=body, headers=self._headers)
            response = self._connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()  # reconnects on the next request
            raise
        return response.status, json.loads(answer) if answer else None

    def close(self) -> None:
        self._connection.close()
