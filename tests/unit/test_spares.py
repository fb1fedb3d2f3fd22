"""Spare turns held by one process: fresh ones handed out in order, stale ones dropped, memory bounded."""

from __future__ import annotations

from authproxy.store.gcra import Grant
from authproxy.store.spares import SPARE_LIFE, SPARES_MAX, SWEEP_AT, Spares


def granted(level: float, admitted: bool = True) -> Grant:
    return Grant(admitted, 0.0, 0, level, 10.0, 10)


def test_spares_go_in_the_order_taken_and_only_while_fresh() -> None:
    clock = [100.0]
    spares = Spares(lambda: clock[0])
    spares.keep("b", [granted(1), granted(2), granted(3, admitted=False)])
    first = spares.take("b")
    assert first is not None and first.level == 1
    clock[0] += SPARE_LIFE + 1e-3
    assert spares.take("b") is None, "too old to go now"
    assert spares.take("other") is None


def test_a_script_call_asks_for_the_calls_since_the_last_one_at_most_spares_max() -> None:
    spares = Spares()
    for _ in range(3):
        spares.asked("b")
    assert spares.wanted("b") == 3
    assert spares.wanted("b") == 0, "the count starts anew"
    for _ in range(SPARES_MAX + 5):
        spares.asked("b")
    assert spares.wanted("b") == SPARES_MAX


def test_a_dropped_bucket_hands_out_nothing() -> None:
    spares = Spares()
    spares.keep("b", [granted(1)])
    spares.drop("b")
    assert spares.take("b") is None


def test_buckets_seen_once_do_not_grow_memory() -> None:
    clock = [0.0]
    spares = Spares(lambda: clock[0])
    for i in range(5 * SWEEP_AT):
        spares.asked(f"b{i}")  # a call served by a spare, never followed by a script call
        spares.keep(f"b{i}", [granted(1)])
        clock[0] += SPARE_LIFE / 10
    assert len(spares._asked) <= SWEEP_AT and len(spares._held) <= SWEEP_AT
