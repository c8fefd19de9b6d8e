"""A real headless Chromium on another origin auto-submits forms at relay's admin actions
— urlencoded, multipart and text/plain, the last forging a JSON body — and leases the pull
feed with a no-cors fetch: relay refuses each, and nothing changes in relay."""

from __future__ import annotations

import html

import pytest

from ..browser.conftest import event, http_destination, pull_destination, wait_until

STATUS_JS = "return performance.getEntriesByType('navigation')[0].responseStatus"


def form_page(action: str, enctype: str, fields: dict[str, str]) -> str:
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    return (
        "<!doctype html><title>win a prize</title>"
        f'<form method="post" action="{action}" enctype="{enctype}">{inputs}</form>'
        "<script>document.forms[0].submit()</script>"
    )


def fetch_page(url: str) -> str:
    return (
        "<!doctype html><title>loading</title><script>"
        f"fetch({url!r}, {{mode: 'no-cors', credentials: 'include'}})"
        ".then(() => document.title = 'fetched', () => document.title = 'refused')"
        "</script>"
    )


FORMS = [
    ("pause", "application/x-www-form-urlencoded", {"for": "1h"}),
    ("pause", "multipart/form-data", {"for": "1h"}),
    ("pause", "text/plain", {}),
    ("resume", "application/x-www-form-urlencoded", {}),
    ("replay", "text/plain", {'{"destination":"': '","destination":"crm"}'}),
    ("replay", "multipart/form-data", {"destination": "crm"}),
    ("ack", "text/plain", {'{"batch_id":"': '1"}'}),
]


def target(relay_url: str, action: str) -> str:
    if action == "replay":
        return f"{relay_url}/v1/admin/replay"
    if action == "ack":
        return f"{relay_url}/v1/pull/feed/ack"
    return f"{relay_url}/v1/admin/destinations/crm/{action}"


def snapshot(relay) -> tuple:
    rows = {r["name"]: r for r in relay.admin("/destinations")["destinations"]}
    crm, feed = rows["crm"], rows["feed"]
    audit = relay.admin("/audit")["audit"]
    return crm["state"], crm["dead"], crm["pending"], feed["pending"], feed["leased"], audit


@pytest.mark.parametrize("attacker", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site"])
def test_forged_forms_and_fetches_from_another_origin_change_nothing(
    browser, start_relay, make_receiver, make_site, attacker
):
    receiver = make_receiver(default=500)
    relay = start_relay(
        http_destination("crm", receiver.url, "retry = { max_attempts = 1 }")
        + pull_destination("feed")
        + '[[routes]]\nevents = ["*"]\ndestinations = ["crm", "feed"]\n'
    )
    relay.post_events([event(i) for i in range(3)])
    wait_until(lambda: snapshot(relay)[1] == 3, 15, "three dead crm deliveries")
    before = snapshot(relay)
    assert before[0] != "paused" and before[3] == 3 and before[4] == 0

    pages = {
        f"/{i}": form_page(target(relay.url, action), enctype, fields)
        for i, (action, enctype, fields) in enumerate(FORMS)
    }
    pages["/fetch"] = fetch_page(f"{relay.url}/v1/pull/feed?max=100")
    site = make_site(pages)
    origin = f"http://{attacker}:{site.port}"
    browser.base = relay.url
    browser.expect_console_error(r" - Failed to load resource: .* 40[0-9]")
    for i, (action, enctype, _) in enumerate(FORMS):
        browser.open(f"{origin}/{i}")
        path = target("", action)
        wait_until(
            lambda path=path: browser.url_path() == path, 10, f"the forged {action} ({enctype})"
        )
        status = wait_until(lambda: browser.driver.execute_script(STATUS_JS), 5, "its status")
        assert status == 403, (action, enctype, status, browser.text("body"))
        assert "cross-site request refused" in browser.text("body")
        browser.shot(f"forged-{action}-{i}")
    browser.open(f"{origin}/fetch")
    wait_until(lambda: browser.driver.title in ("fetched", "refused"), 10, "the fetch")
    assert snapshot(relay) == before
    assert not any(line.get("outcome") == "leased" for line in relay.dispatch_lines())
