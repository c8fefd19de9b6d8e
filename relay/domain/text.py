"""Encoders for where a value goes (pure): a terminal line, a mail or HTTP header, a URI, a
spreadsheet cell. Event fields come from recipients and mail engines; none of them may
forge a line, a header or a formula wherever relay writes them.
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote

from yarl import URL

# C0 and C1 controls, DEL, line/paragraph separators and the bidirectional overrides that
# make a terminal line read differently from its bytes.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F)]
_UNSAFE += range(0x2066, 0x206A)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {
    c: _NAMED.get(chr(c)) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE
}


def one_line(text: str) -> str:
    """`text` with every control character escaped (`\\n`, `\\x1b`, `\\u202e`): one line,
    no terminal escapes, reading as its characters. Printable text comes back unchanged."""
    return text.translate(_ESCAPES)


# RFC 9110 visible ASCII and space, less "%": what a header value carries as is.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(value: str) -> str:
    """An id as an ASCII header value: UTF-8 and `%` percent-encoded, so every id the API
    accepts can be sent, and two ids never share a header value. Plain ASCII is unchanged."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_HEADER_SAFE)


# RFC 5322 atext (less "%", the escape character); "." is escaped too, since a dot-atom may
# not start or end with one or hold two in a row.
_ATEXT = "!#$&'*+-/=?^_`{|}~" + string.ascii_letters + string.digits


def msg_id_left(value: str) -> str:
    """An id as the left part of a `Message-ID` (`<left@domain>`): a dot-atom of ASCII."""
    return quote(value, safe=_ATEXT) or "-"


def ascii_domain(domain: str) -> str:
    """A domain for a header: IDNA (`xn--…`) when it is not ASCII."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return quote(domain, safe="")


def ascii_uri(url: str) -> str:
    """A URL as a `Location` must be (RFC 3986): IDNA host, percent-encoded path and query.
    ASCII URLs — nearly all — come back as they are, without parsing."""
    if url.isascii():
        return url
    return str(URL(url))


# OWASP CSV injection: a cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading `=`, `+`, `-`, `@`, tab or CR gets a `'`
    in front. A plain number (`-5`, `+1.5`) is left alone: it is data, not a formula."""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
