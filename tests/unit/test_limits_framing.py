"""Which reads the connection limits let through without bookkeeping: exactly one whole
request. Anything else must be followed, or a slow body would escape its deadline."""

import pytest

from relay.web.limits import whole_request

GET = b"GET /o/t.gif HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (GET, True),
        (POST + b'{"a":1}', True),
        (POST.replace(b"Content-Length", b"content-LENGTH") + b'{"a":1}', True),
        (POST, False),  # the body is still to come: its clock must start
        (POST + b'{"a":', False),  # part of the body
        (POST + b'{"a":1}' + GET, False),  # pipelined: the second one is followed
        (GET + GET, False),
        (GET[:-2], False),  # the head is not whole
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", False),  # followed, harmlessly
    ],
)
def test_only_one_whole_request_skips_the_bookkeeping(data: bytes, whole: bool) -> None:
    assert whole_request(data) is whole
