"""Config of the email, ftp and sftp destinations: defaults, and errors that name
the dotted key and say what is legal."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, RetryPolicy, load
from relay.config.destinations import EmailDestination, FtpDestination, SftpDestination

ROUTE = '[[routes]]\nevents = ["*"]\ndestinations = ["d"]\n'
EMAIL = '[destinations.d]\ntype = "email"\nhost = "mx"\nfrom = "r@example.com"\nto = ["a@example.com"]\n'
FTP = '[destinations.d]\ntype = "ftp"\nhost = "files.example.com"\n'
SFTP = '[destinations.d]\ntype = "sftp"\nhost = "h"\nusername = "u"\npassword = "p"\n'


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "relay.toml"
    path.write_text(text + ROUTE)
    return load(path).destinations["d"]


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'relay.toml'}: destinations.d"), message
    return message


def test_email_defaults(tmp_path):
    d = load_text(tmp_path, EMAIL)
    assert isinstance(d, EmailDestination)
    assert (d.port, d.tls, d.starttls, d.digest_s, d.max_events_per_message) == (
        25,
        False,
        False,
        3600.0,
        1000,
    )
    assert (d.timeout_s, d.retry, d.subject) == (
        30.0,
        RetryPolicy(),
        "[relay] {count} {event_type} events for {destination}",
    )


def test_email_ports_follow_tls_and_starttls(tmp_path):
    assert load_text(tmp_path, EMAIL + "tls = true\n").port == 465
    assert load_text(tmp_path, EMAIL + "starttls = true\n").port == 587


def test_ftp_and_sftp_defaults(tmp_path):
    f = load_text(tmp_path, FTP)
    assert isinstance(f, FtpDestination)
    assert (f.port, f.format, f.upload_every_s, f.filename, f.tls, f.username) == (
        21,
        "jsonl",
        3600.0,
        "events-{date}-{time}-{seq}.jsonl",
        False,
        "anonymous",
    )
    assert load_text(tmp_path, FTP + 'format = "csv"\n').filename.endswith(".csv")
    assert load_text(tmp_path, FTP + 'format = "form"\n').filename.endswith(".txt")
    s = load_text(tmp_path, SFTP + 'upload_every = "1d"\n')
    assert isinstance(s, SftpDestination)
    assert (s.port, s.upload_every_s, s.known_hosts, s.host_key) == (22, 86400.0, None, None)


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (EMAIL.replace('to = ["a@example.com"]\n', ""), "d.to", "required"),
        (EMAIL + "tls = true\nstarttls = true\n", "d.starttls", "exclude each other"),
        (EMAIL.replace("r@example.com", "nobody"), "d.from", "bare email address"),
        (EMAIL + 'subject = "{count} {nope}"\n', "d.subject", "{event_type}, {count}"),
        (EMAIL + 'username = "u"\n', "d.password", "required when username"),
        (EMAIL + "max_events_per_message = 0\n", "d.max_events_per_message", "between 1"),
        (EMAIL + 'ca_file = "missing.pem"\n', "d.ca_file", "no such file"),
        (FTP + 'format = "xml"\n', "d.format", "'xml' is not one of jsonl, csv, form"),
        (FTP + 'filename = "{date}-{hour}.log"\n', "d.filename", "{date}, {time}, {seq}"),
        (FTP + 'filename = "sub/x.log"\n', "d.filename", "plain file name"),
        (FTP + "passive = false\n", "d.passive", "active FTP is not supported"),
        (FTP + 'upload_every = "0s"\n', "d.upload_every", "at least 1s"),
        (FTP + "tiemout = 3\n", "d.tiemout", "unknown key"),
        (FTP + "retry = { initial = 5, max = 1 }\n", "d.retry.max", "not be less"),
        (SFTP.replace('password = "p"\n', ""), "d.password", "password or private_key"),
        (SFTP + 'host_key = "AAAA"\n', "d.host_key", "public key line"),
        ('[destinations.d]\ntype = "ftp"\n', "d.host", "required"),
    ],
)
def test_errors_name_the_dotted_key(tmp_path, text, where, says):
    message = error_for(tmp_path, text)
    assert f"destinations.{where}: " in message
    assert says in message
