"""The replay-once flow, driven without a server: what is sent, and when it stops."""

from __future__ import annotations

import dataclasses

from multidict import CIMultiDict

from authproxy.models import FakeClock, HttpReply, OutgoingRequest, Token
from authproxy.platforms.sellercenter import SellerCenter
from authproxy.platforms.shopee import Shopee
from authproxy.proxy.flow import replay_once
from authproxy.settings import SellerCenterApp, ShopeeApp

GFG = SellerCenter(SellerCenterApp(platform="sellercenter", base_url="https://sc.example", client_id="i"))
REQUEST = OutgoingRequest("POST", "/v2/orders", "a=1", (("Content-Type", "application/json"),), b"{}")
UNAUTHORIZED = HttpReply.received(401, CIMultiDict(), b"")
OK = HttpReply.received(200, CIMultiDict({"Content-Type": "application/json"}), b"{}")


@dataclasses.dataclass
class Tokens:
    """A token source that hands out t1, t2, ... and records what it was told."""

    issued: int = 0
    rejected: list[str] = dataclasses.field(default_factory=list)

    def _next(self) -> Token:
        self.issued += 1
        return Token(access_token=f"t{self.issued}", expires_at=None, obtained_at=0.0)

    async def current(self, shop: str) -> Token:
        return self._next()

    async def after_rejection(self, shop: str, sent: Token) -> Token:
        self.rejected.append(sent.access_token)
        return self._next()


async def drive(flow, replies):
    """Send each reply back in turn; the requests the flow asked to send."""
    sent = [await anext(flow)]
    for reply in replies:
        try:
            sent.append(await flow.asend(reply))
        except StopAsyncIteration:
            return sent
    raise AssertionError("the flow asked for more than the replies given")


def auth(request: OutgoingRequest) -> str | None:
    return request.header("Authorization")


async def test_a_good_reply_ends_the_flow_after_one_send():
    tokens = Tokens()
    sent = await drive(replay_once(GFG, tokens, FakeClock(), "s1", REQUEST, replayable=True), [OK])
    assert [auth(r) for r in sent] == ["Bearer t1"]
    assert tokens.rejected == []


async def test_an_invalid_token_reply_replays_once_with_the_next_token():
    tokens = Tokens()
    flow = replay_once(GFG, tokens, FakeClock(), "s1", REQUEST, replayable=True)
    sent = await drive(flow, [UNAUTHORIZED, UNAUTHORIZED])  # the second 401 is the answer
    assert [auth(r) for r in sent] == ["Bearer t1", "Bearer t2"]
    assert tokens.rejected == ["t1"]
    assert sent[1].body == REQUEST.body and sent[1].query == REQUEST.query


async def test_a_streamed_body_is_never_replayed():
    tokens = Tokens()
    streamed = REQUEST._replace(body=None, streamed=True)
    flow = replay_once(GFG, tokens, FakeClock(), "s1", streamed, replayable=False)
    assert len(await drive(flow, [UNAUTHORIZED])) == 1
    assert tokens.rejected == []


async def test_a_reply_that_was_not_inspected_is_the_answer():
    tokens = Tokens()
    flow = replay_once(GFG, tokens, FakeClock(), "s1", REQUEST, replayable=True)
    assert len(await drive(flow, [None])) == 1


async def test_a_replay_is_signed_anew_with_the_time_it_is_sent():
    shopee = Shopee(ShopeeApp(platform="shopee", partner_id=1, partner_key="k"))
    clock, tokens = FakeClock(), Tokens()
    request = OutgoingRequest("GET", "/api/v2/shop/get_shop_info", "", ())
    flow = replay_once(shopee, tokens, clock, "42", request, replayable=True)
    first = await anext(flow)
    clock.advance(7)
    invalid = HttpReply.received(403, CIMultiDict(), b'{"error": "invalid_acceess_token"}')
    second = await flow.asend(invalid)
    assert f"timestamp={int(clock.now()) - 7}" in first.query and "access_token=t1" in first.query
    assert f"timestamp={int(clock.now())}" in second.query and "access_token=t2" in second.query


def test_with_query_changes_the_query_only():
    request = OutgoingRequest(
        method="POST", path="/v2/x", query="a=1", headers=(("A", "1"),), body=b"{}", streamed=True
    )
    assert request.with_query("b=2") == ("POST", "/v2/x", "b=2", (("A", "1"),), b"{}", True)
    assert request.with_query("b=2") == request._replace(query="b=2")  # whatever fields come
    assert request.query == "a=1"


def test_a_request_and_a_reply_show_no_headers_or_body():
    request = OutgoingRequest("GET", "/v2/x", "a=1", (("Authorization", "Bearer secret-t"),), b"secret-b")
    reply = HttpReply(200, {"X": "1"}, b"secret-b")
    assert "secret" not in repr(request) + repr(reply)
    assert repr(request) == "OutgoingRequest(method='GET', path='/v2/x', query='a=1', streamed=False)"
