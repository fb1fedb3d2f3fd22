"""The token policy, every branch: decide() and the status `tokens list` shows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.models import Token, TokenRecord, TokenStatus
from authproxy.tokens.policy import Action, Status, Timing, decide, refresh_point, status

NOW = 1_700_000_000.0
TIMING = Timing(refresh_before=0.1, refresh_before_max=300.0)
HOUR = 3600.0


def token(expires_in: float | None, lifetime: float = HOUR, access: str = "at") -> Token:
    expires_at = None if expires_in is None else NOW + expires_in
    obtained = NOW + (expires_in or 0) - lifetime if expires_in is not None else NOW
    return Token(access_token=access, expires_at=expires_at, obtained_at=obtained, refresh_token="rt")


def record(
    tok: Token | None, *, reauth: bool = False, retry_in: float | None = None, version: int = 3
) -> TokenRecord:
    return TokenRecord(
        token=tok,
        version=version,
        status=TokenStatus.NEEDS_REAUTHORIZATION if reauth else TokenStatus.OK,
        retry_at=NOW + retry_in if retry_in is not None else 0.0,
        last_error="boom" if reauth or retry_in else "",
    )


# (name, record, expected action, expected status) - every branch of decide()
CASES = [
    ("no record", None, Action.REFRESH_NOW, None),
    ("no token", record(None), Action.REFRESH_NOW, Status.EXPIRED),
    ("valid, far from expiry", record(token(HOUR / 2)), Action.USE, Status.OK),
    ("never expires", record(token(None)), Action.USE, Status.OK),
    ("inside the leeway", record(token(200)), Action.REFRESH_SOON, Status.EXPIRING),
    ("expired", record(token(-1)), Action.REFRESH_NOW, Status.EXPIRED),
    ("expiry is exclusive", record(token(0)), Action.REFRESH_NOW, Status.EXPIRED),
    ("reauth, still valid", record(token(HOUR / 2), reauth=True), Action.USE, Status.NEEDS_REAUTHORIZATION),
    ("reauth, in leeway", record(token(200), reauth=True), Action.USE, Status.NEEDS_REAUTHORIZATION),
    ("reauth, expired", record(token(-1), reauth=True), Action.REAUTHORIZE, Status.NEEDS_REAUTHORIZATION),
    ("reauth, no token", record(None, reauth=True), Action.REAUTHORIZE, Status.NEEDS_REAUTHORIZATION),
    ("cooling, valid", record(token(HOUR / 2), retry_in=30), Action.USE, Status.COOLING_DOWN),
    ("cooling, in leeway", record(token(200), retry_in=30), Action.USE, Status.COOLING_DOWN),
    ("cooling, expired", record(token(-1), retry_in=30), Action.COOL_DOWN, Status.COOLING_DOWN),
    ("cooling, no token", record(None, retry_in=30), Action.COOL_DOWN, Status.COOLING_DOWN),
    ("cooldown over", record(token(-1), retry_in=-1), Action.REFRESH_NOW, Status.EXPIRED),
    ("reauth wins over cooling", record(token(-1), reauth=True, retry_in=30), Action.REAUTHORIZE, None),
]


@pytest.mark.parametrize(("name", "stored", "action", "shown"), CASES, ids=[c[0] for c in CASES])
def test_decide(name, stored, action, shown):
    decision = decide(stored, NOW, TIMING)
    assert decision.action is action
    if action in (Action.USE, Action.REFRESH_SOON):
        assert decision.token is stored.token
    else:
        assert decision.token is None
    if action is Action.COOL_DOWN:
        assert decision.until == stored.retry_at
    if shown is not None:
        assert status(stored, NOW, TIMING) is shown


def test_a_rejected_token_no_longer_counts_as_valid():
    stored = record(token(HOUR / 2, access="sent"))
    assert decide(stored, NOW, TIMING, rejected="sent").action is Action.REFRESH_NOW
    assert decide(stored, NOW, TIMING, rejected="other").action is Action.USE  # a newer stored one
    marked = record(token(HOUR / 2, access="sent"), reauth=True)
    assert decide(marked, NOW, TIMING, rejected="sent").action is Action.REAUTHORIZE
    cooling = record(token(HOUR / 2, access="sent"), retry_in=10)
    assert decide(cooling, NOW, TIMING, rejected="sent").action is Action.COOL_DOWN


def test_refresh_point_is_a_fraction_of_the_lifetime_capped_and_jittered():
    one_minute = token(60, lifetime=60)
    assert refresh_point(one_minute, TIMING) == pytest.approx(NOW + 60 - 6)
    assert refresh_point(one_minute, TIMING, jitter=1.5) == pytest.approx(NOW + 60 - 9)
    four_hours = token(4 * HOUR, lifetime=4 * HOUR)
    assert refresh_point(four_hours, TIMING) == pytest.approx(NOW + 4 * HOUR - 300)  # capped
    assert refresh_point(token(None), TIMING) == math.inf


def test_jitter_moves_a_token_into_its_leeway_earlier():
    stored = record(token(330))  # leeway 300 s at jitter 1, 450 s at 1.5
    assert decide(stored, NOW, TIMING).action is Action.USE
    assert decide(stored, NOW, TIMING, jitter=1.5).action is Action.REFRESH_SOON


def test_timing_comes_from_the_server_settings():
    from authproxy.settings import ServerSettings

    server = ServerSettings(refresh_before=0.2, refresh_before_max=60)
    assert Timing.of(server) == Timing(0.2, 60)


@given(
    expires_in=st.one_of(st.none(), st.floats(-1e6, 1e6)),
    reauth=st.booleans(),
    retry_in=st.one_of(st.none(), st.floats(-1e4, 1e4)),
    jitter=st.floats(1.0, 1.5),
)
def test_a_token_is_sent_only_while_valid_and_only_then(expires_in, reauth, retry_in, jitter):
    stored = record(token(expires_in), reauth=reauth, retry_in=retry_in)
    decision = decide(stored, NOW, TIMING, jitter=jitter)
    valid = stored.token is not None and stored.token.is_valid(NOW)
    assert (decision.token is not None) == valid
    if decision.action in (Action.REFRESH_SOON, Action.REFRESH_NOW):
        assert not reauth and not stored.retry_at > NOW
