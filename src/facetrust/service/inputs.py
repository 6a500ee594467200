"""Request inputs the routes share: the ``face`` choice, single uploads, rounded distances."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..pipeline import FacePolicy
from .problems import Problem

__all__ = ["DISTANCE_DIGITS", "parse_face", "require_single_parts", "round_distances"]

#: Digits kept of every distance (and threshold) in a response: enough to rank and to
#: compare with the threshold, not so many that responses fingerprint a template.
DISTANCE_DIGITS = 4

_ROUNDED = ("distance", "threshold")


def parse_face(value: str | None) -> FacePolicy:
    """The face policy the ``face`` form field asks for.

    ``single`` (the default) refuses a photo with several faces, ``largest``
    takes the biggest face, and a whole number ``n`` takes the ``n``-th face,
    largest first (0 is the largest).

    Raises
    ------
    Problem
        ``validation-error`` (422) for anything else.
    """
    text = (value or "single").strip()
    if text in ("single", "largest"):
        return "single" if text == "single" else "largest"
    if text.isdigit() and len(text) <= 3:
        return int(text)
    raise Problem(
        "validation-error",
        "The 'face' field must be 'single', 'largest' or a face index such as 0 (faces are "
        f"numbered largest first). Got {text[:40]!r} instead.",
    )


async def require_single_parts(request: Request, *names: str) -> None:
    """Refuse a multipart form that repeats any of the fields ``names`` (422).

    Without this, the framework would silently use the last of two ``image``
    parts, and the request would be answered for a photo the caller may not
    have meant.
    """
    form = await request.form()
    for name in names:
        count = len(form.getlist(name))
        if count > 1:
            raise Problem(
                "validation-error",
                f"The request has {count} '{name}' parts; send exactly one.",
                field=name,
            )


def round_distances(response: dict[str, Any]) -> dict[str, Any]:
    """``response`` with every ``distance`` and ``threshold`` number rounded to 4 digits."""
    rounded: dict[str, Any] = _rounded(response)
    return rounded


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (round(v, DISTANCE_DIGITS) if k in _ROUNDED and isinstance(v, float)
                else _rounded(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
