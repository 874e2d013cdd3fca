"""The request target (path and query) read as the original Go server reads it.

Non-browser clients (Python's websocket-client, several mobile websocket
libraries, hand-written ones) send `/ws?username=Петя` with the UTF-8 bytes
raw instead of percent-encoded. The original keeps them: Go's `net/url` turns
`%XX` and raw bytes alike into bytes, and the bytes are UTF-8 text. WSGI
servers hand the target over as Latin-1 text (one character per byte), and
two of ours do worse before the app sees it: gunicorn refuses bytes over 0x7F
in a request line (400), and gevent splits its request line on any Unicode
whitespace, which in Latin-1 includes 0x85 and 0xA0 — bytes of everyday
Cyrillic letters ("Р" is D0 A0, "х" is D1 85). So app/server.py
percent-encodes those bytes as each request line is read
(`escape_raw_bytes`), which every server parses, and which decodes to the
very same bytes; the app then reads the query here and the path with
`text`, both bytes first, UTF-8 last.

Bytes that are not UTF-8 become U+FFFD, one per byte, as in the original's
JSON (Go's encoding/json replaces each invalid byte; Python's "replace"
would merge some). The original spells that character as the escape
`\\ufffd` in its JSON and we send the character itself: the same string to
every JSON parser, as with the other escapes Go's encoder chooses.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_RAW_BYTE = re.compile(rb"[\x80-\xff]")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def escape_raw_bytes(request_line: bytes) -> bytes:
    """The request line with every byte over 0x7F percent-encoded (`%D0%9F` for raw `П`)."""
    return _RAW_BYTE.sub(lambda byte: b"%%%02X" % byte[0][0], request_line)


def utf8(raw: bytes) -> str:
    """`raw` as UTF-8 text; each byte that is not UTF-8 becomes U+FFFD, as the original sends it."""
    return _ESCAPED_BYTE.sub("\ufffd", raw.decode("utf-8", "surrogateescape"))


def text(wsgi_text: str) -> str:
    """A WSGI string (Latin-1, one character per byte, e.g. PATH_INFO) as the original reads it."""
    return utf8(wsgi_text.encode("latin-1"))


def query_values(query: bytes) -> dict[str, str]:
    """Each key's first value, as Go's `url.ParseQuery` and `Values.Get` give them.

    Pairs are split at `&`, `+` is a space, `%XX` and raw bytes are bytes; a
    pair holding a malformed escape (`%zz`) is skipped, as Go skips it.
    """
    values: dict[str, str] = {}
    for pair in query.split(b"&"):
        if not pair:
            continue
        key, _, value = pair.partition(b"=")
        if _BAD_ESCAPE.search(pair):
            continue
        values.setdefault(_unescape(key), _unescape(value))
    return values


def _unescape(part: bytes) -> str:
    return utf8(unquote_to_bytes(part.replace(b"+", b" ")))
