"""Every console page in chromium: no console errors, no CSP violations, no inline script;
the live tail; the event page."""

from __future__ import annotations

from urllib.parse import urlsplit

from .conftest import event, http_destination, pull_destination, route_all, wait_until


def test_live_tail_shows_a_new_attempt_without_a_reload(browser, start_relay, make_receiver):
    receiver = make_receiver()
    relay = start_relay(http_destination("crm", receiver.url) + route_all("crm"))
    browser.base = relay.url
    relay.post_events([event(1)])
    wait_until(lambda: len(receiver.hits) == 1, 10, "a first delivery")
    browser.open("/console/tail")
    wait_until(lambda: len(browser.css_all("ul#tail li.line")) >= 1, 5, "the recent lines")
    wait_until(lambda: browser.text("#tail-status").startswith("Live"), 5, "the stream to open")

    [new] = relay.post_events([event(2)])
    # Without reloading the page (how soon is measured in bench/, not here).
    line = wait_until(
        lambda: next((li for li in browser.css_all("ul#tail li.line") if new in li.text), None),
        10,
        "the new attempt in the live tail",
    )
    assert line.get_attribute("data-outcome") == "delivered", line.text
    browser.shot("tail", docs=True)


def test_pages_have_no_console_errors_and_no_inline_script(browser, start_relay, make_receiver):
    receiver = make_receiver(default=500, error_text="try later")
    relay = start_relay(
        http_destination("crm", receiver.url, "retry = { max_attempts = 1 }")
        + pull_destination("puller")
        + route_all("crm", "puller")
    )
    [dead] = relay.post_events([event(1)])
    wait_until(
        lambda: relay.admin("/destinations")["destinations"][0]["dead"] == 1, 10, "a dead one"
    )
    browser.base = relay.url
    pages = [
        "/console/",
        "/console/destinations/crm",
        "/console/destinations/puller",
        f"/console/events/{dead}",
        "/console/dead",
        "/console/tail",
    ]
    for path in pages:
        status, _ = relay.request("GET", path)
        assert status == 200, path
        browser.open(path)
        wait_until(
            lambda: browser.driver.execute_script("return document.readyState") == "complete"
        )
        assert browser.css("main")
        for script in browser.css_all("script"):
            src = script.get_attribute("src")
            assert src, f"inline script on {path}"
            assert urlsplit(src).netloc == urlsplit(relay.url).netloc, (path, src)
        assert not browser.css_all("[onclick], [onload], [onsubmit], [style]"), path
        name = "event" if "/events/" in path else path.strip("/").replace("/", "-")
        browser.shot(name, docs=name == "event")
    # the event page explains the event: its attempt and a curl of the request
    browser.open(f"/console/events/{dead}")
    text = browser.css("main").text
    assert "crm" in text and "dead" in text and "try later" in text, text
    assert "curl -X POST" in text
    # the browser saw every page without one error or CSP report, its own favicon
    # request included (the JS's 5 s refresh is seen in test_overview.py)
    problems = browser.console_problems(strict=True)
    assert not problems, problems
