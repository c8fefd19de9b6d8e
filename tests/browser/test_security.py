"""Read-only mode and cross-site form posts, from a real browser: 403, and nothing changes."""

from __future__ import annotations

from .conftest import event, http_destination, route_all, wait_until

STATUS_JS = "return performance.getEntriesByType('navigation')[0].responseStatus"


def attack_page(target: str) -> str:
    """Another site's page that posts a pause form to the console as soon as it loads."""
    return (
        "<!doctype html><title>win a prize</title>"
        f'<form method="post" action="{target}"><input type="hidden" name="for" value="">'
        '<button type="submit">Claim</button></form>'
        "<script>document.forms[0].submit()</script>"
    )


def test_a_cross_site_post_is_refused(browser, start_relay, make_receiver, make_site):
    receiver = make_receiver()
    relay = start_relay(http_destination("crm", receiver.url) + route_all("crm"))
    target = f"{relay.url}/console/destinations/crm/pause"
    site = make_site({"/": attack_page(target)})
    browser.base = relay.url
    # the console's answer to the forged post is a 403 page, which chromium logs
    browser.expect_console_error(r"/console/destinations/crm/pause - .* 403")
    # localhost is another site than 127.0.0.1 (Sec-Fetch-Site: cross-site); another port
    # of 127.0.0.1 is the same site but another origin (same-site): both are refused
    for origin in (f"http://localhost:{site.port}/", f"http://127.0.0.1:{site.port}/"):
        browser.open(origin)
        wait_until(lambda: browser.url_path() == "/console/destinations/crm/pause", 10, "the post")
        wait_until(lambda: browser.driver.execute_script(STATUS_JS) == 403, 5, f"a 403 ({origin})")
        assert "Cross-site request refused" in browser.text("main"), browser.text("body")
        browser.shot("cross-site-refused")
    rows = relay.admin("/destinations")["destinations"]
    assert [r["state"] for r in rows] == ["ok"]
    browser.open("/console/")
    assert "No actions yet" in browser.text("#audit")
    # and the same form from the console's own origin works (the check is not just "POST = 403")
    browser.open("/console/destinations/crm")
    browser.button("Pause", "form.pause").click()
    wait_until(lambda: "Paused crm" in browser.text("#flash"), 10, "a same-origin pause")


def test_read_only_console_hides_actions_and_refuses_posts(browser, start_relay, make_receiver):
    receiver = make_receiver(default=500)
    relay = start_relay(
        "[console]\nread_only = true\n"
        + http_destination("crm", receiver.url, "retry = { max_attempts = 1 }")
        + route_all("crm")
    )
    relay.post_events([event(1)])
    wait_until(
        lambda: relay.admin("/destinations")["destinations"][0]["dead"] == 1, 10, "a dead one"
    )
    browser.base = relay.url
    for path in ("/console/destinations/crm", "/console/dead"):
        browser.open(path)
        assert not browser.css_all("form[method=post]"), path
        assert not browser.css_all("form.pause, form.resume, form.replay"), path
        assert "read-only" in browser.text("header")
    browser.shot("read-only")
    # a same-origin form post made in the page anyway (the forms are hidden, not the routes)
    browser.open("/console/destinations/crm")
    browser.expect_console_error(r"/console/destinations/crm/pause - .* 403")
    browser.driver.execute_script(
        "const f = document.createElement('form');"
        "f.method = 'post'; f.action = '/console/destinations/crm/pause';"
        "document.body.appendChild(f); f.submit();"
    )
    wait_until(lambda: browser.url_path() == "/console/destinations/crm/pause", 10, "the post")
    wait_until(lambda: browser.driver.execute_script(STATUS_JS) == 403, 5, "a 403")
    assert "read-only" in browser.text("main")
    # and without a browser: every action is a 403
    for path, body in (
        ("/console/destinations/crm/pause", b"for="),
        ("/console/destinations/crm/resume", b""),
        ("/console/replay", b"destination=crm&dry_run=1"),
    ):
        status, _ = relay.request(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 403, path
    assert [r["state"] for r in relay.admin("/destinations")["destinations"]] == ["failing"]
