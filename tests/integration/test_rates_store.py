"""Rate buckets in the store: the Lua script is gcra.py, and turns across processes keep the rate."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import textwrap

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authproxy.errors import StoreUnavailable
from authproxy.settings import StoreSettings
from authproxy.store import open_rates
from authproxy.store.gcra import BucketState, Lesson, admit, learn, refund, spare
from authproxy.store.memory import MemoryStore
from authproxy.store.rates import Ask, MemoryRates, RateKey
from authproxy.store.redis import RedisStore
from authproxy.store.redis_rates import RedisRates
from authproxy.store.spares import SPARE_LIFE
from tests.conftest import REDIS_URL, need_real_redis
from tests.procs import ROOT

KEY = RateKey("app", "shop", "GET /x")
NOW = 1_800_000_000.0

step = st.one_of(
    st.tuples(st.just("admit"), st.floats(0, 3), st.sampled_from([None, 0, 1, 2])),
    st.tuples(st.just("advance"), st.floats(0, 2), st.none()),
    st.tuples(
        st.just("learn"),
        st.builds(
            Lesson,
            rate=st.none() | st.sampled_from([0.5, 2.0, 8.0]),
            burst=st.none() | st.integers(1, 6),
            used=st.none() | st.integers(0, 10),
            penalty_in=st.none() | st.floats(0, 3),
        ),
        st.none(),
    ),
    st.tuples(st.just("refund"), st.integers(0, 2), st.none()),
    st.tuples(st.just("spare"), st.integers(0, 3), st.none()),
)


@pytest.fixture(params=["fakeredis", "redis"])
async def client(request):
    if request.param == "redis":
        need_real_redis()
        connection = aioredis.Redis.from_url(REDIS_URL)
    else:
        connection = fakeredis.FakeAsyncRedis()
    yield connection
    await connection.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=25), rate=st.sampled_from([0.0, 1.0, 4.0]), burst=st.integers(1, 4))
async def test_the_script_is_the_reference_algorithm(client, steps, rate, burst):
    """Same decisions, same turns, same waits as gcra.py, whatever happens in between."""
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    state, now = BucketState(), NOW
    try:
        for kind, value, generation in steps:
            rates.now = now
            if kind == "admit":
                got = (await rates.admit([Ask(KEY, rate, burst, value, generation)]))[0]
                want = admit(state, now, rate, burst, value, generation)
                assert got.admitted == want.admitted and got.generation == want.generation
                assert got.wait == pytest.approx(want.wait, abs=1e-3)
                assert got.level == pytest.approx(want.level, abs=1e-2)
                assert (got.rate, got.burst) == (pytest.approx(want.rate), want.burst)
            elif kind == "advance":
                now += value
            elif kind == "spare":
                got_spares = await rates.turns((rates.name(KEY), rate, burst), [], spares=value)
                want_spares = [spare(state, now, rate, burst) for _ in range(value)]
                assert [g.admitted for g in got_spares] == [g.admitted for g in want_spares]
                assert [g.level for g in got_spares] == pytest.approx(
                    [g.level for g in want_spares], abs=1e-2
                )
            elif kind == "learn":
                got_wait = await rates.learn(KEY, rate, burst, value)
                assert got_wait == pytest.approx(learn(state, now, value, rate, burst), abs=1e-3)
            else:
                await rates.refund(KEY, rate, value)
                refund(state, rate, value)
    finally:
        await client.delete(rates.name(KEY))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.lists(
        st.tuples(
            st.lists(st.tuples(st.floats(0, 3), st.sampled_from([None, 0, 1])), max_size=4),
            st.integers(0, 8),
            st.floats(0, 2),
        ),
        min_size=1,
        max_size=6,
    ),
    rate=st.sampled_from([0.0, 0.3, 1.0, 7.0, 1000.0]),
    burst=st.integers(1, 12),
)
async def test_a_script_call_with_asks_and_spares_grants_what_gcra_grants_one_by_one(
    client, calls, rate, burst
):
    """Every field of every grant, the spares rebuilt from the script's summary included:
    the asks in order, then each spare as gcra.spare takes (or refuses) it."""
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    state, now, name = BucketState(), NOW, rates.name(KEY)
    try:
        for asks, spares, advance in calls:
            rates.now = now
            made = [Ask(KEY, rate, burst, wait, generation) for wait, generation in asks]
            got = await rates.turns((name, rate, burst), made, spares=spares)
            want = [admit(state, now, rate, burst, wait, generation) for wait, generation in asks]
            want += [spare(state, now, rate, burst) for _ in range(spares)]
            assert [(g.admitted, g.generation, g.burst) for g in got] == [
                (w.admitted, w.generation, w.burst) for w in want
            ]
            for g, w in zip(got, want, strict=True):
                assert g.wait == pytest.approx(w.wait, abs=1e-3)
                assert g.level == pytest.approx(w.level, abs=2e-3)  # the script keeps 3 decimals
                assert g.rate == pytest.approx(w.rate)
                assert g.at == pytest.approx(w.at, abs=1e-3)
            now += advance
    finally:
        await client.delete(name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(st.tuples(st.floats(0, 3), st.sampled_from([None, 0, 1])), min_size=1, max_size=12),
    rate=st.sampled_from([0.0, 1.0, 4.0]),
    burst=st.integers(1, 4),
)
async def test_concurrent_turns_go_in_batches_each_the_turn_it_would_get_alone(client, batch, rate, burst):
    """Calls that come while one is under way go together in the next script call, in the
    order they came, each granted what gcra.py grants it one by one."""
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    calls: list[int] = []
    run = rates._batches.run

    async def counted(line, asks):
        calls.append(len(asks))
        return await run(line, asks)

    rates._batches.run = counted
    try:
        got = await asyncio.gather(*(rates.admit([Ask(KEY, rate, burst, w, g)]) for w, g in batch))
        state = BucketState()
        for (max_wait, generation), (grant,) in zip(batch, got, strict=True):
            want = admit(state, NOW, rate, burst, max_wait, generation)
            assert grant.admitted == want.admitted and grant.generation == want.generation
            assert grant.wait == pytest.approx(want.wait, abs=1e-3)
            assert grant.at == pytest.approx(want.at, abs=1e-3)
        assert calls == ([1, len(batch) - 1] if len(batch) > 1 else [1])
    finally:
        await client.delete(rates.name(KEY))


async def test_a_failed_batch_fails_each_of_its_callers_and_a_gone_one_is_left_out(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    sent: list[int] = []
    run = rates._batches.run
    release = asyncio.Event()

    async def flaky(line, asks):
        sent.append(len(asks))
        if len(sent) == 1:
            await release.wait()  # the first call is slow: the others queue behind it
            return await run(line, asks)
        raise StoreUnavailable("token store unreachable (test)")

    rates._batches.run = flaky
    ask = Ask(KEY, 4.0, 4, 1.0)
    first = asyncio.create_task(rates.admit([ask]))
    queued = [asyncio.create_task(rates.admit([ask])) for _ in range(3)]
    while sum(len(waiting) for waiting in rates._batches._waiting.values()) < 3:
        await asyncio.sleep(0)  # until every caller has asked
    queued[1].cancel()  # a client that went away
    release.set()
    assert (await first)[0].admitted
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable) and isinstance(results[2], StoreUnavailable)
    assert isinstance(results[1], asyncio.CancelledError)
    assert sent == [1, 2], "the gone caller was not sent"
    await client.delete(rates.name(KEY))


async def test_callers_queued_behind_a_failed_call_fail_with_it_not_after_a_second_timeout(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    sent: list[int] = []
    release = asyncio.Event()

    async def down(bucket, asks):
        sent.append(len(asks))
        await release.wait()  # the store's timeout, running out
        raise StoreUnavailable("token store unreachable (test)")

    rates._batches.run = down
    ask = Ask(KEY, 4.0, 4, 1.0)
    callers = [asyncio.create_task(rates.admit([ask])) for _ in range(4)]
    while sum(len(waiting) for waiting in rates._batches._waiting.values()) < 3:
        await asyncio.sleep(0)  # until every caller has asked
    release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    assert sent == [1], "the queued callers were not sent to the dead store again"
    assert len({id(result) for result in results}) == 4, "each its own exception"


async def test_a_cancelled_flush_leaves_nobody_waiting(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW, spare_turns=False)
    release = asyncio.Event()
    run = rates._batches.run

    calls: list[int] = []

    async def second_hangs(bucket, asks):
        calls.append(len(asks))
        if len(calls) == 1:
            await release.wait()
        elif len(calls) == 2:
            await asyncio.Event().wait()  # a call that never answers, until cancelled
        return await run(bucket, asks)

    rates._batches.run = second_hangs
    ask = Ask(KEY, 4.0, 4, 1.0)
    first = asyncio.create_task(rates.admit([ask]))
    queued = asyncio.create_task(rates.admit([ask]))
    while not any(rates._batches._waiting.values()):
        await asyncio.sleep(0)
    release.set()
    assert (await first)[0].admitted
    while len(calls) < 2:
        await asyncio.sleep(0)  # until the queued caller's flush is under way
    for flush in list(rates._batches._flushes):  # e.g. at shutdown
        flush.cancel()
    with pytest.raises(StoreUnavailable):
        await queued
    assert (await rates.admit([ask]))[0].admitted, "the bucket takes calls again"
    await rates.close()
    await client.delete(rates.name(KEY))


class Calls:
    """Counts a RedisRates' script calls: the new turns and the spares each asked for."""

    def __init__(self, rates: RedisRates) -> None:
        self.made: list[tuple[int, int]] = []
        turns = rates.turns

        async def counted(bucket, asks, spares=0):
            self.made.append((len(asks), spares))
            return await turns(bucket, asks, spares)

        rates.turns = counted


async def turns_counted(client, rates: RedisRates, rate: float) -> float:
    """The turns the bucket counted (its level at the fixed clock NOW)."""
    tat = float(await client.hget(rates.name(KEY), "tat"))
    return (tat - NOW * 1000) / (1000 / rate)


def frozen(rates: RedisRates) -> list[float]:
    """A clock for the rates' spares that moves only when the test moves it."""
    clock = [0.0]
    assert rates.spares is not None
    rates.spares.clock = lambda: clock[0]
    return clock


async def test_calls_faster_than_a_round_trip_take_spare_turns_each_counted_by_the_bucket(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    frozen(rates)  # calls a moment apart: none expires while the test runs, however slow
    calls = Calls(rates)
    try:
        grants = [(await rates.admit([Ask(KEY, 1000.0, 1000, 1.0)]))[0] for _ in range(10)]
        assert all(grant.admitted and grant.wait == 0 for grant in grants)
        # the first call knows no pace yet; then one more than twice the spares taken since
        assert calls.made == [(1, 0), (1, 1), (1, 3), (1, 7)]
        held = sum(1 for _ in iter(lambda: rates.spares.take(rates.name(KEY)), None))
        assert held == 5
        assert await turns_counted(client, rates, 1000.0) == pytest.approx(10 + held, abs=1e-3)
    finally:
        await client.delete(rates.name(KEY))


async def test_callers_queued_behind_a_script_call_take_the_spares_it_brings_first(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    frozen(rates)
    calls = Calls(rates)
    try:
        await rates.admit([Ask(KEY, 1000.0, 1000, 1.0)])
        together = await asyncio.gather(*(rates.admit([Ask(KEY, 1000.0, 1000, 1.0)]) for _ in range(6)))
        assert all(grant.admitted for (grant,) in together)
        # the second call brings one spare for the five queued: four go to the store
        assert calls.made == [(1, 0), (1, 1), (4, 3)]
    finally:
        await client.delete(rates.name(KEY))


async def test_calls_further_apart_than_a_spares_life_take_none(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    clock = frozen(rates)
    calls = Calls(rates)
    try:
        for _ in range(5):
            await rates.admit([Ask(KEY, 1000.0, 1000, 1.0)])
            clock[0] += 2 * SPARE_LIFE
        assert calls.made == [(1, 0)] * 5
        assert await turns_counted(client, rates, 1000.0) == pytest.approx(5, abs=1e-3)
    finally:
        await client.delete(rates.name(KEY))


async def test_spares_are_not_taken_from_a_bucket_half_full(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    frozen(rates)
    calls = Calls(rates)
    try:
        for _ in range(6):  # rate 10, burst 6: a spare only while at most 3 calls are in the bucket
            await rates.admit([Ask(KEY, 10.0, 6, 10.0)])
        assert calls.made == [(1, 0), (1, 1), (1, 3), (1, 1), (1, 1)], "one spare granted, once"
        assert await turns_counted(client, rates, 10.0) == pytest.approx(6, abs=1e-3), "it went to a call"
    finally:
        await client.delete(rates.name(KEY))


async def test_spares_expire_and_a_lesson_drops_them(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    clock = frozen(rates)
    calls = Calls(rates)
    ask = Ask(KEY, 1000.0, 1000, 5.0)
    try:
        await rates.admit([ask])
        await rates.admit([ask])  # takes a spare
        clock[0] += SPARE_LIFE + 0.001
        await rates.admit([ask])  # it is too old: asked of the store
        await rates.admit([ask])  # takes a spare again
        assert len(calls.made) == 4
        wait = await rates.learn(KEY, 1000.0, 1000, Lesson(penalty_in=2.0))
        (grant,) = await rates.admit([ask])  # the spares are dropped: the penalty holds
        assert len(calls.made) == 5
        assert grant.admitted and grant.wait == pytest.approx(wait, abs=1e-3) and wait > 1.9
    finally:
        await client.delete(rates.name(KEY))


async def test_spares_of_a_script_call_sent_before_a_lesson_are_not_kept(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    frozen(rates)
    ask = Ask(KEY, 1000.0, 1000, 5.0)
    turns = rates.turns
    lesson_learned = asyncio.Event()

    async def slow(bucket, asks, spares=0):
        granted = await turns(bucket, asks, spares)
        if spares:
            await rates.learn(KEY, 1000.0, 1000, Lesson(penalty_in=2.0))  # a 429 meanwhile
            lesson_learned.set()
        return granted

    rates.turns = slow
    try:
        await rates.admit([ask])
        await rates.admit([ask])  # its spares come back after the lesson
        assert lesson_learned.is_set()
        assert rates.spares is not None and rates.spares.take(rates.name(KEY)) is None
    finally:
        await client.delete(rates.name(KEY))


async def test_spares_of_a_script_call_sent_while_a_lesson_is_stored_are_not_kept(client):
    """The store may run such a call before the lesson: its spares would ignore the penalty."""
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}", now=NOW)
    frozen(rates)
    ask = Ask(KEY, 1000.0, 1000, 5.0)
    learned = rates._learned
    storing, stored = asyncio.Event(), asyncio.Event()

    async def slow(*args):
        storing.set()
        await stored.wait()  # e.g. its connection is being made
        return await learned(*args)

    rates._learned = slow
    try:
        await rates.admit([ask])
        await rates.admit([ask])  # the pace is known: script calls now take spares
        assert rates.spares is not None and rates.spares.take(rates.name(KEY)) is not None
        lesson = asyncio.create_task(rates.learn(KEY, 1000.0, 1000, Lesson(penalty_in=2.0)))
        await storing.wait()
        await rates.admit([ask])  # sent (and answered) before the lesson is stored
        stored.set()
        await lesson
        assert rates.spares.take(rates.name(KEY)) is None
    finally:
        await client.delete(rates.name(KEY))


async def test_keys_share_the_shops_hash_tag_and_expire(client):
    rates = RedisRates(client, f"test-{secrets.token_hex(6)}")
    shop = RateKey("tt", "shop1", "GET /order/202309/orders/{id}")
    app = RateKey("tt", None, "GET /order/202309/orders/{id}")
    await rates.admit([Ask(shop, 5.0, 2, 1.0), Ask(app, 5.0, 2, 1.0)])
    assert rates.name(shop) == f"{rates.prefix}:rate:{{tt:shop1}}:GET /order/202309/orders/{{id}}"
    assert rates.name(app) == f"{rates.prefix}:rate:{{tt}}:GET /order/202309/orders/{{id}}"
    assert 0 < await client.pttl(rates.name(shop)) <= 61_000, "an idle bucket is forgotten"
    await rates.learn(shop, 5.0, 2, Lesson(rate=2.0))
    assert await client.pttl(rates.name(shop)) > 3_600_000, "a learned rate is kept a day"
    views = await rates.buckets("tt", None)
    assert [(v.key, v.rate) for v in views] == [(app, None), (shop, 2.0)]
    for name in (rates.name(shop), rates.name(app)):
        await client.delete(name)


async def test_the_rate_store_follows_the_token_store():
    memory = open_rates(MemoryStore())
    assert isinstance(memory, MemoryRates)
    store = RedisStore(fakeredis.FakeAsyncRedis(), StoreSettings(key_prefix="p"))
    redis_rates = open_rates(store)
    assert isinstance(redis_rates, RedisRates)
    assert redis_rates.client is store.client and redis_rates.prefix == "p"


TURNS = textwrap.dedent(
    """
    import asyncio, json, sys
    import redis.asyncio as aioredis
    from authproxy.store.rates import Ask, RateKey
    from authproxy.store.redis_rates import RedisRates

    async def main(url, prefix, seconds):
        client = aioredis.Redis.from_url(url)
        rates = RedisRates(client, prefix)
        key = RateKey("tt", "shop1", "GET /order/202309/orders/search")
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        turns = []
        async def caller():
            while loop.time() < end:
                grant = (await rates.admit([Ask(key, 50.0, 10, 1.0)]))[0]
                if grant.admitted:
                    turns.append(grant.at)
                else:
                    await asyncio.sleep(0.01)
        await asyncio.gather(*(caller() for _ in range(20)))
        await client.aclose()
        print(json.dumps(turns))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    """
)


async def test_turns_handed_to_three_processes_never_exceed_rate_and_burst():
    """What the shaping guarantees whatever the machine does: the turns themselves."""
    need_real_redis()
    prefix = f"test-{secrets.token_hex(6)}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", TURNS, REDIS_URL, prefix, "4", stdout=subprocess.PIPE, cwd=ROOT
        )
        for _ in range(3)
    ]
    outputs = [json.loads((await proc.communicate())[0]) for proc in procs]
    client = aioredis.Redis.from_url(REDIS_URL)
    async for name in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(name)
    await client.aclose()
    turns = sorted(at for output in outputs for at in output)
    assert all(outputs), "every process got turns"
    assert len(turns) >= 100
    for i, at in enumerate(
        turns
    ):  # GCRA: the (n+1)th turn after t is no earlier than t + (n - burst + 1)/rate
        if i >= 10:
            assert at >= turns[i - 10] + 1 / 50.0 - 1e-5, (i, at, turns[i - 10])
    span = turns[-1] - turns[0]
    assert len(turns) <= 50.0 * span + 10 + 1
