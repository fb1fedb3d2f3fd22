"""Authorisation horizons: which warning is due (pure), marked once across replicas (stores),
and shop.authorization_expiring exactly three times for a shop whose authorisation ends in 40 days."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from authproxy.events import open_events
from authproxy.horizon import DAY, days_left, in_days, next_warning_at, warning_due
from authproxy.metrics import Metrics
from authproxy.models import FakeClock, TokenKey
from authproxy.settings import EventSettings
from authproxy.store.beside import event_log, warning_marks

END = 1_800_000_000.0
KEY = TokenKey("tiktok", "shop-1")


D30, D7, D1 = 30 * 86400, 7 * 86400, 86400


def test_the_most_urgent_passed_threshold_is_due():
    assert warning_due(END, END - 31 * DAY) is None
    assert warning_due(END, END - 30 * DAY) == D30
    assert warning_due(END, END - 8 * DAY) == D30
    assert warning_due(END, END - 5 * DAY) == D7  # first seen 5 days before: not a "30 days" warning
    assert warning_due(END, END - 3600) == D1
    assert warning_due(END, END) is None  # ended: needs_reauthorization's business
    assert warning_due(None, END) is None


def test_a_warning_sent_for_this_horizon_is_not_due_again_but_for_a_new_one_it_is():
    assert warning_due(END, END - 5 * DAY, sent={D7: END}) is None
    assert warning_due(END, END - 5 * DAY, sent={D7: END + 30}) is None  # restated with drift
    assert warning_due(END, END - 5 * DAY, sent={D30: END}) == D7
    renewed = END + 365 * DAY
    assert warning_due(renewed, renewed - 5 * DAY, sent={D7: END}) == D7


def test_the_next_warning_is_the_first_offset_still_ahead():
    assert next_warning_at(END, END - 40 * DAY) == END - 30 * DAY
    assert next_warning_at(END, END - 30 * DAY) == END - 7 * DAY  # that one is due now, not next
    assert next_warning_at(END, END - 5 * DAY) == END - DAY
    assert next_warning_at(END, END - 3600) is None
    assert next_warning_at(None, END) is None
    assert next_warning_at(END, END - 40, before=(30, 7, 1)) == END - 30  # test-scaled offsets


def test_offsets_read_in_days():
    assert (in_days(D30), in_days(D1), in_days(3600)) == (30, 1, 0.041667)


def test_days_left_round_up():
    assert days_left(END, END - 29.5 * DAY) == 30
    assert days_left(END, END - 7 * DAY) == 7
    assert days_left(END, END - 60) == 1


@given(st.lists(st.floats(min_value=60, max_value=3 * DAY), min_size=1, max_size=200))
def test_walking_towards_the_end_sends_each_warning_at_most_once_most_urgent_last(steps):
    now, sent, order = END - 40 * DAY, {}, []
    for step in steps:
        now += step
        due = warning_due(END, now, sent)
        if due is not None:
            sent[due] = END
            order.append(due)
    assert len(order) == len(set(order))
    assert order == sorted(order, reverse=True)
    if now >= END - DAY and now < END:
        assert order and order[-1] == D1  # checked within the last day: the last warning went out


async def test_marks_answer_true_once_per_horizon_across_replicas(stores):
    first, second = warning_marks(stores.make()), warning_marks(stores.make())
    assert await first.mark(KEY, D7, END) is True
    assert await second.mark(KEY, D7, END) is False
    assert await second.mark(KEY, D7, END + 5) is False  # the same horizon, restated
    assert await second.mark(KEY, D1, END) is True
    assert await first.mark(KEY, D7, END + 365 * DAY) is True  # re-authorised: a new horizon
    assert await first.sent(KEY) == {D7: END + 365 * DAY, D1: END}
    assert await first.sent(TokenKey("tiktok", "other")) == {}


async def test_a_shop_ending_in_40_days_is_warned_exactly_three_times_by_two_replicas(stores):
    clock = FakeClock(END - 40 * DAY)
    replicas = [open_events(EventSettings(), stores.make(), Metrics(), clock)[0] for _ in range(2)]
    emitted = []
    while clock.now() < END + DAY:
        for events in replicas:
            if event := await events.authorization_ends(KEY, END, clock.now()):
                emitted.append(event)
        clock.advance(3 * 3600)
    assert [(e.data["warning"], e.data["days_left"]) for e in emitted] == [(30, 30), (7, 7), (1, 1)]
    stored = await event_log(stores.make()).since(0, 100)
    assert [json.loads(entry.payload)["data"]["warning"] for entry in stored] == [30, 7, 1]


async def test_a_shops_marks_expire_by_themselves(redis_stores):
    store = redis_stores.make()
    marks = warning_marks(store)
    await marks.mark(KEY, D30, END)
    assert 0 < await store.client.ttl(marks.name(KEY)) <= 400 * DAY
