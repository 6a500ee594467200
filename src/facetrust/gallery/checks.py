"""Checks of the values a caller hands the gallery: names, free text, purposes, ids,
display names, ``k``.

Each returns the cleaned value or raises :class:`~facetrust.errors.InvalidParameter`
(or :class:`~facetrust.errors.PurposeRequired`) with a message that says what to pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import overload

from ..errors import InvalidParameter, PurposeRequired
from ..text import canonical, hidden_characters, name_key

#: The longest text the gallery records in a field, in characters of its Unicode
#: NFC form (:func:`~facetrust.text.canonical`; the REST service's request limits
#: are these); any other name or text: DEFAULT_TEXT_LIMIT.
TEXT_LIMITS = {"case_ref": 200, "note": 1000, "reason": 500, "evidence_ref": 500,
               "notice_version": 100}
DEFAULT_TEXT_LIMIT = 200


def _shown_as_is(value: str, what: str) -> str:
    """``value`` (already in NFC) if it is within its limit and shows as it is."""
    limit = TEXT_LIMITS.get(what, DEFAULT_TEXT_LIMIT)
    if len(value) > limit:
        raise InvalidParameter(
            f"The '{what}' is at most {limit} characters. Got {len(value)}: shorten it."
        )
    hidden = hidden_characters(value)
    if hidden:
        raise InvalidParameter(
            f"The '{what}' may not hold control or invisible formatting characters (found "
            f"{', '.join(hidden)}): the audit log must show what was recorded. Type it as it "
            "should be shown, on one line."
        )
    return value


def check_name(value: str | None, what: str) -> str:
    """``value`` in Unicode NFC and stripped, if it names a person, service or
    document (an actor, a reviewer, a consent's evidence) in characters a reader
    sees as they are, within its :data:`TEXT_LIMITS`."""
    if not value or not value.strip():
        got = "nothing" if value is None else repr(value)
        raise InvalidParameter(f"The '{what}' must name a person or service. Got {got}.")
    return _shown_as_is(canonical(value).strip(), what)


def is_same_name(first: str, second: str) -> bool:
    """Whether two names a caller typed (an actor, a reviewer) name one person: equal
    in :func:`~facetrust.text.name_key` (case and Unicode form aside). A searcher may
    not review under another spelling of their name, and one reviewer's two
    spellings never count as two of a quorum."""
    return name_key(first) == name_key(second)


@overload
def check_text(value: str, what: str) -> str: ...
@overload
def check_text(value: None, what: str) -> None: ...
@overload
def check_text(value: str | None, what: str) -> str | None: ...
def check_text(value: str | None, what: str) -> str | None:
    """``value`` (a case reference, a note, a reason) in Unicode NFC, if a reader
    sees it as it is (no :func:`hidden_characters`) and it is within its
    :data:`TEXT_LIMITS`; None stays None."""
    return None if value is None else _shown_as_is(canonical(value), what)


def check_case_ref(value: str | None) -> str:
    """``value`` in Unicode NFC and stripped, if it names the case a search or
    verification belongs to (a ticket, an incident, a gate and flight) as
    :func:`check_text` accepts it.

    Raises
    ------
    InvalidParameter
        No case was named, or the text is too long or holds hidden characters.
    """
    if not value or not value.strip():
        raise InvalidParameter(
            "A search or verification must name the case it belongs to (a ticket, an "
            "incident, a gate and flight), so an auditor can ask why it was run. Give its "
            "case reference.",
            field="case_ref",
        )
    return _shown_as_is(canonical(value).strip(), "case_ref")


def check_purpose(purpose: str | None, purposes: Sequence[str]) -> str:
    """The one of the gallery's ``purposes`` that ``purpose`` names, spelled as the
    gallery spells it: the same text in any Unicode normal form names it (what a
    reader sees as the same word is the same purpose), a different case or outer
    spaces do not (:func:`check_purposes` keeps a gallery from configuring two
    purposes that differ only so).

    Raises
    ------
    PurposeRequired
        No purpose was stated.
    InvalidParameter
        The purpose is not one the gallery accepts.
    """
    if not purpose:
        raise PurposeRequired(
            "A search or verification must state its purpose. Choose one of: "
            + ", ".join(purposes)
            + ".",
            field="purpose",
        )
    wanted = canonical(purpose) if isinstance(purpose, str) else None
    for known in purposes:
        if canonical(known) == wanted:
            return known
    raise InvalidParameter(
        f"The purpose {purpose!r} is not one this gallery accepts. Known purposes: "
        + ", ".join(purposes)
        + "."
    )


#: The longest purpose name, in characters (the REST service's request limit).
MAX_PURPOSE_LENGTH = 100


def check_purposes(purposes: Sequence[str]) -> tuple[str, ...]:
    """``purposes`` (a gallery's setting), if each is a name a caller can type and
    tell apart from the others.

    Raises
    ------
    InvalidParameter
        The list is empty, or a purpose is empty, over
        :data:`MAX_PURPOSE_LENGTH` characters, has outer spaces or
        :func:`hidden_characters`, or differs from another only in case or
        Unicode form (``boarding`` and ``Boarding``).
    """
    if not purposes or any(not p or not isinstance(p, str) for p in purposes):
        raise InvalidParameter(
            "The 'purposes' setting must be a non-empty list of non-empty names. "
            f"Got {list(purposes)!r} instead."
        )
    seen: dict[str, str] = {}
    for purpose in purposes:
        hidden = hidden_characters(purpose)
        if hidden or purpose != purpose.strip() or len(canonical(purpose)) > MAX_PURPOSE_LENGTH:
            why = (f"holds control or invisible formatting characters ({', '.join(hidden)})"
                   if hidden else "has spaces around it" if purpose != purpose.strip()
                   else f"is over {MAX_PURPOSE_LENGTH} characters long")
            raise InvalidParameter(
                f"The purpose {purpose!r} of the 'purposes' setting {why}. Name each purpose "
                f"in 1 to {MAX_PURPOSE_LENGTH} characters a caller can type, such as "
                "'boarding'."
            )
        key = name_key(purpose)
        if key in seen:
            raise InvalidParameter(
                f"The purposes {seen[key]!r} and {purpose!r} of the 'purposes' setting differ "
                "only in case or Unicode form, so a reader cannot tell which one a consent "
                "or a search names. Keep one of them."
            )
        seen[key] = purpose
    return tuple(purposes)


#: The grammar of subject and event ids: 1 to 64 ASCII letters, digits, '.', '_'
#: and '-', starting with a letter or digit. Such an id is safe in a URL path, a
#: file name, a log line and a terminal, and has one spelling (no Unicode
#: look-alikes, no invisible or direction-changing characters). Index-file key
#: names (``facetrust:index:...``) can never collide with one.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_ID_LENGTH = 64
#: Longest event id: an event-only subject's id is ``<event id>.<12 hex digits>``.
MAX_EVENT_ID_LENGTH = MAX_ID_LENGTH - 13
MAX_DISPLAY_NAME_LENGTH = 200


def check_identifier(value: str, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    """``value`` if it follows the id grammar (:data:`ID_PATTERN`, at most ``max_length``).

    Raises
    ------
    InvalidParameter
        Anything else, with the grammar spelled out.
    """
    if not isinstance(value, str) or not (
        len(value) <= max_length and ID_PATTERN.fullmatch(value)
    ):
        raise InvalidParameter(
            f"A {what} is 1 to {max_length} characters: letters A-Z and a-z, digits, '.', "
            f"'_' and '-', starting with a letter or digit. Got {value!r}; choose an id "
            "like 'kofi-annan' or 'emp.00042'."
        )
    return value


def check_subject_id(subject_id: str) -> str:
    """``subject_id`` if it can name a subject (see :data:`ID_PATTERN`)."""
    return check_identifier(subject_id, "subject id")


def check_display_name(name: str | None) -> str | None:
    """``name`` in Unicode NFC with outer spaces removed, or None for no name.

    Raises
    ------
    InvalidParameter
        The name holds :func:`hidden_characters` (newlines, NUL, bidi
        overrides such as U+202E) or is over 200 characters long.
    """
    if name is None:
        return None
    cleaned = unicodedata.normalize("NFC", name).strip()
    hidden = hidden_characters(cleaned)
    if hidden:
        raise InvalidParameter(
            "A display name may not hold control or invisible formatting characters "
            f"(found {', '.join(hidden)}). Type the name as it should be shown."
        )
    if len(cleaned) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidParameter(
            f"A display name is at most {MAX_DISPLAY_NAME_LENGTH} characters. "
            f"Got {len(cleaned)}."
        )
    return cleaned or None


def check_k(k: object) -> int:
    """``k`` if it is an int >= 1 (the most candidates a search returns)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidParameter(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
    return k


def check_erasure_confirmation(subject_id: str, typed: str | None) -> None:
    """Refuse an erasure unless ``typed`` (a person's typed confirmation) is ``subject_id``.

    ``typed`` None means no confirmation was asked for (the caller confirmed
    some other way, e.g. the CLI's ``--yes``).

    Raises
    ------
    InvalidParameter
        ``typed`` differs from ``subject_id`` (surrounding spaces aside).
    """
    if typed is not None and typed.strip() != subject_id:
        got = "nothing" if not typed.strip() else repr(typed.strip())
        raise InvalidParameter(
            f"Erasing subject {subject_id!r} cannot be undone, so its id must be typed exactly "
            f"to confirm. Got {got}. Nothing was erased: type the id and try again."
        )
