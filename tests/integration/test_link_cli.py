"""`relay link`: the URL it prints is one the running relay honours, an unsafe target
is refused, and without `tracking.secrets` the generated secret is shared and survives restarts."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

from ..helpers import RunningRelay, free_port, wait_for

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def toml(port: int, hook: str, secrets: str | None) -> str:
    tracking = f"[tracking]\nsecrets = [{secrets}]\n" if secrets else ""
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        '[storage]\npath = "relay.db"\n[log]\ndispatch = "dispatch.log"\n'
        f"{tracking}"
        f'[destinations.hook]\ntype = "http"\nurl = "{hook}"\ntimeout = "2s"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["hook"]\n'
    )


async def relay_link(config: Path, *args: str) -> tuple[int, str, str]:
    """`python -m relay link ARGS -c CONFIG` as a real process: (status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "link",
        *args,
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=config.parent,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError("relay link did not finish in 30 s") from None
    return proc.returncode, out.decode(), err.decode()


async def click_arrives(relay: RunningRelay, url: str, target: str, receiver, email: str) -> None:
    """The relay redirects `url` to `target`, and the click reaches the webhook."""
    assert relay.http is not None
    async with relay.http.get(url, allow_redirects=False, headers={"User-Agent": CHROME}) as r:
        assert r.status == 302, await r.text()
        assert r.headers["Location"] == target

    def clicks() -> int:
        return sum(b'"engine_click"' in h.body and email.encode() in h.body for h in receiver.hits)

    await wait_for(clicks, 10, f"the click of {email} at the receiver")


async def test_printed_url_is_redirected_by_the_running_relay(make_relay, receiver):
    port = free_port()
    relay = await make_relay(toml(port, receiver.url, '"cli-secret-new", "cli-secret-old"'))
    target = "https://shop.example.com/sale?utm_source=cli&x=1"
    code, out, err = await relay_link(
        relay.config_path,
        "--kind", "click",
        "--email", "cli@example.com",
        "--url", target,
        "--listid", "7",
        "--sendid", "s-1",
        "--click-tracking-id", "cta",
        "--mail-class", "newsletter",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"http://127.0.0.1:{port}/c/")
    await click_arrives(relay, lines[0], target, receiver, "cli@example.com")

    # Every kind prints one URL under its own path.
    for kind, path, extra in [
        ("open", "/o/", ()),
        ("unsub", "/u/", ("--url", "https://example.com/bye")),
        ("signup", "/s/", ("--listid", "7")),
    ]:
        code, out, err = await relay_link(
            relay.config_path, "--kind", kind, "--email", "a@example.com", *extra
        )
        assert code == 0, err
        assert out.strip().startswith(f"http://127.0.0.1:{port}{path}")


async def test_an_unsafe_url_is_refused_with_one_line_on_stderr(make_relay, receiver):
    relay = await make_relay(toml(free_port(), receiver.url, '"cli-secret"'))
    for url in ["javascript:alert(1)", "//evil.com/", "ftp://evil.com/", "https://a.example/\r\nx"]:
        code, out, err = await relay_link(
            relay.config_path, "--kind", "click", "--email", "a@example.com", "--url", url
        )
        assert code == 1, (url, out, err)
        assert out == ""
        assert len(err.splitlines()) == 1 and "--url" in err, err
    code, out, err = await relay_link(
        relay.config_path, "--kind", "click", "--email", "a@example.com"
    )
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and "--url" in err


async def test_generated_secret_is_kept_beside_the_database_and_reused(tmp_path, receiver):
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(toml(port, receiver.url, None))
    secret_file = tmp_path / "relay.db.tracking-secret"
    assert not secret_file.exists()

    # A link made before the daemon ever ran generates the secret...
    target = "https://example.com/kept"
    code, out, err = await relay_link(
        config, "--kind", "click", "--email", "k@example.com", "--url", target
    )
    assert code == 0, err
    url = out.strip()
    assert secret_file.exists()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text()
    assert len(secret.strip()) >= 32

    # ...that the relay uses, and keeps using across restarts.
    for run in range(2):
        relay = await RunningRelay(tmp_path, config.read_text()).start()
        try:
            await click_arrives(relay, url, target, receiver, "k@example.com")
            await wait_for(
                lambda n=run: sum(b"k@example.com" in h.body for h in receiver.hits) == n + 1,
                10,
                "exactly one click per run",
            )
        finally:
            await relay.stop()
        assert secret_file.read_text() == secret, "generated once"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    # A second link made now matches the first: same secret, same token.
    code, out, _ = await relay_link(
        config, "--kind", "click", "--email", "k@example.com", "--url", target
    )
    assert code == 0 and out.strip() == url
