"""The browser itself: chromium starts headless from Debian's paths and reaches the daemon."""

from __future__ import annotations

from .conftest import pull_destination, route_all


def test_chromium_opens_healthz_of_the_real_daemon(browser, start_relay):
    relay = start_relay(pull_destination("default") + route_all("default"))
    browser.base = relay.url
    browser.open("/healthz")
    assert "ok" in browser.css("body").text.lower()
    caps = browser.driver.capabilities
    assert caps["browserName"] in ("chrome", "chromium")
    assert int(caps["browserVersion"].split(".")[0]) >= 100
    browser.shot("smoke-healthz")


def test_javascript_is_really_off_in_the_nojs_browser(browser_nojs, start_relay, make_site):
    relay = start_relay(pull_destination("default") + route_all("default"))
    browser_nojs.base = relay.url
    browser_nojs.open("/healthz")
    # a page whose script would rewrite the title if it ran
    site = make_site({"/": "<title>off</title><script>document.title = 'on'</script>"})
    browser_nojs.open(f"http://127.0.0.1:{site.port}/")
    assert browser_nojs.driver.title == "off"
