"""Text people give Keyrack to show to others: no control characters.

A name (of a key, an organization, a location, a user, an app, a client…), an
email address, a reason or a URL is shown in pages, terminals, logs and email
headers. A control character there does something instead of being read: a CR LF
breaks an email header, an ESC sequence rewrites a terminal, a line separator
forges a log line. So such text refuses C0 controls (U+0000 to U+001F, tab and line
feed included), DEL (U+007F), C1 controls (U+0080 to U+009F) and the Unicode line and
paragraph separators (U+2028, U+2029); and the bidirectional embedding, override and
isolate controls (U+202A to U+202E, U+2066 to U+2069), which make a name display as
another one ("Trojan Source"). A paragraph (a description) may hold line breaks and
tabs, and nothing else of these.
"""

from __future__ import annotations

import re

from keyrack.errors import InvalidInput

_BIDI = "\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_CONTROL_BUT_LINE_BREAKS = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")


def check_plain(value: str, what: str, *, paragraph: bool = False) -> str:
    """``value`` unchanged when it holds no control character; else ``InvalidInput`` naming
    the first one found (by code point: the value itself is not echoed).

    With ``paragraph``, line feeds, carriage returns and tabs are allowed.
    """
    found = (_CONTROL_BUT_LINE_BREAKS if paragraph else _CONTROL).search(value)
    if found:
        raise InvalidInput(
            f"{what} must not contain control characters (found U+{ord(found.group()):04X})"
        )
    return value
