from __future__ import annotations

from multidict import CIMultiDict

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
        ("Content-Type", "x"),
        ("X-Upstream-Request-Id", "a"),
        ("X-Upstream-Request-Id", "b"),
    ]
