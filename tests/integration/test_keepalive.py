"""Keep-alive in one process, on every store, with an injected clock: idle Shopee shops
refreshed once when due and rescheduled, busy ones left alone, rejections and failures
followed by their events, start-up seeding, the shops-by-status census, and TikTok's
expiry warnings for a shop with no traffic."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from authproxy.models import FakeClock, Token, TokenKey, TokenRecord, TokenStatus
from authproxy.runtime import Runtime, open_runtime
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.settings import Settings
from authproxy.store import TokenStore
from authproxy.store.beside import due_index, event_log
from authproxy.tokens.policy import spread
from authproxy.tokens.refresh import Outcome
from tests.conftest import url_of

PARTNER_ID, PARTNER_KEY = 2001887, "keepalive-test-partner-key"
DAY = 86400.0
IDLE = 30 * DAY
ACCESS = 4 * 3600.0


@dataclass
class World:
    sandbox: ShopeeSandbox
    store: TokenStore
    clock: FakeClock
    base: str

    def settings(self, **keepalive: Any) -> Settings:
        app = {
            "platform": "shopee",
            "base_url": self.base,
            "partner_id": PARTNER_ID,
            "partner_key": PARTNER_KEY,
        }
        app["shops"] = {"9": {"refresh_token": self.sandbox.mint("9")["refresh_token"]}}
        server = {"store_url": "memory://", "token_cache_seconds": 0, "backoff_base": 60, "backoff_max": 3600}
        return Settings(server=server, apps={"sp": app}, keepalive={"lease": 60, **keepalive})

    @asynccontextmanager
    async def replica(self, **keepalive: Any) -> AsyncIterator[Runtime]:
        async with open_runtime(self.settings(**keepalive), clock=self.clock, store=self.store) as runtime:
            yield runtime

    async def seed(self, runtime: Runtime, shop: str = "1") -> Token:
        pair = self.sandbox.mint(shop)
        now = self.clock.now()
        token = Token(pair["access_token"], now + ACCESS, now, pair["refresh_token"], now + IDLE)
        await runtime.apps["sp"].tokens.replace(shop, TokenRecord(token=token, last_refresh=now))
        return token

    async def events(self) -> list[dict[str, Any]]:
        return [json.loads(entry.payload) for entry in await event_log(self.store).since(0, 1000)]


@pytest.fixture
async def world(serve, stores, clock):
    sandbox = ShopeeSandbox(PARTNER_ID, PARTNER_KEY, clock=clock, lifetime=ACCESS, refresh_lifetime=IDLE)
    yield World(sandbox, stores.make(), clock, url_of(await serve(sandbox.app())))


async def tick(runtime: Runtime) -> None:
    await runtime.keepalive.round()
    await runtime.keepalive.idle()


def key(shop: str = "1") -> TokenKey:
    return TokenKey("sp", shop)


async def test_an_idle_shop_is_refreshed_once_when_due_then_scheduled_from_its_new_pair(world):
    async with world.replica() as runtime:
        token = await world.seed(runtime)
        due = await due_index(world.store).due_at(key())
        assert due == token.obtained_at + IDLE * 0.25 * spread("1", token.obtained_at)
        await tick(runtime)
        assert world.sandbox.stats.token_calls == 0  # not due yet
        world.clock.current = due
        await tick(runtime)
        assert world.sandbox.stats.token_calls == 1
        stored = await world.store.get(key())
        assert stored is not None and stored.token is not None and stored.token != token
        renewed = stored.token.obtained_at
        assert await due_index(world.store).due_at(key()) == renewed + IDLE * 0.25 * spread("1", renewed)
        await tick(runtime)
        assert world.sandbox.stats.token_calls == 1
    assert world.sandbox.stats.refused_refreshes == 0


async def test_two_replicas_on_one_due_shop_refresh_it_once(world):
    async with world.replica() as first, world.replica() as second:
        await world.seed(first)
        world.clock.advance(IDLE * 0.25)
        outcomes = {
            await first.apps["sp"].tokens.keep_alive("1"),
            await second.apps["sp"].tokens.keep_alive("1"),
        }
        assert outcomes == {Outcome.REFRESHED, Outcome.NOT_DUE}  # the second finds it refreshed
        assert world.sandbox.stats.token_calls == 1


async def test_a_shop_whose_lock_is_held_is_skipped_and_stays_leased(world):
    async with world.replica() as runtime:
        await world.seed(runtime)
        world.clock.advance(IDLE * 0.25)
        holder = world.store.lock(key(), 30)
        assert await holder.acquire()  # e.g. a request's refresh in another replica
        assert await runtime.apps["sp"].tokens.keep_alive("1") is Outcome.BUSY
        assert world.sandbox.stats.token_calls == 0
        await holder.release()


async def test_a_refresh_a_request_caused_moves_the_next_check(world):
    async with world.replica() as runtime:
        await world.seed(runtime)
        world.clock.advance(ACCESS + 1)  # the access token expired: the next request refreshes
        token = await runtime.apps["sp"].tokens.current("1")
        assert world.sandbox.stats.token_calls == 1
        due = await due_index(world.store).due_at(key())
        assert due == token.obtained_at + IDLE * 0.25 * spread("1", token.obtained_at)


async def test_a_rejected_keepalive_marks_the_shop_once_and_takes_it_out_of_the_index(world):
    async with world.replica() as runtime:
        await world.seed(runtime)
        world.sandbox.knobs.reject_refresh = True
        world.clock.advance(IDLE * 0.25)
        await tick(runtime)
        stored = await world.store.get(key())
        assert stored is not None and stored.status is TokenStatus.NEEDS_REAUTHORIZATION
        assert await due_index(world.store).due_at(key()) is None
        for _ in range(3):
            world.clock.advance(DAY)
            await tick(runtime)
        assert world.sandbox.stats.token_calls == 1  # no loop
        assert [e["type"] for e in await world.events()] == ["shop.needs_reauthorization"]
        world.sandbox.knobs.reject_refresh = False
        await world.seed(runtime)  # authorized again
        assert [e["type"] for e in await world.events()][-1] == "shop.recovered"
        assert await due_index(world.store).due_at(key()) is not None


async def test_a_failing_token_endpoint_is_tried_once_per_backoff_step_then_recovers(world):
    async with world.replica() as runtime:
        await world.seed(runtime)
        world.sandbox.knobs.token_status = 503
        world.clock.advance(IDLE * 0.25)
        attempts = []
        for _ in range(600):  # ten minutes a step, for 100 hours
            calls = world.sandbox.stats.token_calls
            await tick(runtime)
            if world.sandbox.stats.token_calls > calls:
                attempts.append(world.clock.now())
            world.clock.advance(600)
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        expected = [min(3600.0, 60.0 * 2**n) for n in range(len(gaps))]
        assert len(gaps) >= 8
        for gap, step in zip(gaps, expected, strict=True):
            assert 0.75 * step <= gap <= 1.25 * step + 600  # jittered backoff, seen at 10-minute ticks
        world.sandbox.knobs.token_status = None
        world.clock.advance(3600 * 1.25)
        await tick(runtime)
        kinds = [e["type"] for e in await world.events()]
        assert kinds == ["shop.refresh_failing", "shop.recovered"]
        stored = await world.store.get(key())
        assert stored is not None and stored.failures == 0 and stored.token is not None


async def test_seeding_adds_what_the_index_lacks_and_leaves_the_rest(world):
    async with world.replica() as runtime:
        now = world.clock.now()
        pair = world.sandbox.mint("2")
        token = Token(pair["access_token"], now + ACCESS, now, pair["refresh_token"], now + IDLE)
        await world.store.put(key("2"), TokenRecord(token=token), expected_version=0)  # stored elsewhere
        await due_index(world.store).schedule(key("3"), now + 5)
        await world.store.put(key("3"), TokenRecord(token=token), expected_version=0)
        assert await runtime.keepalive.seed() == 2  # shop 2, and shop 9's configured seed
        assert await due_index(world.store).due_at(key("2")) == now + IDLE * 0.25 * spread("2", now)
        assert await due_index(world.store).due_at(key("3")) == now + 5  # kept
        assert await due_index(world.store).due_at(key("9")) == 0.0  # a seed of unknown age: at once
        assert await runtime.keepalive.seed() == 0
        await tick(runtime)
        assert world.sandbox.stats.token_calls == 1  # the seed was spent, its pair stored
        seeded = await world.store.get(key("9"))
        assert seeded is not None and seeded.token is not None


async def test_the_census_counts_shops_by_status(world):
    async with world.replica() as runtime:
        await world.seed(runtime, "1")
        await world.seed(runtime, "2")
        marked = TokenRecord(token=None, status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="gone")
        await world.store.put(key("3"), marked, expected_version=0)
        counts = await runtime.census.count()
        assert counts["sp"] == {"ok": 2, "needs_reauthorization": 1}
        page = runtime.metrics.render().decode()
        assert 'authproxy_shops{app="sp",status="ok"} 2.0' in page
        assert 'authproxy_shops{app="sp",status="expired"} 0.0' in page


async def test_a_tiktok_shop_with_no_traffic_is_warned_three_times_before_its_authorisation_ends(
    serve, stores, clock
):
    sandbox = TikTokSandbox("tt-key", "tt-secret", clock=clock, authorization_lifetime=40 * DAY)
    base = url_of(await serve(sandbox.app()))
    app = {
        "platform": "tiktok",
        "app_key": "tt-key",
        "app_secret": "tt-secret",
        "auth_url": base,
        "base_url": base,
    }
    settings = Settings(server={"store_url": "memory://"}, apps={"tt": app})
    store = stores.make()
    async with open_runtime(settings, clock=clock, store=store) as runtime:
        tokens = await runtime.apps["tt"].tokens.authorize("shop-1", sandbox.issue_auth_code(), None)
        ends = tokens["shop-1"].refresh_expires_at
        assert ends is not None and ends == pytest.approx(clock.now() + 40 * DAY, abs=1)
        while clock.now() < ends + DAY:
            await tick(runtime)
            clock.advance(3 * 3600)
    events = [json.loads(entry.payload) for entry in await event_log(store).since(0, 100)]
    warnings = [(e["type"], e["data"]["warning"], e["data"]["days_left"]) for e in events]
    assert warnings == [("shop.authorization_expiring", days, days) for days in (30, 7, 1)]
    assert sandbox.stats.token_calls == 1  # the code exchange: keep-alive never refreshed it


async def test_a_refresh_keeps_the_end_of_an_amazon_authorisation_recorded_at_the_code_exchange(
    serve, stores, clock
):
    from authproxy.sandbox.amazon import AmazonSandbox

    sandbox = AmazonSandbox("amzn-client", "amzn-secret", clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "amazon", "client_id": "amzn-client", "client_secret": "amzn-secret"}
    settings = Settings(
        server={"store_url": "memory://"}, apps={"amz": {**app, "base_url": base, "auth_url": base}}
    )
    async with open_runtime(settings, clock=clock, store=stores.make()) as runtime:
        tokens = runtime.apps["amz"].tokens
        first = (await tokens.authorize("seller", sandbox.issue_code(), None))["seller"]
        assert first.authorized_until == clock.now() + 365 * DAY
        clock.advance(2 * 3600)  # the access token expired
        renewed = await tokens.current("seller")
        assert renewed != first and renewed.authorized_until == first.authorized_until
        due = await due_index(runtime.store).due_at(TokenKey("amz", "seller"))
        assert due == first.authorized_until - 30 * DAY  # the first warning; no idle refresh
