"""The browser fixtures of tests/browser (Debian's chromium, a second site, relay serve),
for the cross-site attack in test_browser_forgery.py."""

from ..browser.conftest import (  # noqa: F401 - fixtures and the report hook, re-exported
    artifacts,
    browser,
    loop_thread,
    make_receiver,
    make_site,
    pytest_runtest_makereport,
    start_relay,
)
