"""Text taken from files, made safe to print on one line (no heavy imports).

DICOM tags, file names and third-party error messages can hold terminal escape sequences,
control characters and line breaks. `printable` removes them so that a SeriesDescription
cannot recolour, clear or rewrite a user's terminal, and an error stays one line.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["printable"]

# ESC-introduced sequences: CSI (ESC [ … final), OSC / DCS / SOS / PM / APC strings (ended
# by BEL or ESC \, or by the end of the text), then any other two-byte ESC sequence. The
# 8-bit CSI (U+009B) is handled the same way; other C1 controls are dropped below.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
# Line breaks and tabs become one space; Unicode line/paragraph separators too.
_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
# Everything else that is not printable: C0, DEL, C1, bidi overrides, lone surrogates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _visible(c: str) -> str:
    """A non-ASCII character as shown: spaces become " ", invisible ones disappear."""
    if c.isprintable():
        return c
    category = unicodedata.category(c)
    if category.startswith("Z"):
        return " "  # no-break, thin, ideographic … spaces
    return "" if category in ("Cc", "Cf", "Cs", "Co", "Cn") else c


def printable(text: object, *, limit: int | None = None) -> str:
    """``str(text)`` on one line without escape sequences or control characters.

    Args:
        text: anything; ``str()`` is applied first.
        limit: cut the result to this many characters (ending in "…") when given.

    Returns:
        The text with ESC sequences removed, line breaks and tabs turned into single
        spaces, other C0/C1 controls, DEL, bidirectional overrides, lone surrogates and
        other invisible characters (Unicode Cf, Co, Cn: soft hyphens, zero-width
        characters …) removed, other Unicode spaces turned into " ", and surrounding
        whitespace stripped: every character left is ``str.isprintable()``.

    >>> printable("T1\\x1b[2J\\x1b[31m AX\\nfat sat\\x07")
    'T1 AX fat sat'
    """
    s = _ESCAPES.sub("", str(text))
    s = _BREAKS.sub(" ", s)
    s = _CONTROLS.sub("", s)
    if not s.isascii():
        s = "".join(_visible(c) for c in s)
    s = s.strip()
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 0)].rstrip() + "…"
    return s
