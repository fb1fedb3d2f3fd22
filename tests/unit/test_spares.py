"""Spare turns held by one process: fresh ones handed out in order, stale ones dropped, memory bounded."""

from __future__ import annotations

from authproxy.store.gcra import Grant
from authproxy.store.spares import SPARE_LIFE, SPARES_MAX, SWEEP_AT, Spares


def granted(level: float, admitted: bool = True) -> Grant:
    return Grant(admitted, 0.0, 0, level, 10.0, 10)


def test_spares_go_in_the_order_taken_and_only_while_fresh() -> None:
    clock = [100.0]
    spares = Spares(lambda: clock[0])
    spares.keep("b", spares.order("b"), [granted(1), granted(2), granted(3, admitted=False)])
    first = spares.take("b")
    assert first is not None and first.level == 1
    clock[0] += SPARE_LIFE + 1e-3
    assert spares.take("b") is None, "too old to go now"
    assert spares.take("other") is None


def test_a_script_call_asks_for_what_the_pace_of_calls_needs_growing_slowly() -> None:
    clock = [0.0]
    spares = Spares(lambda: clock[0])
    spares.asked("b")
    assert spares.order("b").count == 0, "no pace known yet"
    for _ in range(3):
        spares.asked("b")
    clock[0] += SPARE_LIFE / 10  # 3 calls in 5 ms: 30 expected in 50 ms, but none took a spare
    order = spares.order("b")
    assert order.count == 1
    spares.keep("b", order, [granted(1)])
    spares.asked("b")
    assert spares.take("b") is not None
    clock[0] += SPARE_LIFE / 10  # one call in 5 ms, served by a spare: 10 expected, 3 asked for
    assert spares.order("b").count == 3
    order = spares.order("b")
    spares.keep("b", order, [granted(1)] * 40)
    for _ in range(40):
        spares.asked("b")
        assert spares.take("b") is not None
    clock[0] += SPARE_LIFE / 100
    assert spares.order("b").count == SPARES_MAX
    spares.asked("b")
    clock[0] += SPARE_LIFE * 2  # one call in 100 ms: none expected within 50 ms
    assert spares.order("b").count == 0


def test_a_dropped_bucket_hands_out_nothing_and_keeps_nothing_of_calls_sent_before() -> None:
    spares = Spares()
    spares.keep("b", spares.order("b"), [granted(1)])
    sent_before = spares.order("b")
    spares.drop("b")
    assert spares.take("b") is None
    spares.keep("b", sent_before, [granted(2)])
    assert spares.take("b") is None
    spares.keep("b", spares.order("b"), [granted(3)])
    assert spares.take("b") is not None, "calls sent after the lesson keep theirs"


def test_forgetting_which_buckets_learned_keeps_nothing_of_calls_sent_before() -> None:
    spares = Spares()
    sent_before = spares.order("b")
    for i in range(SWEEP_AT):
        spares.drop(f"other{i}")
    spares.keep("b", sent_before, [granted(1)])
    assert spares.take("b") is None
    spares.keep("b", spares.order("b"), [granted(2)])
    assert spares.take("b") is not None


def test_buckets_seen_once_do_not_grow_memory() -> None:
    clock = [0.0]
    spares = Spares(lambda: clock[0])
    for i in range(5 * SWEEP_AT):
        spares.asked(f"b{i}")  # a call served by a spare, never followed by a script call
        spares.keep(f"b{i}", spares.order(f"b{i}"), [granted(1)])
        clock[0] += SPARE_LIFE / 10
    assert len(spares._asked) <= SWEEP_AT and len(spares._held) <= SWEEP_AT
