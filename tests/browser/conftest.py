"""Real-browser tests of the operator console: Debian's chromium through Selenium.

Everything is real: `relay serve` runs as a subprocess on a SQLite file, webhook receivers
are aiohttp servers (in a background event loop, because Selenium is synchronous), and the
browser is /usr/bin/chromium driven by /usr/bin/chromedriver — never a downloaded one
(Selenium Manager is kept offline and never consulted: both paths are given explicitly).

Under CI=true a missing browser fails the tests; elsewhere it skips them. Screenshots go
to $RELAY_ARTIFACTS (default: test-artifacts/ in the repository) under browser/; with
RELAY_DOCS_SCREENSHOTS=1 the ones the documentation shows are also written to docs/console/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web

from ..helpers import DaemonProcess, Receiver, base_toml, free_port

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELAY_CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1280, 800)
SECRET = '[tracking]\nsecrets = ["test-secret-test-secret"]\n'

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy (returned); fail after `timeout` s.

    Exceptions a page in flux raises (an element replaced by the auto-refresh, not there yet)
    count as "not yet"; the last one is reported if time runs out.
    """
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (WebDriverException, LookupError, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.05)


# -- the browser ---------------------------------------------------------------------------


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"browser tests need Debian's chromium and chromium-driver; missing: {missing}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message + " (CI=true: failing, not skipping)", pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots (and browser console logs of failed tests) are kept."""
    root = Path(os.environ.get("RELAY_ARTIFACTS") or REPO / "test-artifacts")
    path = root / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


# Chromium's messages in the browser log that are errors even when logged at a lower level.
CSP_PATTERN = re.compile(r"Content Security Policy|Refused to (execute|load|apply|connect)", re.I)
FAVICON = re.compile(r"/favicon\.ico - Failed to load resource")


class Browser:
    """One headless chromium with a fresh profile, and what the tests need of it."""

    def __init__(self, driver: Any, artifacts: Path, name: str, js: bool) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.test_name = name
        self.js = js
        self.console: list[dict] = []  # every browser log entry seen so far
        self.expected: list[re.Pattern[str]] = []  # console errors this test provokes on purpose
        self.base = ""

    # navigation -------------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(path if "://" in path else self.base + path)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def css_all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return self.css(selector).text.strip()

    def button(self, text_prefix: str, within: str = "") -> Any:
        """The button (or submit input) whose visible text starts with `text_prefix`."""
        scope = f"{within} " if within else ""
        for el in self.css_all(f"{scope}button, {scope}input[type=submit]"):
            label = (el.text or el.get_attribute("value") or "").strip()
            if label.startswith(text_prefix):
                return el
        raise LookupError(f"no button starting {text_prefix!r} in {within or 'the page'}")

    def row(self, destination: str) -> dict[str, str]:
        """The overview row of a destination: its cells' text by class (`state`, `pending`…)."""
        tr = self.css(f'tr[data-destination="{destination}"]')
        cells = {}
        for td in tr.find_elements("css selector", "td, th"):
            for cls in (td.get_attribute("class") or "").split():
                cells[cls] = td.text.strip()
        return cells

    def wait_row(
        self,
        destination: str,
        check: Callable[[dict[str, str]], object],
        timeout: float = 10.0,
        reload: bool = True,
        what: str = "",
    ) -> dict[str, str]:
        """Wait for the overview row to satisfy `check`, reloading the page each round
        (`reload=False`: leave it to the page's own auto-refresh)."""
        seen: list[dict[str, str]] = []

        def ok() -> dict[str, str] | None:
            if reload:
                self.driver.refresh()
            cells = self.row(destination)
            seen[:] = [cells]
            return cells if check(cells) else None

        try:
            return wait_until(ok, timeout, what or f"row {destination}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last row seen: {seen[-1] if seen else None}") from None

    def url_path(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.driver.current_url).path

    # artefacts ----------------------------------------------------------------------------

    def shot(self, name: str, docs: bool = False) -> Path:
        """Save a PNG of the window; `docs`: also the documentation's copy when asked to refresh it."""
        path = self.artifacts / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if docs and os.environ.get("RELAY_DOCS_SCREENSHOTS") == "1":
            target = REPO / "docs" / "console"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / f"{name}.png")
        return path

    # the console log -----------------------------------------------------------------------

    def expect_console_error(self, pattern: str) -> None:
        """This test provokes browser log errors matching `pattern` (e.g. a 403 on purpose)."""
        self.expected.append(re.compile(pattern))

    def collect(self) -> list[dict]:
        self.console += self.driver.get_log("browser")
        return self.console

    def console_problems(self, strict: bool = False) -> list[str]:
        """Errors and CSP reports in the browser log, but those the test expects.

        The browser's own request for /favicon.ico is left to the one `strict` check
        (test_pages.py), so that a missing icon fails one test, not every one.
        """
        problems = []
        for entry in self.collect():
            message = entry.get("message", "")
            bad = entry.get("level") == "SEVERE" or CSP_PATTERN.search(message)
            if not strict and FAVICON.search(message):
                continue
            if bad and not any(p.search(message) for p in self.expected):
                problems.append(f"{entry.get('level')}: {message}")
        return problems


def _launch(tmp: Path, js: bool) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not js:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(15)
    # the window includes (invisible) browser chrome: make the page itself 1280×800
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


@contextlib.contextmanager
def _browser(request: pytest.FixtureRequest, artifacts: Path, js: bool):
    _require_browser()
    with tempfile.TemporaryDirectory(prefix="relay-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        profile.mkdir()
        driver = _launch(profile, js)
        browser = Browser(driver, artifacts, request.node.name, js)
        try:
            yield browser
            problems = browser.console_problems()
            assert not problems, "browser console errors or CSP violations:\n" + "\n".join(problems)
        finally:
            with contextlib.suppress(Exception):
                browser.collect()
                if failed(request):  # what the page looked like when it went wrong
                    driver.save_screenshot(str(artifacts / f"FAILED-{request.node.name}.png"))
            if browser.console:
                log = artifacts / f"{request.node.name}.console.json"
                log.write_bytes(orjson.dumps(browser.console, option=orjson.OPT_INDENT_2))
            driver.quit()


@pytest.fixture
def browser(request, artifacts):
    """Headless chromium with JavaScript on; fails the test on any console error or CSP report."""
    with _browser(request, artifacts, js=True) as b:
        yield b


@pytest.fixture
def browser_nojs(request, artifacts):
    """The same with JavaScript disabled (the console must work as plain HTML forms)."""
    with _browser(request, artifacts, js=False) as b:
        yield b


# -- a background event loop for the receivers ----------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def make_receiver(loop_thread):
    """`make_receiver(default=500)` → a started Receiver (tests.helpers), stopped after."""
    started: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        r = Receiver(**kw)
        loop_thread.run(r.start())
        started.append(r)
        return r

    yield make
    for r in started:
        loop_thread.run(r.stop())


class Site:
    """A tiny web server of fixed HTML pages: another origin for the browser to come from."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name:.*}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        if request.path == "/favicon.ico":
            return web.Response(body=b"", content_type="image/x-icon")
        html = self.pages.get(request.path)
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")


@pytest.fixture
def make_site(loop_thread):
    """`make_site({"/": html})` → a started Site on 127.0.0.1 (reach it as localhost too)."""
    started: list[Site] = []

    def make(pages: dict[str, str]) -> Site:
        site = Site(pages)
        loop_thread.run(site.start())
        started.append(site)
        return site

    yield make
    for site in started:
        loop_thread.run(site.stop())


# -- the real daemon ---------------------------------------------------------------------------


class Relay:
    """`relay serve -c relay.toml` as a subprocess, and plain-HTTP helpers to talk to it."""

    def __init__(self, daemon: DaemonProcess, directory: Path) -> None:
        self.daemon = daemon
        self.dir = directory

    @property
    def url(self) -> str:
        return self.daemon.url

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read()

    def post_events(self, events: list[dict]) -> list[str]:
        status, body = self.request(
            "POST",
            "/v1/events",
            orjson.dumps(events),
            {"Content-Type": "application/json"},
        )
        assert status == 202, (status, body)
        return orjson.loads(body)["ids"]

    def admin(self, path: str) -> Any:
        status, body = self.request("GET", "/v1/admin" + path)
        assert status == 200, (status, body)
        return orjson.loads(body)

    def dispatch_lines(self) -> list[dict]:
        path = self.dir / "dispatch.log"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def stop(self) -> None:
        proc = self.daemon.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except Exception:
            self.daemon.kill(signal.SIGKILL)


@pytest.fixture
def start_relay(request, tmp_path, loop_thread, artifacts):
    """`start_relay(toml)` → a started Relay on a free port with its own SQLite file."""
    started: list[Relay] = []

    def start(toml: str, env: dict[str, str] | None = None) -> Relay:
        where = tmp_path / f"relay{len(started)}"
        where.mkdir()
        port = free_port()
        config = where / "relay.toml"
        config.write_text(base_toml(listen=f"127.0.0.1:{port}") + SECRET + toml)
        daemon = DaemonProcess(config, port)
        relay = Relay(daemon, where)
        started.append(relay)
        loop_thread.run(daemon.start(env=env))
        return relay

    yield start
    for i, relay in enumerate(started):
        relay.stop()
        if failed(request):  # the daemon's side of the story
            for name in ("daemon.stderr", "dispatch.log", "relay.toml"):
                if (relay.dir / name).exists():
                    target = artifacts / f"FAILED-{request.node.name}-relay{i}-{name}"
                    shutil.copyfile(relay.dir / name, target)


def http_destination(name: str, url: str, *extra: str) -> str:
    return "\n".join([f"[destinations.{name}]", 'type = "http"', f'url = "{url}"', *extra]) + "\n"


def pull_destination(name: str) -> str:
    return f'[destinations.{name}]\ntype = "pull"\n'


def route_all(*destinations: str) -> str:
    names = ", ".join(f'"{d}"' for d in destinations)
    return f'[[routes]]\nevents = ["*"]\ndestinations = [{names}]\n'


def number(text: str) -> int:
    """The first integer in a cell ("1,204" counts as 1204)."""
    m = re.search(r"\d[\d,]*", text)
    if m is None:
        raise ValueError(f"no number in {text!r}")
    return int(m.group().replace(",", ""))


def event(n: int, event_type: str = "engine_click", **fields: Any) -> dict:
    extra = (
        {"click_url": f"https://www.example.com/offer/{n}"} if event_type == "engine_click" else {}
    )
    return {
        "event_type": event_type,
        "email": f"user{n}@example.com",
        "listid": "t99",
        "sendid": f"t99{n:06d}",
        **extra,
        **fields,
    }
