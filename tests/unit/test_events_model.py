"""Events as data: JSON, the transitions a record write implies, signatures, --since, settings."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError

from authproxy.events.commands import parse_since
from authproxy.events.model import Event, EventType, changes, iso, parse_iso
from authproxy.events.webhook import sign, verify
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.settings import EventSettings

NOW = 1_700_000_000.5
TOKEN = Token(access_token="a", expires_at=NOW + 3600, obtained_at=NOW, refresh_token="r")


def test_an_event_round_trips_through_json_with_an_iso_time():
    event = Event.new(EventType.REFRESH_FAILING, TokenKey("shopee", "1001"), NOW, failures=3)
    doc = json.loads(event.to_json())
    assert doc == {
        "id": event.id,
        "type": "shop.refresh_failing",
        "app": "shopee",
        "shop": "1001",
        "at": "2023-11-14T22:13:20.500Z",
        "data": {"failures": 3},
    }
    assert Event.from_json(event.to_json()) == event
    assert event.id.startswith("evt_") and len(event.id) == 28


@pytest.mark.parametrize(
    "raw", ['{"id": "x"}', '{"id":"x","type":"shop.nope","app":"a","shop":"s","at":"1"}', "[]"]
)
def test_a_malformed_entry_is_a_value_error(raw):
    with pytest.raises(ValueError):
        Event.from_json(raw)


def test_iso_times():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert parse_iso("2023-11-14T22:13:20.500Z") == NOW
    assert parse_iso("2023-11-14T23:13:20.500+01:00") == NOW
    assert parse_iso("2023-11-14T22:13:20.500") == NOW  # no offset: UTC


def ok(failures: int = 0) -> TokenRecord:
    return TokenRecord(
        token=TOKEN, failures=failures, retry_at=NOW + 60, last_error="HTTP 503" * bool(failures)
    )


MARKED = TokenRecord(token=TOKEN, status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="invalid_grant")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (ok(), MARKED, [(EventType.NEEDS_REAUTHORIZATION, {"reason": "invalid_grant"})]),
        (None, MARKED, [(EventType.NEEDS_REAUTHORIZATION, {"reason": "invalid_grant"})]),
        (MARKED, MARKED, []),
        (ok(1), ok(2), []),
        (
            ok(2),
            ok(3),
            [
                (
                    EventType.REFRESH_FAILING,
                    {"failures": 3, "reason": "HTTP 503", "next_attempt_at": iso(NOW + 60)},
                )
            ],
        ),
        (ok(3), ok(4), []),  # once per streak
        (ok(4), ok(0), [(EventType.RECOVERED, {"from": "refresh_failing"})]),
        (ok(2), ok(0), []),  # never reported failing: nothing to recover from
        (MARKED, ok(0), [(EventType.RECOVERED, {"from": "needs_reauthorization"})]),
        (ok(3), MARKED, [(EventType.NEEDS_REAUTHORIZATION, {"reason": "invalid_grant"})]),
        (ok(), None, []),
        (None, ok(), []),
    ],
)
def test_changes(before, after, expected):
    assert changes(before, after, failing_after=3) == expected


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"id":"evt_1"}'
    expected = hmac.new(b"secret-key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("secret-key", 1700000000, body) == f"t=1700000000,v1={expected}"


def test_verify_refuses_a_wrong_secret_body_or_an_old_timestamp():
    body = b'{"id":"evt_1"}'
    header = sign("secret-key", 1700000000, body)
    assert verify("secret-key", header, body, now=1700000100)
    assert not verify("other-key", header, body, now=1700000100)
    assert not verify("secret-key", header, body + b" ", now=1700000100)
    assert not verify("secret-key", header, body, now=1700000000 + 301)  # a captured delivery, replayed
    assert not verify("secret-key", "garbage", body, now=1700000000)


def test_parse_since():
    assert parse_since("2h", NOW) == NOW - 7200
    assert parse_since("1h30m", NOW) == NOW - 5400
    assert parse_since("7d", NOW) == NOW - 7 * 86400
    assert parse_since("2023-11-14T22:13:20.500Z", 0) == NOW
    for bad in ("", "2", "h", "yesterday", "2h-1m"):
        with pytest.raises(ValueError):
            parse_since(bad, NOW)


def test_event_settings_check_the_webhook():
    assert EventSettings().webhook_url == ""
    EventSettings(webhook_url="https://hooks.example/authproxy?k=1", webhook_secret="s" * 16)
    with pytest.raises(ValidationError, match=r"needs events\.webhook_secret"):
        EventSettings(webhook_url="https://hooks.example/", webhook_secret="short")
    with pytest.raises(ValidationError, match="http"):
        EventSettings(webhook_url="ftp://hooks.example/", webhook_secret="s" * 16)
    with pytest.raises(ValidationError, match="claim_after"):
        EventSettings(timeout=30, claim_after=60)
    assert "s" * 16 not in repr(EventSettings(webhook_url="https://h.example/", webhook_secret="s" * 16))
