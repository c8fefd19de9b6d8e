"""The overview against the real daemon: every destination type, its state, depth, errors."""

from __future__ import annotations

from ..mailftp import Mailbox, smtp_server
from .conftest import event, http_destination, number, pull_destination, route_all, wait_until

FAILURE = '{"error": "crm database is locked"}'  # what the failing receiver answers


def test_overview_lists_every_destination_with_state_and_depth(browser, start_relay, make_receiver):
    good = make_receiver()
    bad = make_receiver(default=500, error_text=FAILURE)
    down = make_receiver(default=503, error_text="maintenance")
    with smtp_server(Mailbox()) as smtp_port:
        toml = (
            '[console]\nunsub_deadline = "1s"\n'
            + http_destination("crm", good.url)
            + http_destination(
                "analytics", bad.url, 'retry = { initial = "1m" }', "circuit = { failures = 0 }"
            )
            + http_destination("billing", down.url, 'circuit = { failures = 1, cooldown = "10m" }')
            + http_destination("warehouse", good.url)
            + pull_destination("puller")
            + '[destinations.digest]\ntype = "email"\nhost = "127.0.0.1"\n'
            + f'port = {smtp_port}\nfrom = "relay@example.com"\nto = ["ops@example.com"]\n'
            + 'digest = "1h"\n'
            + route_all("crm", "analytics", "billing", "warehouse", "puller", "digest")
        )
        relay = start_relay(toml)
        status, _ = relay.request(
            "POST",
            "/v1/admin/destinations/warehouse/pause",
            b"{}",
            {"Content-Type": "application/json"},
        )
        assert status == 200
        ids = relay.post_events([event(1), event(2), event(3, "engine_unsub")])
        wait_until(lambda: len(good.hits) == 3, 10, "crm to get the 3 events")
        wait_until(lambda: len(bad.hits) == 3, 10, "analytics to be tried 3 times")

        browser.base = relay.url
        browser.open("/console/")
        names = [
            tr.get_attribute("data-destination") for tr in browser.css_all("tr[data-destination]")
        ]
        assert sorted(names) == ["analytics", "billing", "crm", "digest", "puller", "warehouse"]

        crm = browser.wait_row("crm", lambda r: r["state"] == "ok" and number(r["pending"]) == 0)
        assert crm["last-success"] not in ("", "—")
        analytics = browser.wait_row(
            "analytics", lambda r: r["state"] == "failing" and number(r["pending"]) == 3
        )
        assert "500" in analytics["last-error"], analytics
        assert "crm database is locked" in analytics["last-error"], analytics
        assert number(analytics["failure-5m"]) == 100, analytics
        browser.wait_row(
            "billing", lambda r: r["state"] == "circuit_open" and number(r["pending"]) == 3
        )
        browser.wait_row(
            "warehouse", lambda r: r["state"] == "paused" and number(r["pending"]) == 3
        )
        browser.wait_row("puller", lambda r: r["state"] == "ok" and number(r["pending"]) == 3)
        digest = browser.wait_row(
            "digest", lambda r: r["state"] == "ok" and number(r["pending"]) == 3
        )
        assert "next digest" in digest["detail"], digest
        # every row has the figures the page promises, and a server-drawn sparkline
        for name in names:
            cells = browser.row(name)
            for cls in (
                "oldest",
                "failure-5m",
                "failure-1h",
                "last-success",
                "last-error",
                "forecast",
            ):
                assert cls in cells, (name, cls, cells)
            svg = browser.css(f'tr[data-destination="{name}"] .spark svg')
            assert svg.size["width"] > 10, name
        # the unsubscribe still waiting (paused, pull, digest…) past the 1 s deadline
        wait_until(
            lambda: (browser.driver.refresh() or True) and "warehouse" in browser.text("#overdue"),
            10,
            "the overdue-unsubscribe banner",
        )
        assert browser.css("#audit").text.count("pause") >= 1  # the pause above, in the trail
        browser.shot("overview", docs=True)
        assert ids[2] not in browser.css("main").text  # the banner counts, it lists no ids


def test_a_receiver_answering_500_turns_its_row_failing(browser, start_relay, make_receiver):
    receiver = make_receiver(error_text=FAILURE)
    relay = start_relay(
        http_destination(
            "crm", receiver.url, 'retry = { initial = "1m" }', "circuit = { failures = 0 }"
        )
        + route_all("crm")
    )
    relay.post_events([event(1)])
    wait_until(lambda: len(receiver.hits) == 1, 10, "the first delivery")
    browser.base = relay.url
    browser.open("/console/")
    browser.wait_row("crm", lambda r: r["state"] == "ok" and number(r["pending"]) == 0)

    receiver.default = 500
    [failed] = relay.post_events([event(2)])
    wait_until(lambda: len(receiver.hits) == 2, 10, "the failing attempt")
    # no reload: the page's own 5 s refresh brings the change
    row = browser.wait_row(
        "crm", lambda r: r["state"] == "failing", timeout=8, reload=False, what="auto-refresh"
    )
    assert number(row["pending"]) == 1, row
    assert "500" in row["last-error"] and "crm database is locked" in row["last-error"], row
    browser.shot("overview-failing")

    # the destination page: the attempt with its status and response, grouped by signature
    browser.open("/console/destinations/crm")
    retry = browser.css_all('tr.attempt[data-outcome="retry"]')
    assert len(retry) == 1, [tr.text for tr in browser.css_all("tr.attempt")]
    assert failed in retry[0].text and "500" in retry[0].text
    assert "crm database is locked" in retry[0].text
    assert len(browser.css_all('tr.attempt[data-outcome="delivered"]')) == 1
    groups = browser.css_all("#failure-groups tr[data-group]")
    assert len(groups) == 1 and "500" in groups[0].text, [g.text for g in groups]
    browser.shot("destination-failing", docs=True)
