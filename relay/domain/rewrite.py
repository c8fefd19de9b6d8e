"""HTML rewriting for `POST /v1/rewrite`: wrap links, add an open pixel and a honeypot.

`html.parser.HTMLParser` is used only to learn *where* the tags and text are; the output is
the input string with a few spans replaced, so whatever is not rewritten (comments, doctype,
entities, odd quoting, broken markup) comes out byte for byte. A tag whose attributes cannot
be located with certainty is left alone: an untracked link is better than a broken one.

The tokenizer is only ever fed, never closed: unpatched `close()` is quadratic on unterminated
tags and comments (CVE-2025-6069: 100 kB of "<a " took 90 s on 3.11.7), and on 3.11 it reads
everything after a second stray `&#` as text. What `feed()` cannot get past is an unterminated
tag, comment or script, which HTML5 makes swallow the rest of the document: that is left alone.

Outlook desktop renders only what is inside conditional comments (`<!--[if mso]>…<![endif]-->`),
where newsletters draw their "bulletproof" buttons in VML: `<v:roundrect href="…">`. Those
comments are scanned like the document, and an `href` on a VML element (`v:roundrect`,
`v:rect`, `v:oval`, `v:shape`, …) is wrapped like an `<a href>`; the comment's own syntax is
kept as it was. Ordinary comments are left alone.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from html import escape, unescape
from html.parser import HTMLParser
from typing import NamedTuple

MARKER = "##unsubscribetag##"
_MARKER_RE = re.compile(re.escape(MARKER), re.IGNORECASE | re.ASCII)
PIXEL = (
    '<img src="{}" width="1" height="1" alt="" '
    'style="display:block;border:0;width:1px;height:1px" />'
)
# Invisible to people; link scanners follow every href, so a hit on it marks a bot.
HONEYPOT = '<a href="{}" style="display:none!important" aria-hidden="true" tabindex="-1"></a>'

_SPACE = " \t\n\r\f"
_C0_AND_SPACE = "".join(map(chr, range(33)))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_UNQUOTED_UNSAFE = frozenset(_SPACE + "\"'=<>`")
_URL_STOP = frozenset(_SPACE + "<>\"'")  # where a bare URL in text ends
_TRAILING = ".,:!?)]"  # sentence punctuation after a URL in text is not part of it
# Each resume of the tokenizer re-copies the rest of the input; this bounds that work.
_MAX_RESUMES = 100
_CONDITIONAL = re.compile(r"\s*\[if\b", re.IGNORECASE)  # `<!--[if mso]>` (data after `<!--`)
_LINK_TAGS = frozenset({"a", "area"})


@dataclass(frozen=True, slots=True)
class Rewritten:
    html: str
    list_unsubscribe: str | None  # the URL for List-Unsubscribe's <...>; None: no marker


class _Site(NamedTuple):
    """One span of the input to replace (or, with start == end, a place to insert)."""

    start: int
    end: int
    kind: str  # the `link` kind
    url: str | None  # the `link` url
    fmt: str = "{}"  # what the escaped tracking URL is written into
    bare: bool = False  # an unquoted attribute value: quote it if the new value needs quotes
    order: int = 1  # ties at one position: the honeypot first, the pixel last


def _clean_url(value: str) -> str:
    """A URL as a browser reads an href: outer controls and spaces stripped, tabs and newlines
    removed (WHATWG URL parsing), so what is signed is what a click would have opened."""
    return value.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)


def _is_http(url: str) -> bool:
    head = url[:8].lower()
    return (head.startswith("http://") and len(url) > 7) or (
        head.startswith("https://") and len(url) > 8
    )


def _has_marker(value: str) -> bool:
    head = value[: len(MARKER)]
    return head.isascii() and head.lower() == MARKER


def _href_link(value: str, prefixes: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(kind, url) for an unescaped href value, or None to leave it alone."""
    url = _clean_url(value)
    if _has_marker(url):
        landing = _clean_url(url[len(MARKER) :])
        return "unsub", landing if _is_http(landing) else None
    if _is_http(url) and not url.startswith(prefixes):
        return "click", url
    return None


def _attribute_spans(raw: str) -> list[tuple[str, int, int, str | None]]:
    """(lowercased name, value start, value end, quote) for each attribute of a start tag's
    source, following HTML5 tokenization; quote is '"', "'", "" (unquoted) or None (no value)."""
    n = len(raw) - 1  # the closing '>'
    i = 1
    while i < n and raw[i] not in _SPACE and raw[i] != "/":
        i += 1
    spans: list[tuple[str, int, int, str | None]] = []
    while True:
        while i < n and (raw[i] in _SPACE or raw[i] == "/"):
            i += 1
        if i >= n:
            return spans
        start, i = i, i + 1  # a first '=' belongs to the name
        while i < n and raw[i] not in _SPACE and raw[i] not in "/=":
            i += 1
        name = raw[start:i].lower()
        j = i
        while j < n and raw[j] in _SPACE:
            j += 1
        if j >= n or raw[j] != "=":
            spans.append((name, i, i, None))
            i = j
            continue
        j += 1
        while j < n and raw[j] in _SPACE:
            j += 1
        if j < n and raw[j] in "\"'":
            quote = raw[j]
            end = raw.find(quote, j + 1, n)
            if end < 0:
                end = n
            spans.append((name, j + 1, end, quote))
            i = end + 1
        else:
            i = j
            while i < n and raw[i] not in _SPACE:
                i += 1
            spans.append((name, j, i, ""))


class _Scanner(HTMLParser):
    """Collects the sites to rewrite and where the body starts and ends, as input offsets."""

    def __init__(self, html: str, prefixes: tuple[str, ...], vml: bool = False) -> None:
        super().__init__(convert_charrefs=False)
        self.html = html
        self.prefixes = prefixes
        self.vml = vml  # inside a conditional comment: VML elements' hrefs are links too
        self.sites: list[_Site] = []
        self.body_open: int | None = None  # just after the first <body ...>
        self.body_close: int | None = None  # at the last </body>
        self.doctype_end: int | None = None  # just after a doctype that starts the document
        self._newlines = [m.start() for m in re.finditer("\n", html)]
        self._lead = len(html) - len(html.lstrip(_SPACE + "\ufeff"))  # leading blank and BOM
        self._base = 0  # input offset where the current feed began
        self._base_line = 0  # newlines before _base
        self._text_start: int | None = None  # start of the text run being read
        self._last_start = 0  # offset of the last start tag

    def here(self) -> int:
        """The input offset of the token being handled (or where tokenizing stopped)."""
        line, col = self.getpos()
        if line == 1:
            return self._base + col
        return self._newlines[self._base_line + line - 2] + 1 + col

    def scan(self) -> int:
        """Tokenize all it safely can; return the offset where it stopped (len(html) if all)."""
        html, n = self.html, len(self.html)
        pending = html
        for _ in range(_MAX_RESUMES):
            before = self.here()
            try:
                self.feed(pending)
                failed = False
            except Exception:  # e.g. AssertionError on "<![ " (3.11)
                failed = True
            pending = ""
            stop = self.here()
            if stop >= n or self.cdata_elem:
                break
            if stop > before and not failed:
                continue  # it stopped after a stray "&#": go on from there
            if not (failed or html[stop] == "&" or stop == n - 1):
                break  # an unterminated tag or comment: per HTML5 it swallows the rest
            # One character the tokenizer cannot get past (a stray "&#..." or "<![ "): it is text.
            self._text_at(stop)
            self.reset()
            self._base, self._base_line = stop + 1, bisect_left(self._newlines, stop + 1)
            pending = html[stop + 1 :]
        stop = self.here()
        self._end_text(stop)
        return self._last_start if self.cdata_elem else min(stop, n)

    # Tokens. Text is gathered into runs between other tokens so a marker URL with an `&amp;`
    # in it (which the tokenizer splits) is seen whole.

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pos = self.here()
        self._end_text(pos)
        self._last_start = pos
        raw = self.get_starttag_text() or ""
        if tag == "body" and self.body_open is None:
            self.body_open = pos + len(raw)
        if (tag in _LINK_TAGS or (self.vml and tag.startswith("v:"))) and any(
            name == "href" for name, _ in attrs
        ):
            self._hrefs(pos, raw, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        pos = self.here()
        self._end_text(pos)
        if tag == "body":
            self.body_close = pos

    def handle_data(self, data: str) -> None:
        if self.cdata_elem:  # <script> or <style> content
            self._end_text(self.here())
        else:
            self._text_at(self.here())

    def _reference(self, name: str) -> None:
        self._text_at(self.here())

    handle_entityref = handle_charref = _reference

    def handle_decl(self, decl: str) -> None:
        pos = self.here()
        self._end_text(pos)
        if pos == self._lead and decl[:7].lower() == "doctype":
            self.doctype_end = self.html.find(">", pos) + 1 or None

    def _other(self, data: str) -> None:
        self._end_text(self.here())

    handle_pi = unknown_decl = _other

    def handle_comment(self, data: str) -> None:
        """A conditional comment is markup for Outlook: scan it as such, in place."""
        pos = self.here()
        self._end_text(pos)
        if not _CONDITIONAL.match(data):
            return
        inner = _Scanner(data, self.prefixes, vml=True)
        inner.scan()
        at = pos + 4  # after "<!--"
        self.sites.extend(s._replace(start=s.start + at, end=s.end + at) for s in inner.sites)

    def _hrefs(self, pos: int, raw: str, attrs: list[tuple[str, str | None]]) -> None:
        """Sites for the tag's http(s) and unsubscribe hrefs, if its attributes are certain."""
        spans = _attribute_spans(raw)
        found = [(name, None if q is None else unescape(raw[s:e])) for name, s, e, q in spans]
        if found != attrs:
            return  # the tokenizer read the tag differently: not certain where the href is
        for name, start, end, quote in spans:
            if name != "href" or quote is None:
                continue
            link = _href_link(unescape(raw[start:end]), self.prefixes)
            if link is not None:
                self.sites.append(_Site(pos + start, pos + end, *link, bare=quote == ""))

    def _text_at(self, pos: int) -> None:
        if self._text_start is None:
            self._text_start = pos

    def _end_text(self, end: int) -> None:
        """Sites for the unsubscribe markers in the text run that ends here."""
        start, self._text_start = self._text_start, None
        if start is None:
            return
        text = self.html[start:end]
        for match in _MARKER_RE.finditer(text):
            i = match.end()
            while i < len(text) and text[i] not in _URL_STOP:
                i += 1
            raw_url = text[match.end() : i].rstrip(_TRAILING)
            url = _clean_url(unescape(raw_url))
            if not _is_http(url):  # a bare marker: the text after it stays
                url, raw_url = None, ""
            self.sites.append(
                _Site(start + match.start(), start + match.end() + len(raw_url), "unsub", url)
            )


def _render(site: _Site, made: str) -> str:
    value = escape(made)
    if site.bare and (not value or any(c in _UNQUOTED_UNSAFE for c in value)):
        value = f'"{value}"'
    return site.fmt.format(value)


def rewrite(
    html: str, link: Callable[[str, str | None], str], tracking_prefixes: tuple[str, ...]
) -> Rewritten:
    """`link(kind, url)` returns a signed tracking URL: kind is "click" (url = the target), "open"
    (url None), "unsub" (url = landing page or None), "honeypot" (url None). `tracking_prefixes`
    are URL prefixes of already-wrapped links (e.g. "https://relay.example.com/c/", ".../o/",
    ".../u/", ".../s/") to leave alone.

    Links are made in document order. A click `link` that returns its url unchanged (a target
    it will not sign) leaves the href exactly as it was.
    """
    scanner = _Scanner(html, tracking_prefixes)
    end = scanner.scan()
    honeypot_at = scanner.body_open
    if honeypot_at is None:  # not before a leading doctype: that would mean quirks mode
        honeypot_at = scanner.doctype_end or 0
    pixel_at = end if scanner.body_close is None else scanner.body_close
    sites = [
        *scanner.sites,
        _Site(honeypot_at, honeypot_at, "honeypot", None, HONEYPOT, order=0),
        _Site(pixel_at, pixel_at, "open", None, PIXEL, order=2),
    ]
    sites.sort(key=lambda s: (s.start, s.end, s.order))
    out: list[str] = []
    done = 0
    list_unsubscribe = None
    for site in sites:
        if site.start < done:
            continue  # overlaps the site before (cannot happen with sane input; be safe)
        made = link(site.kind, site.url)
        if site.kind == "click" and made == site.url:
            continue
        if site.kind == "unsub" and list_unsubscribe is None:
            list_unsubscribe = made
        out.append(html[done : site.start])
        out.append(_render(site, made))
        done = site.end
    out.append(html[done:])
    return Rewritten("".join(out), list_unsubscribe)
