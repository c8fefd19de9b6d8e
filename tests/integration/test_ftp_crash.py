"""kill -9 of the real daemon in the middle of an upload: after a restart every
event is in a complete final file, uploaded again if need be; none is missing, and no final
file is partial. The FTP server never answers RNTO, so the daemon is stuck exactly between
writing the file and marking its events delivered — before or after the rename happened."""

from __future__ import annotations

import signal

import aiohttp
import orjson
import pytest

from ..helpers import DaemonProcess, base_toml, free_port, wait_for
from ..mailftp import FtpServer, flush_cli


@pytest.mark.parametrize("hang", ["before", "after"])
async def test_kill_9_between_upload_and_ack_loses_nothing(tmp_path, hang):
    root = tmp_path / "ftp-root"
    root.mkdir()
    server = FtpServer(root)
    ftp_port = await server.start_on()
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml(listen=f"127.0.0.1:{port}")
        + f'[destinations.logs]\ntype = "ftp"\nhost = "127.0.0.1"\nport = {ftp_port}\n'
        + 'username = "relay"\npassword = "s3cret"\ntimeout = "30s"\nupload_every = "1d"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["logs"]\n'
    )
    daemon = DaemonProcess(config, port)
    sent = [f"k-{i}" for i in range(40)]
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as http:
            batch = [{"event_type": "bounce", "email": "x@example.com", "id": i} for i in sent]
            async with http.post(f"{daemon.url}/v1/events", json=batch) as resp:
                assert resp.status == 202
        server.hang_rename = hang
        assert (await flush_cli(config, "logs"))[0] == 0
        await wait_for(lambda: server.renamed, 10, "the upload to reach RNTO")
        assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL

        server.hang_rename = None
        await daemon.start()
        assert (await flush_cli(config, "logs"))[0] == 0
        await wait_for(lambda: len(server.renamed) == 2, 10, "the upload after the restart")
        daemon.kill(signal.SIGTERM)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill(signal.SIGKILL)
        await server.close()

    final = {n: d for n, d in server.files().items() if not n.startswith(".")}
    assert len(final) == (2 if hang == "after" else 1)
    for data in final.values():  # each final file is whole: all 40 events, in order
        assert [orjson.loads(line)["id"] for line in data.splitlines()] == sent
