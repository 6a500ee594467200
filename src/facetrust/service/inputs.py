"""Request inputs the routes share: subject ids, the ``face`` choice, single uploads,
rounded distances."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from pydantic import Field

from ..errors import InvalidParameter
from ..gallery.checks import ID_PATTERN, MAX_ID_LENGTH
from ..pipeline import DEFAULT_FACE_POLICY, FACE_POLICY_HELP, FacePolicy, parse_face_policy
from .problems import Problem

__all__ = [
    "DISTANCE_DIGITS", "SUBJECT_ID_HELP", "SubjectIdField", "SubjectIdPath", "parse_face",
    "require_single_parts", "round_distances", "text_bound", "text_schema",
]

SUBJECT_ID_HELP = (
    f"A subject id: 1 to {MAX_ID_LENGTH} letters A-Z and a-z, digits, '.', '_' and '-', "
    "starting with a letter or digit. Never a name or other personal data."
)
#: What the OpenAPI document says of a subject id: the gallery's own grammar. The
#: routes check an id in a path with the gallery's own check
#: (:func:`~facetrust.gallery.checks.check_subject_id`: 422 ``invalid-parameter``,
#: with a message that spells the grammar out) before any lookup, so an id that
#: cannot exist is not answered "unknown subject"; the request's bound of 200
#: characters only keeps an absurd value from reaching it.
_SUBJECT_ID_SCHEMA: dict[str, Any] = {
    "pattern": f"^{ID_PATTERN.pattern}$", "maxLength": MAX_ID_LENGTH,
}
SubjectIdPath = Annotated[str, Path(
    min_length=1, max_length=200, description=SUBJECT_ID_HELP,
    json_schema_extra=_SUBJECT_ID_SCHEMA,
)]
SubjectIdField = Annotated[str, Field(
    min_length=1, max_length=200, description=SUBJECT_ID_HELP,
    json_schema_extra=_SUBJECT_ID_SCHEMA,
)]

def text_bound(limit: int) -> int:
    """The most characters the service reads of a request's text whose limit is
    ``limit``: four times it. The limit itself counts characters of the text in
    Unicode NFC with its outer spaces removed, and is checked by the library
    (:data:`~facetrust.gallery.checks.TEXT_LIMITS`: 422 ``invalid-parameter``) the
    same for every entry point; a decomposed (NFD) letter is up to four code
    points, so a tighter bound here would refuse text the library accepts. This
    bound only keeps an absurd value from being read."""
    return 4 * limit


def text_schema(limit: int) -> dict[str, Any]:
    """What the OpenAPI document says of such a text: its limit, not the bound."""
    return {"maxLength": limit}


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
        ``validation-error`` (422) for anything else, also when the parser
        fails with a bare ``ValueError`` (a number it cannot convert): a form
        field never makes a 500.
    """
    try:
        return parse_face_policy(value or str(DEFAULT_FACE_POLICY))
    except InvalidParameter as error:
        detail = str(error).replace("The face policy", "The 'face' field")
    except ValueError:
        got = (value or "")[:40]
        detail = f"The 'face' field cannot be read. {FACE_POLICY_HELP} Got {got!r}."
    raise Problem("validation-error", detail, field="face")


async def require_single_parts(request: Request, *names: str) -> None:
    """Refuse a multipart form that repeats any of the fields ``names`` (422).

    Without this, the framework would silently use the last of two ``image``
    (or ``purpose``, ``case_ref``, ...) parts, and the request would be
    answered for a photo or a purpose the caller may not have meant.
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
