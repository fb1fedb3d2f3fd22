"""Calls without a quota of their own: one store check for every call in flight, not one each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from authproxy.errors import RateLimited
from authproxy.limits.shaper import Shaper
from authproxy.metrics import Metrics
from authproxy.models import OutgoingRequest, TokenKey
from authproxy.platforms import build_platform
from authproxy.store.gcra import Grant, Lesson
from authproxy.store.rates import Ask, MemoryRates, RateKey
from tests.conftest import oauth2_app, settings_for

KEY = TokenKey("crm", "acme")
CALL = OutgoingRequest(method="GET", path="/api/contacts", query="", headers=())


class HeldRates(MemoryRates):
    """The in-process buckets, holding every answer until `release` is set; counts the asks."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.waiting = 0
        self.release = asyncio.Event()

    async def admit(self, asks: Sequence[Ask]) -> list[Grant]:
        self.asked += 1
        self.waiting += 1
        await self.release.wait()
        self.waiting -= 1
        return await super().admit(asks)


def shaper_on(rates: HeldRates) -> tuple[Shaper, object]:
    settings = settings_for({"crm": oauth2_app("http://127.0.0.1:9")})
    return Shaper(rates, settings, Metrics()), build_platform(settings.apps["crm"])


async def settle() -> None:
    """Let every task that can run reach its next wait (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_calls_in_flight_share_the_one_penalty_check():
    rates = HeldRates()
    shaper, platform = shaper_on(rates)
    calls = [
        asyncio.create_task(shaper.admit(KEY, platform, CALL, shaper.ticket({})))  # type: ignore[arg-type]
        for _ in range(20)
    ]
    await settle()
    assert rates.asked == 1 and rates.waiting == 1  # one asks, nineteen wait for its answer
    rates.release.set()
    admissions = await asyncio.gather(*calls)
    assert rates.asked == 1 and len(admissions) == 20
    await shaper.admit(KEY, platform, CALL, shaper.ticket({}))  # known clear now: not asked
    assert rates.asked == 1


async def test_a_penalty_found_sends_every_waiting_call_to_the_store():
    rates = HeldRates()
    shaper, platform = shaper_on(rates)
    await MemoryRates.learn(rates, RateKey("crm", "acme", "*"), 0.0, 1, Lesson(penalty_in=30.0))
    calls = [
        asyncio.create_task(
            shaper.admit(KEY, platform, CALL, shaper.ticket({"X-AuthProxy-Max-Wait": "0"}))  # type: ignore[arg-type]
        )
        for _ in range(5)
    ]
    await settle()
    assert rates.asked == 1
    rates.release.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, RateLimited) for outcome in outcomes)
    assert rates.asked == 5  # the first found the penalty: the others asked for their own turn


class FailingFirst(HeldRates):
    """Its first answer is an error (a bug, or a store library failing oddly)."""

    async def admit(self, asks: Sequence[Ask]) -> list[Grant]:
        failing = self.asked == 0
        granted = await super().admit(asks)
        if failing:
            raise RuntimeError("the first ask failed")
        return granted


@pytest.mark.parametrize("rates_of", [HeldRates, FailingFirst])
async def test_the_asking_call_failing_or_cancelled_lets_the_others_ask(rates_of):
    rates = rates_of()
    shaper, platform = shaper_on(rates)
    first = asyncio.create_task(shaper.admit(KEY, platform, CALL, shaper.ticket({})))  # type: ignore[arg-type]
    await settle()
    others = [
        asyncio.create_task(shaper.admit(KEY, platform, CALL, shaper.ticket({})))  # type: ignore[arg-type]
        for _ in range(3)
    ]
    await settle()
    assert rates.asked == 1
    if rates_of is HeldRates:
        first.cancel()
    rates.release.set()
    assert len(await asyncio.gather(*others)) == 3  # none failed with the first
    with pytest.raises((asyncio.CancelledError, RuntimeError)):
        await first
    assert rates.asked == 4  # each of the others asked for itself


async def test_a_call_refused_by_its_shop_and_app_buckets_alike_is_a_429():
    """Both buckets refuse with the same wait: the answer names one of them (comparing the
    buckets themselves to break the tie raised TypeError: a 500 instead of a 429)."""
    limits = [{"match": "*", "rate": 1, "burst": 1, "scope": scope} for scope in ("shop", "app")]
    settings = settings_for({"crm": {**oauth2_app("http://127.0.0.1:9"), "limits": limits}})
    shaper, platform = Shaper(MemoryRates(), settings, Metrics()), build_platform(settings.apps["crm"])
    now_only = {"X-AuthProxy-Max-Wait": "0"}
    await shaper.admit(KEY, platform, CALL, shaper.ticket(now_only))
    with pytest.raises(RateLimited) as refused:
        await shaper.admit(KEY, platform, CALL, shaper.ticket(now_only))
    assert refused.value.status == 429 and refused.value.retry_after == 2
