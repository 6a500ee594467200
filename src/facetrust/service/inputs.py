"""Request inputs the routes share: the ``face`` choice, single uploads, rounded distances."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..errors import InvalidParameter
from ..pipeline import FacePolicy, parse_face_policy
from .problems import Problem

__all__ = ["DISTANCE_DIGITS", "parse_face", "require_single_parts", "round_distances"]

#: Digits kept of every distance (and threshold) in a response: enough to rank and to
#: compare with the threshold, not so many that responses fingerprint a template.
DISTANCE_DIGITS = 4

_ROUNDED = ("distance", "threshold")


def parse_face(value: str | None) -> FacePolicy:
    """The face policy the ``face`` form field asks for.

    ``dominant`` (the default) takes the photo's clear subject, ``single``
    refuses a photo with several faces, ``largest`` takes the biggest face,
    ``crop`` says the photo is already a face crop (no detection), and a whole
    number ``n`` takes the ``n``-th face, largest first (0 is the largest).

    Raises
    ------
    Problem
        ``validation-error`` (422) for anything else.
    """
    try:
        return parse_face_policy(value or "dominant")
    except InvalidParameter as error:
        raise Problem(
            "validation-error", str(error).replace("The face policy", "The 'face' field")
        ) from None


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
