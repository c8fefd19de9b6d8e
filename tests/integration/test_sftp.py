"""The sftp destination against an asyncssh server in this process, with host and client keys
generated here: upload with key-file login and a pinned or known_hosts host key, password
login, and a wrong host key refused."""

from __future__ import annotations

import asyncssh
import orjson
import pytest

from ..helpers import base_toml, wait_for

FAST_RETRY = 'retry = { initial = "50ms", max = "100ms", multiplier = 2.0, max_attempts = 50 }\n'


class _Auth(asyncssh.SSHServer):
    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == ("relay", "s3cret")


@pytest.fixture
async def sftp(tmp_path):
    """(port, root, host key line, client key file) of a running SFTP server."""
    root = tmp_path / "sftp-root"
    root.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    server = await asyncssh.create_server(
        _Auth,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)),
    )
    port = server.sockets[0].getsockname()[1]
    yield port, root, host_key.export_public_key().decode().strip(), key_file
    server.close()
    await server.wait_closed()


def sftp_toml(port: int, extra: str) -> str:
    return (
        base_toml()
        + f'[destinations.drop]\ntype = "sftp"\nhost = "127.0.0.1"\nport = {port}\n'
        + 'username = "relay"\ntimeout = "5s"\nfilename = "ev-{date}-{seq}.jsonl"\n'
        + extra
        + '[[routes]]\nevents = ["*"]\ndestinations = ["drop"]\n'
    )


def sent_events(n: int) -> list[dict]:
    return [
        {"event_type": "bounce", "email": f"b{i}@example.com", "id": f"s-{i}"} for i in range(n)
    ]


async def _upload(relay, root, n: int = 3) -> list[str]:
    assert (await relay.post_events(sent_events(n))).status == 202
    relay.runtime.dispatchers["drop"].flush()
    # Only the final name: the temporary `.part` file appears first, empty.
    await wait_for(
        lambda: [p for p in root.iterdir() if not p.name.endswith(".part")], 30, "the uploaded file"
    )
    (path,) = root.iterdir()
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


async def test_upload_with_a_key_file_and_a_pinned_host_key(make_relay, sftp):
    port, root, host_key, key_file = sftp
    relay = await make_relay(
        sftp_toml(port, f'private_key = "{key_file}"\nhost_key = "{host_key}"\n')
    )
    assert await _upload(relay, root) == ["s-0", "s-1", "s-2"]
    (path,) = root.iterdir()
    assert path.name.startswith("ev-") and path.name.endswith("-1.jsonl")
    await wait_for(lambda: len(relay.dispatch_lines()) == 3, 2, "three dispatch lines")
    assert {line["outcome"] for line in relay.dispatch_lines()} == {"delivered"}


async def test_upload_with_a_password_and_a_known_hosts_file(make_relay, sftp, tmp_path):
    port, root, host_key, _ = sftp
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    relay = await make_relay(sftp_toml(port, f'password = "s3cret"\nknown_hosts = "{known}"\n'))
    assert await _upload(relay, root, 2) == ["s-0", "s-1"]


async def test_a_wrong_host_key_is_refused(make_relay, sftp):
    port, root, _, key_file = sftp
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    relay = await make_relay(
        sftp_toml(port, f'private_key = "{key_file}"\nhost_key = "{other}"\n' + FAST_RETRY)
    )
    assert (await relay.post_events(sent_events(1))).status == 202
    relay.runtime.dispatchers["drop"].flush()
    await wait_for(lambda: relay.dispatch_lines(), 5, "a failed attempt")
    line = relay.dispatch_lines()[0]
    assert line["outcome"] == "retry" and "host key" in line["error"].lower()
    assert list(root.iterdir()) == []


async def test_an_unreadable_key_fails_each_send_not_the_daemon(make_relay, sftp, tmp_path):
    port, root, host_key, _ = sftp
    bad = tmp_path / "not-a-key"
    bad.write_text("this is not a private key\n")
    relay = await make_relay(
        sftp_toml(port, f'private_key = "{bad}"\nhost_key = "{host_key}"\n' + FAST_RETRY)
    )
    assert (await relay.post_events(sent_events(1))).status == 202
    relay.runtime.dispatchers["drop"].flush()
    await wait_for(lambda: relay.dispatch_lines(), 5, "a failed attempt")
    assert "cannot use the configured keys" in relay.dispatch_lines()[0]["error"]
    assert relay.runtime.dispatchers["drop"].running
