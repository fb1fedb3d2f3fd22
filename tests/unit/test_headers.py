from __future__ import annotations

from multidict import CIMultiDict

from authproxy.models import OutgoingRequest
from authproxy.platforms.base import with_header
from authproxy.proxy.headers import request_headers, response_headers


def test_request_headers_drop_hop_by_hop_credentials_and_connection_named():
    incoming = [
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "5"),
        ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Host", "proxy"),
        ("Content-Length", "3"),
        ("Authorization", "Bearer client"),
        ("Cookie", "a=b"),
        ("X-AuthProxy-Key", "k"),
        ("Shoptet-Access-Token", "t"),
        ("Accept", "application/json"),
        ("X-Thing", "kept"),
    ]
    out = request_headers(CIMultiDict(incoming), frozenset({"shoptet-access-token"}))
    assert out == [("Accept", "application/json"), ("X-Thing", "kept")]


def test_response_headers_drop_hop_by_hop():
    upstream = CIMultiDict(
        [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "gzip"),
            ("Set-Cookie", "a=b"),
            ("Location", "https://x/y"),
            ("x-request-id", "platform-7"),
        ]
    )
    assert response_headers(upstream) == [
        ("Content-Encoding", "gzip"),
        ("Set-Cookie", "a=b"),
        ("Location", "https://x/y"),
        ("X-Upstream-Request-Id", "platform-7"),
    ]


def test_headers_without_connection_tokens_are_kept_in_order():
    incoming = [("Accept", "a"), ("connection", "keep-alive"), ("X-B", "b"), ("x-request-id", "c1")]
    assert request_headers(CIMultiDict(incoming), frozenset()) == [("Accept", "a"), ("X-B", "b")]
    assert response_headers(CIMultiDict([("Content-Type", "x"), ("Keep-Alive", "5"), ("X-B", "b")])) == [
        ("Content-Type", "x"),
        ("X-B", "b"),
    ]


def test_response_headers_named_by_any_connection_header_and_every_request_id_are_handled():
    upstream = CIMultiDict(
        [
            ("connection", "keep-alive"),
            ("X-Request-Id", "a"),
            ("CONNECTION", "x-one"),
            ("X-One", "1"),
            ("x-two", "2"),
            ("Connection", "X-Two , "),
            ("Content-Type", "x"),
            ("x-request-id", "b"),
        ]
    )
    assert response_headers(upstream) == [
        ("X-Upstream-Request-Id", "a"),
        ("Content-Type", "x"),
        ("X-Upstream-Request-Id", "b"),
    ]


def test_the_upstreams_request_id_is_renamed_where_it_stands():
    upstream = CIMultiDict([("A", "1"), ("x-request-id", "p-7"), ("X-Upstream-Request-Id", "u"), ("B", "2")])
    assert response_headers(upstream) == [
        ("A", "1"),
        ("X-Upstream-Request-Id", "p-7"),
        ("X-Upstream-Request-Id", "u"),
        ("B", "2"),
    ]
    named = CIMultiDict([("Connection", "x-upstream-request-id"), ("X-Request-Id", "p-7"), ("B", "2")])
    assert response_headers(named) == [("B", "2")]  # what Connection names goes, renamed or not


def test_request_headers_named_by_any_connection_header_are_dropped():
    incoming = CIMultiDict(
        [
            ("connection", "keep-alive"),
            ("X-One", "1"),
            ("CONNECTION", "x-one, X-Two"),
            ("x-two", "2"),
            ("C", "3"),
        ]
    )
    assert request_headers(incoming, frozenset()) == [("C", "3")]


def test_with_header_replaces_any_earlier_value_and_keeps_the_rest_of_the_request():
    request = OutgoingRequest("POST", "/p", "a=1", (("authorization", "old"), ("X-A", "1")), b"{}", False)
    signed = with_header(request, "Authorization", "Bearer t")
    assert signed == OutgoingRequest(
        "POST", "/p", "a=1", (("X-A", "1"), ("Authorization", "Bearer t")), b"{}"
    )
