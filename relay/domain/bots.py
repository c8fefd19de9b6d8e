"""Machine opens and clicks (`is_bot`, `bot_reason`): flagged, never hidden.

Mail privacy proxies fetch every pixel and security gateways follow every link, so raw
opens and clicks overstate what people did. Each rule here is cheap (a regex, a network
test, a dict lookup) and says *why* in `Verdict.reason`; docs/explanation/bot-detection.md gives each rule's
source. Nothing here raises on what a client sends: a user agent or address that cannot
be parsed simply matches no rule. Event-loop thread only (no locks).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Verdict:
    is_bot: bool
    reason: str | None


HUMAN = Verdict(False, None)
GOOGLE_IMAGE_PROXY = Verdict(False, "google-image-proxy")  # a person, reading in Gmail
APPLE_MPP = Verdict(True, "apple-mpp")
SCANNER_UA = Verdict(True, "scanner-ua")
SCANNER_IP = Verdict(True, "scanner-ip")
HONEYPOT = Verdict(True, "honeypot")
HEAD = Verdict(True, "head")
BURST = Verdict(True, "burst")

# Apple owns 17.0.0.0/8; MPP's prefetcher sends the bare user agent below (docs/explanation/bot-detection.md).
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
MPP_USER_AGENT = "Mozilla/5.0"

# Case-insensitive substrings of user agents that are never a person at a browser or a mail
# client. "bot" is in the pattern below, not here: it must skip the Cubot phone brand.
SCANNER_UA_PARTS: tuple[str, ...] = (
    # self-declared crawlers, link checkers and link-preview fetchers
    "crawl",
    "spider",
    "slurp",
    "preview",
    "facebookexternalhit",
    "whatsapp",
    "linkcheck",
    "link checker",
    "checklink",
    "scanner",
    # HTTP libraries and command-line tools
    "python",
    "curl/",
    "wget",
    "go-http-client",
    "java/",
    "libwww",
    "httpclient",
    "node-fetch",
    "axios/",
    # headless browsers
    "headless",
    "phantomjs",
    # mail-security gateways, for the requests that do name themselves
    "barracuda",
    "mimecast",
    "proofpoint",
    "ironport",
    "safelinks",
)
# Microsoft Office fetches a link itself before handing it to the browser. Clicks only:
# Outlook for Windows also fetches *images* under these names when a person opens a message.
LINK_PREFETCH_UA_PARTS: tuple[str, ...] = ("microsoft office", "ms-office", "msoffice")

_SCANNER_UA = re.compile(
    "|".join([r"(?<!cu)bot", *map(re.escape, SCANNER_UA_PARTS)]), re.IGNORECASE
)
_LINK_PREFETCH_UA = re.compile("|".join(map(re.escape, LINK_PREFETCH_UA_PARTS)), re.IGNORECASE)
_GOOGLE_PROXY_UA = re.compile(r"googleimageproxy|ggpht\.com", re.IGNORECASE)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _parse_ip(value: object) -> Address | None:
    """An address from a client's IP string, or None if it is not one.

    IPv4-mapped IPv6 (`::ffff:17.1.2.3`, what a dual-stack socket reports for an IPv4 peer)
    becomes the IPv4 address, so ranges and memory match either spelling.
    """
    if not isinstance(value, str) or len(value) > 64:  # longest IPv6 text + zone id fits
        return None
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# Bounded memo tables for the per-hit parsing (an address string, a user agent): the same
# few values come back again and again, and parsing them is most of a verdict's cost.
MEMO_ENTRIES = 4096
MEMO_UA = 512  # longer user agents are checked every time, not remembered


def _memo_put(table: dict, key: object, value: object) -> None:
    if len(table) >= MEMO_ENTRIES:
        del table[next(iter(table))]  # oldest first out
    table[key] = value


_addresses: dict[object, Address | None] = {}


def _address(value: object) -> Address | None:
    """`_parse_ip`, memoised (event-loop thread only, like the rest of this module)."""
    if not isinstance(value, str):
        return None
    try:
        return _addresses[value]
    except KeyError:
        addr = _parse_ip(value)
        if len(value) <= 64:  # longer is never an address: not worth a slot
            _memo_put(_addresses, value, addr)
        return addr


# user agent -> (scanner, link prefetcher, Google image proxy)
_ua_kinds: dict[str, tuple[bool, bool, bool]] = {}


def _ua_kind(ua: str) -> tuple[bool, bool, bool]:
    kind = _ua_kinds.get(ua)
    if kind is None:
        kind = (
            _SCANNER_UA.search(ua) is not None,
            _LINK_PREFETCH_UA.search(ua) is not None,
            _GOOGLE_PROXY_UA.search(ua) is not None,
        )
        if len(ua) <= MEMO_UA:
            _memo_put(_ua_kinds, ua, kind)
    return kind


def _trim(table: OrderedDict, now: float, max_entries: int) -> None:
    """Drop expired entries from the oldest end, then the oldest past `max_entries`.

    Values are `(expires_at, ...)`. Entries are moved to the end when refreshed and every
    entry in a table lives equally long, so the oldest end is also the first to expire.
    """
    while table and (len(table) > max_entries or next(iter(table.values()))[0] < now):
        table.popitem(last=False)


class BotDetector:
    """Flags machine opens and clicks; remembers scanner IPs and recent clicks in memory.

    `scanner_networks` (CIDR strings) are ranges whose every open and click is a machine.
    None ship by default: no scanner vendor publishes the ranges it fetches from
    (docs/explanation/bot-detection.md). Invalid CIDRs or limits raise ValueError here, at configuration time.
    """

    def __init__(
        self,
        memory_s: float = 600.0,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
        scanner_networks: Iterable[str] = (),
    ) -> None:
        if memory_s < 0 or burst_s < 0 or max_entries < 1:
            raise ValueError("memory_s and burst_s must be >= 0 and max_entries >= 1")
        self._memory_s = memory_s
        self._burst_s = burst_s
        self._clock = clock
        self._max_entries = max_entries
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in scanner_networks)
        # ip -> (expires_at, verdict): addresses seen fetching the honeypot or sending HEAD.
        self._suspects: OrderedDict[Address, tuple[float, Verdict]] = OrderedDict()
        # message key -> (expires_at, ((url, at), ...)): its last two distinct links clicked.
        self._clicks: OrderedDict[object, tuple[float, tuple[tuple[str, float], ...]]] = (
            OrderedDict()
        )

    def open(self, ip: str | None, user_agent: str | None) -> Verdict:
        """The verdict on one fetch of the open pixel."""
        ua = _text(user_agent)
        addr = _address(ip)
        if ua == MPP_USER_AGENT and addr is not None and addr in APPLE_NETWORK:
            return APPLE_MPP
        # Gmail fetches images when the reader opens the message: a human open, so it is
        # decided before the scanner rules (Google's shared proxy IPs must not be tainted).
        if _ua_kind(ua)[2]:
            return GOOGLE_IMAGE_PROXY
        return self._machine(addr, ua, self._clock(), click=False) or HUMAN

    def click(
        self, ip: str | None, user_agent: str | None, message_key: tuple[str, str], url: str
    ) -> Verdict:
        """The verdict on one follow of a click link; message_key = (email, sendid).

        Flags: scanner UA (or none at all: browsers always send one) or IP range; an IP
        remembered as a scanner (honeypot or HEAD within memory_s); several DIFFERENT links
        of one message clicked within burst_s (the second and later are flagged "burst";
        the first cannot be known then and is not). Every click is recorded for the burst
        rule, flagged or not, so a scanner caught by one rule still exposes its others.
        """
        ua = _text(user_agent)
        now = self._clock()
        verdict = self._machine(_address(ip), ua, now, click=True)
        burst = self._record_click(message_key, _text(url), now)
        return verdict or (BURST if burst else HUMAN)

    def honeypot(self, ip: str | None) -> None:
        """Someone fetched the invisible honeypot link: remember ip for memory_s."""
        self._remember(ip, HONEYPOT)

    def head(self, ip: str | None) -> None:
        """A HEAD request for a click link (browsers send GET): remember ip for memory_s."""
        self._remember(ip, HEAD)

    def _machine(self, addr: Address | None, ua: str, now: float, click: bool) -> Verdict | None:
        scanner, prefetch, _ = _ua_kind(ua)
        if scanner or (click and (not ua or prefetch)):
            return SCANNER_UA
        if addr is None:
            return None
        if any(addr in net for net in self._networks):
            return SCANNER_IP
        entry = self._suspects.get(addr)
        if entry is not None and entry[0] >= now:
            return entry[1]
        return None

    def _remember(self, ip: str | None, verdict: Verdict) -> None:
        addr = _address(ip)
        if addr is None:
            return
        now = self._clock()
        self._suspects.pop(addr, None)  # re-insert at the end: newest
        self._suspects[addr] = (now + self._memory_s, verdict)
        _trim(self._suspects, now, self._max_entries)

    def _record_click(self, key: object, url: str, now: float) -> bool:
        """Record a click; True if another link of the message was clicked within burst_s.

        Only the two most recent distinct links are kept: whatever link comes next, the
        latest *other* link is one of them.
        """
        _, recent = self._clicks.pop(key, (0.0, ()))
        other = next((at for u, at in recent if u != url), None)
        is_burst = other is not None and now - other <= self._burst_s
        kept = ((url, now), *((u, at) for u, at in recent if u != url))[:2]
        self._clicks[key] = (now + self._burst_s, kept)
        _trim(self._clicks, now, self._max_entries)
        return is_burst
