"""Text a person reads (an audit log, a console page, a terminal): the characters
they would not see as they are, and how to show them anyway.

Control and format characters (newlines, terminal escape sequences, NUL, bidi
overrides such as U+202E, zero-width characters), line and paragraph
separators, private-use and unassigned code points can hide, reorder or forge
what a reader sees. The gallery refuses them in what it records
(:func:`facetrust.gallery.checks.check_text`); text that is shown anyway (a
refused request's fields, data recorded before that check) goes out through
:func:`printable_json` or :func:`shown`.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Any

__all__ = [
    "canonical", "hidden_characters", "is_whole_number", "printable_json", "name_key",
    "readable_path", "shown",
]


def _is_hidden(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")


#: Characters that may be hidden: ASCII controls, DEL and everything beyond ASCII
#: (printable ASCII never is); :func:`_is_hidden` decides.
_MAYBE_HIDDEN = re.compile(r"[\x00-\x1f\x7f-\U0010ffff]")
#: The same but for the ASCII controls, which JSON text escapes itself.
_MAYBE_HIDDEN_IN_JSON = re.compile(r"[\x7f-\U0010ffff]")


def canonical(text: str) -> str:
    """``text`` in Unicode NFC: one spelling of what a reader sees as the same text.

    ``"Jose\u0301"`` (an ``e`` then a combining accent, as macOS file names and
    some keyboards write it) and ``"Jos\u00e9"`` look alike; stored, compared or
    searched as given they would be two names, two case references or two purposes.
    """
    return unicodedata.normalize("NFC", text)


def name_key(name: str) -> str:
    """What decides whether two names (an actor, a reviewer) name the same person:
    ``name`` in Unicode NFKC, case folded, so ``"Alice"``, ``"ALICE"`` and the
    full-width ``"\uff41lice"`` are one name. Look-alikes from other scripts (a
    Cyrillic ``"\u0430"`` for the Latin ``"a"``) stay distinct."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def is_whole_number(text: str) -> bool:
    """Whether ``text`` is a whole number written in the digits 0 to 9 only.

    ``str.isdigit`` alone also accepts digits ``int`` refuses, such as the
    superscript ``²``, which would turn a clear refusal into a crash.
    """
    return text.isascii() and text.isdigit()


def hidden_characters(text: str) -> list[str]:
    """The characters of ``text`` a reader does not see as they are, as sorted ``U+XXXX``."""
    return sorted({f"U+{ord(c):04X}" for c in _MAYBE_HIDDEN.findall(text) if _is_hidden(c)})


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if not _is_hidden(char):
        return char
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a code point beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def printable_json(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)`` with letters as they are (``é``, not ``\\u00e9``)
    and every hidden character as a ``\\uXXXX`` escape: one line per value unless
    ``indent`` is given, safe to print to a terminal or split into lines."""
    text = json.dumps(value, ensure_ascii=False, **options)
    # json escapes ASCII controls in strings itself (the raw ones left are the
    # indentation's newlines); anything beyond ASCII can only be in a string
    return _MAYBE_HIDDEN_IN_JSON.sub(_escaped, text)


def readable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a person can read it: each byte of a file name that is not UTF-8 (on
    Linux a name is bytes; Python keeps such a byte as a surrogate escape, which
    cannot be printed, stored as text or sent as JSON) written ``\\xNN``, e.g.
    ``caf\\xe9.jpg`` for the Latin-1 name ``b'caf\\xe9.jpg'``; any other path as it is."""
    text = os.fspath(path)
    if text.isascii() or not any("\udc80" <= char <= "\udcff" for char in text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def shown(text: str, keep: str = "") -> str:
    """``text`` with each hidden character, but those in ``keep``, replaced by a
    visible ``⟨U+XXXX⟩``."""
    def marked(match: re.Match[str]) -> str:
        char = match.group()
        return f"\u27e8U+{ord(char):04X}\u27e9" if _is_hidden(char) and char not in keep else char

    return _MAYBE_HIDDEN.sub(marked, text)
