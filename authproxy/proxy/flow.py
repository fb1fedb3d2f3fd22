"""One request's auth as a flow: apply auth -> send -> classify -> maybe refresh -> replay once.

In the spirit of httpx's `Auth.auth_flow`: an async generator that yields
each request to send and is sent back what the upstream answered; the
handler does the I/O. The generator decides, so the replay rule (design §4
rule 9) is tested without a server:

    flow = replay_once(platform, tokens, clock, shop, request, replayable=True)
    outgoing = await anext(flow)
    while True:
        reply = ...send `outgoing`, read the head if platform.should_inspect(...)...
        try:
            outgoing = await flow.asend(reply)     # another attempt
        except StopAsyncIteration:
            break                                  # `reply` is the answer

What is sent back is the reply's classifiable head (`HttpReply`), or None
when the reply was not inspected (or its body is too long to classify).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from authproxy.models import Clock, HttpReply, OutgoingRequest, Token, Verdict
from authproxy.platforms import Platform


class TokenSource(Protocol):
    """What the flow needs of a token provider (tokens/provider.py's ShopTokens)."""

    async def current(self, shop: str) -> Token: ...

    async def after_rejection(self, shop: str, sent: Token) -> Token: ...


async def replay_once(
    platform: Platform,
    tokens: TokenSource,
    clock: Clock,
    shop: str,
    request: OutgoingRequest,
    *,
    replayable: bool,
) -> AsyncGenerator[OutgoingRequest, HttpReply | None]:
    """Send with the current token; on the platform's invalid-token signal, replay
    once with the token `after_rejection` gives, if the body can be sent again."""
    token = await tokens.current(shop)
    reply = yield platform.apply_auth(shop, request, token, clock.now())
    if reply is None or not replayable or platform.classify(reply) is not Verdict.TOKEN_INVALID:
        return
    token = await tokens.after_rejection(shop, token)
    yield platform.apply_auth(shop, request, token, clock.now())
