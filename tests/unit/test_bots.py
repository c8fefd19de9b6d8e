"""Bot detection (`is_bot`/`bot_reason`): each rule flags, people never do."""

from __future__ import annotations

import pytest

from relay.domain.bots import BotDetector, Verdict

HOME_V4 = "203.0.113.7"  # documentation ranges: stand-ins for residential addresses
HOME_V6 = "2001:db8:1234::42"
APPLE_IP = "17.58.101.9"
MSG = ("ann@example.com", "send-1")

HUMAN = Verdict(False, None)

BROWSERS = [
    # Chrome, Windows
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    # Edge, Windows
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    # Firefox, Windows and Linux
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    # Safari, macOS and iPhone
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    # Chrome on Android, and on a Cubot phone (a brand that contains "bot")
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/110.0.0.0 Mobile Safari/537.36",
    # Opera
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0",
]

MAIL_CLIENT_IMAGE_FETCHERS = [
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17531; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1",
]

SCANNERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Wget/1.21.4",
    "Go-http-client/1.1",
    "Java/17.0.2",
    "Apache-HttpClient/4.5.14 (Java/17.0.2)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/122.0.6261.94 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
    "PhantomJS/2.1.1 Safari/538.1",
    "MicrosoftPreview/2.0 (+https://aka.ms/MicrosoftPreview)",
    "W3C-checklink/5.0.0 libwww-perl/6.72",
    "LinkChecker/10.2",
    # illustrative: most gateways borrow a browser user agent instead of naming themselves
    "Barracuda Sentinel (EE)",
    "Mimecast URL Protect",
    "Proofpoint URL Defense",
    "Cisco IronPort WSA",
    "SafeLinks/1.0",
]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def det(clock) -> BotDetector:
    return BotDetector(memory_s=600.0, burst_s=1.0, clock=clock)


# -- people -------------------------------------------------------------------------------


@pytest.mark.parametrize("ua", BROWSERS)
@pytest.mark.parametrize("ip", [HOME_V4, HOME_V6])
def test_a_person_opening_and_clicking_one_link_is_never_flagged(det, clock, ua, ip):
    assert det.open(ip, ua) == HUMAN
    clock.advance(12.0)
    assert det.click(ip, ua, MSG, "https://shop.example.com/sale") == HUMAN
    clock.advance(30.0)  # back to the message, a second link: no burst half a minute later
    assert det.click(ip, ua, MSG, "https://shop.example.com/shoes") == HUMAN


@pytest.mark.parametrize("ua", MAIL_CLIENT_IMAGE_FETCHERS)
def test_mail_clients_fetching_the_pixel_are_people(det, ua):
    assert det.open(HOME_V4, ua) == HUMAN


def test_a_double_click_on_one_link_is_not_a_burst(det, clock):
    ua = BROWSERS[0]
    assert det.click(HOME_V4, ua, MSG, "https://a.example/") == HUMAN
    clock.advance(0.2)
    assert det.click(HOME_V4, ua, MSG, "https://a.example/") == HUMAN


# -- Apple Mail Privacy Protection and Google's image proxy --------------------------------


def test_apple_mpp_is_the_bare_user_agent_from_apple_addresses(det):
    assert det.open(APPLE_IP, "Mozilla/5.0") == Verdict(True, "apple-mpp")
    assert det.open("::ffff:17.1.2.3", "Mozilla/5.0") == Verdict(True, "apple-mpp")


@pytest.mark.parametrize(
    ("ip", "ua"),
    [
        (HOME_V4, "Mozilla/5.0"),  # the bare user agent alone is not enough
        ("18.0.0.1", "Mozilla/5.0"),  # just outside 17/8
        (APPLE_IP, BROWSERS[4]),  # Safari on Apple's own network
        (APPLE_IP, "Mozilla/5.0 (Macintosh)"),
        (None, "Mozilla/5.0"),
    ],
)
def test_apple_mpp_needs_both_signals(det, ip, ua):
    assert det.open(ip, ua) == HUMAN


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "Mozilla/5.0 GoogleImageProxy",
    ],
)
def test_google_image_proxy_is_a_person_reading_in_gmail(det, ua):
    assert det.open("66.249.84.10", ua) == Verdict(False, "google-image-proxy")


def test_google_image_proxy_wins_over_a_remembered_ip(det):
    det.honeypot("66.249.84.10")  # shared proxy addresses must not taint Gmail readers
    ua = "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"
    assert det.open("66.249.84.10", ua) == Verdict(False, "google-image-proxy")


# -- scanner user agents -----------------------------------------------------------------


@pytest.mark.parametrize("ua", SCANNERS)
def test_scanner_user_agents_are_flagged_on_opens_and_clicks(det, ua):
    assert det.open(HOME_V4, ua) == Verdict(True, "scanner-ua")
    assert det.click(HOME_V4, ua, MSG, "https://a.example/") == Verdict(True, "scanner-ua")


@pytest.mark.parametrize(
    "ua",
    [
        "Microsoft Office Existence Discovery",
        "Microsoft Office Protocol Discovery",
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; Trident/7.0; ms-office)",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17531; Pro)",
    ],
)
def test_office_link_prefetch_is_a_machine_click(det, ua):
    assert det.click(HOME_V4, ua, MSG, "https://a.example/") == Verdict(True, "scanner-ua")


@pytest.mark.parametrize("ua", [None, "", "   "])
def test_a_click_without_a_user_agent_is_a_scanner_but_an_open_is_not(det, ua):
    assert det.click(HOME_V4, ua, MSG, "https://a.example/") == Verdict(True, "scanner-ua")
    assert det.open(HOME_V4, ua) == HUMAN


# -- scanner networks --------------------------------------------------------------------


def test_scanner_networks_are_empty_by_default(det):
    assert det.click("40.92.1.1", BROWSERS[0], MSG, "https://a.example/") == HUMAN


def test_configured_scanner_networks_flag_opens_and_clicks(clock):
    det = BotDetector(clock=clock, scanner_networks=["198.51.100.0/24", "2001:db8:5::/48"])
    scanner = Verdict(True, "scanner-ip")
    assert det.click("198.51.100.200", BROWSERS[0], MSG, "https://a.example/") == scanner
    assert det.open("2001:db8:5::9", BROWSERS[0]) == scanner
    assert det.open("::ffff:198.51.100.1", BROWSERS[0]) == scanner
    assert det.open("198.51.101.1", BROWSERS[0]) == HUMAN
    assert det.open(HOME_V6, BROWSERS[0]) == HUMAN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scanner_networks": ["not-a-network"]},
        {"memory_s": -1.0},
        {"burst_s": -0.5},
        {"max_entries": 0},
    ],
)
def test_bad_configuration_is_refused_up_front(kwargs):
    with pytest.raises(ValueError):
        BotDetector(**kwargs)


# -- honeypot and HEAD memory ------------------------------------------------------------


@pytest.mark.parametrize(("mark", "reason"), [("honeypot", "honeypot"), ("head", "head")])
def test_a_remembered_scanner_ip_is_flagged_until_memory_expires(det, clock, mark, reason):
    getattr(det, mark)(HOME_V4)
    flagged = Verdict(True, reason)
    clock.advance(599.0)
    assert det.click(HOME_V4, BROWSERS[0], MSG, "https://a.example/") == flagged
    assert det.open(HOME_V4, BROWSERS[0]) == flagged
    assert det.click(HOME_V6, BROWSERS[0], MSG, "https://a.example/") == HUMAN
    clock.advance(1.0)  # exactly memory_s: still remembered
    assert det.open(HOME_V4, BROWSERS[0]) == flagged
    clock.advance(0.01)
    assert det.open(HOME_V4, BROWSERS[0]) == HUMAN


def test_a_new_sighting_refreshes_the_memory_and_its_reason(det, clock):
    det.honeypot(HOME_V4)
    clock.advance(500.0)
    det.head("::ffff:" + HOME_V4)  # the same address, spelled as a dual-stack socket would
    clock.advance(500.0)
    assert det.open(HOME_V4, BROWSERS[0]) == Verdict(True, "head")


def test_memory_is_bounded_dropping_the_oldest(clock):
    det = BotDetector(clock=clock, max_entries=3)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        det.honeypot(ip)
    det.honeypot("192.0.2.1")  # refreshed: now the newest
    det.honeypot("192.0.2.4")  # evicts the oldest, .2
    assert det.open("192.0.2.2", BROWSERS[0]) == HUMAN
    for ip in ("192.0.2.1", "192.0.2.3", "192.0.2.4"):
        assert det.open(ip, BROWSERS[0]) == Verdict(True, "honeypot")
    for n in range(1000):
        det.head(f"10.0.{n // 256}.{n % 256}")
    assert len(det._suspects) == 3


def test_expired_memory_is_dropped_not_kept(det, clock):
    for n in range(50):
        det.honeypot(f"192.0.2.{n}")
    clock.advance(601.0)
    det.honeypot(HOME_V4)
    assert len(det._suspects) == 1


@pytest.mark.parametrize("ip", [None, "", "not-an-ip", "1.2.3.4:80", "x" * 10_000])
def test_marking_an_unparseable_ip_is_a_no_op(det, ip):
    det.honeypot(ip)
    det.head(ip)
    assert len(det._suspects) == 0


# -- bursts ------------------------------------------------------------------------------


def test_different_links_clicked_within_burst_s_flag_the_second_and_later(det, clock):
    ua, burst = BROWSERS[0], Verdict(True, "burst")
    assert det.click(HOME_V4, ua, MSG, "https://a.example/1") == HUMAN
    clock.advance(0.5)
    assert det.click(HOME_V4, ua, MSG, "https://a.example/2") == burst
    clock.advance(0.9)  # 1.4 s after the first, 0.9 s after the second: still a burst
    assert det.click("198.51.100.9", ua, MSG, "https://a.example/3") == burst
    clock.advance(1.0)  # exactly burst_s
    assert det.click(HOME_V4, ua, MSG, "https://a.example/1") == burst
    clock.advance(1.01)
    assert det.click(HOME_V4, ua, MSG, "https://a.example/2") == HUMAN


def test_a_burst_is_per_message(det, clock):
    ua = BROWSERS[0]
    assert det.click(HOME_V4, ua, MSG, "https://a.example/1") == HUMAN
    clock.advance(0.1)
    assert det.click(HOME_V4, ua, ("ann@example.com", "send-2"), "https://a.example/2") == HUMAN
    assert det.click(HOME_V4, ua, ("bob@example.com", "send-1"), "https://a.example/3") == HUMAN


def test_a_repeat_of_the_last_link_still_sees_the_link_before_it(det, clock):
    ua = BROWSERS[0]
    det.click(HOME_V4, ua, MSG, "https://a.example/1")
    clock.advance(0.2)
    assert det.click(HOME_V4, ua, MSG, "https://a.example/2").reason == "burst"
    clock.advance(0.2)
    assert det.click(HOME_V4, ua, MSG, "https://a.example/2").reason == "burst"


def test_clicks_flagged_by_another_rule_still_count_towards_a_burst(det, clock):
    assert det.click(HOME_V4, "curl/8.4.0", MSG, "https://a.example/1").reason == "scanner-ua"
    clock.advance(0.3)
    assert det.click(HOME_V4, BROWSERS[0], MSG, "https://a.example/2").reason == "burst"


def test_another_rule_wins_over_burst(det, clock):
    det.click(HOME_V4, BROWSERS[0], MSG, "https://a.example/1")
    clock.advance(0.3)
    assert det.click(HOME_V4, "", MSG, "https://a.example/2").reason == "scanner-ua"


def test_burst_memory_is_bounded(clock):
    det = BotDetector(clock=clock, max_entries=2)
    ua = BROWSERS[0]
    for sendid in ("s1", "s2", "s3"):
        det.click(HOME_V4, ua, ("ann@example.com", sendid), "https://a.example/1")
    assert len(det._clicks) == 2
    # s1 was forgotten, so its second link cannot be seen as a burst any more
    assert det.click(HOME_V4, ua, ("ann@example.com", "s1"), "https://a.example/2") == HUMAN
    assert det.click(HOME_V4, ua, ("ann@example.com", "s3"), "https://a.example/2").is_bot


def test_expired_clicks_are_dropped(det, clock):
    for n in range(50):
        det.click(HOME_V4, BROWSERS[0], ("ann@example.com", f"s{n}"), "https://a.example/")
    clock.advance(1.5)
    det.click(HOME_V4, BROWSERS[0], MSG, "https://a.example/")
    assert len(det._clicks) == 1


# -- garbage in --------------------------------------------------------------------------

GARBAGE = [
    None,
    "",
    " ",
    "not-an-ip",
    "999.1.1.1",
    "1.2.3.4:80",
    "17.0.0.1 ",
    "::ffff:zz",
    "fe80::1%eth0",
    "\x00\x01\x02",
    "\ud800",
    "ｍｏｚｉｌｌａ",
    "x" * 100_000,
    "Mozilla/5.0" * 2000,
]


@pytest.mark.parametrize("junk", GARBAGE)
def test_garbage_never_raises(det, junk):
    assert isinstance(det.open(junk, junk), Verdict)
    assert isinstance(det.click(junk, junk, (str(junk), str(junk)), str(junk)), Verdict)
    det.honeypot(junk)
    det.head(junk)


def test_non_string_input_does_not_raise(det):
    assert det.open(17, b"Mozilla/5.0") == HUMAN  # type: ignore[arg-type]
    assert det.click(b"1.2.3.4", 5, MSG, None).reason == "scanner-ua"  # type: ignore[arg-type]


def test_the_default_clock_works():
    det = BotDetector()
    det.head(HOME_V4)
    assert det.open(HOME_V4, BROWSERS[0]) == Verdict(True, "head")


def test_open_and_click_never_raise_on_arbitrary_strings():
    import hypothesis
    from hypothesis import strategies as st

    text = st.one_of(st.none(), st.text(), st.text(alphabet="0123456789abcdef.:%/ "))
    det = BotDetector(clock=FakeClock(), max_entries=50)

    @hypothesis.settings(max_examples=400, deadline=None, database=None)
    @hypothesis.given(ip=text, ua=text, email=st.text(), sendid=st.text(), url=st.text())
    def check(ip, ua, email, sendid, url):
        det.honeypot(ip)
        det.head(ip)
        assert isinstance(det.open(ip, ua), Verdict)
        verdict = det.click(ip, ua, (email, sendid), url)
        assert isinstance(verdict, Verdict)
        assert verdict.is_bot or verdict.reason is None

    check()
