"""Request bodies with a Content-Encoding cross the proxy as the client sent them.

The server never decodes them (http_server.handler_options): valid or not,
the upstream receives the client's exact bytes and Content-Encoding, and
TikTok's sign covers those bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib

import pytest

from authproxy.store.memory import MemoryStore
from tests.integration.test_client_faults import sellercenter_proxy
from tests.integration.test_tiktok import ORDERS
from tests.integration.test_tiktok import start as start_tiktok

PLAIN = json.dumps({"order_status": "UNPAID", "ids": list(range(60))}).encode()
BODIES = {
    "gzip": ("gzip", gzip.compress(PLAIN)),
    "deflate": ("deflate", zlib.compress(PLAIN)),
    "not-gzip": ("gzip", b"\x1f\x8b\x08\x00 these bytes are not a gzip stream"),
    "not-deflate": ("deflate", b"plain text labelled deflate"),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(BODIES))
async def test_an_encoded_body_reaches_the_upstream_byte_for_byte(serve, proxy_client, clock, name):
    encoding, body = BODIES[name]
    client, _ = await sellercenter_proxy(serve, proxy_client, clock)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    reply = await client.post("/gfg/shop1/v2/orders", data=body, headers=headers)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert (echo["body_sha256"], echo["body_bytes"]) == (sha(body), len(body))
    assert echo["headers"]["content-encoding"] == encoding


async def test_a_streamed_encoded_body_reaches_the_upstream_byte_for_byte(serve, proxy_client, clock):
    body = gzip.compress(os.urandom(256 * 1024))  # incompressible: larger than max_replay_body
    client, _ = await sellercenter_proxy(serve, proxy_client, clock, max_replay_body=64 * 1024)
    reply = await client.post("/gfg/shop1/v2/upload", data=body, headers={"Content-Encoding": "gzip"})
    echo = await reply.json()
    assert reply.status == 200, echo
    assert (echo["body_sha256"], echo["body_bytes"]) == (sha(body), len(body))
    assert echo["headers"]["content-encoding"] == "gzip"


@pytest.mark.parametrize("name", ["gzip", "not-gzip"])
async def test_tiktok_signs_the_encoded_bytes_it_forwards(serve, proxy_client, clock, name):
    encoding, body = BODIES[name]
    rig = await start_tiktok(serve, proxy_client, MemoryStore(), clock)
    await rig.seed()
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    reply = await rig.client.post(ORDERS + "/search?page_size=5", data=body, headers=headers)
    echo = await reply.json()
    assert reply.status == 200, echo  # the sandbox checked the sign over the bytes it received
    assert (echo["body_sha256"], echo["body_bytes"]) == (sha(body), len(body))
    assert echo["headers"]["content-encoding"] == encoding
    assert rig.sandbox.stats.rejected_api_calls == 0
