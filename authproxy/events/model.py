"""Shop events: what they are, their JSON, and which a record change implies (pure).

    {"id": "evt_…", "type": "shop.needs_reauthorization", "app": "shopee", "shop": "14701711",
     "at": "2026-01-31T12:00:00.123Z", "data": {"reason": "..."}}

`data` never holds a secret: reasons are the provider's error texts, which never do.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from authproxy.models import TokenKey, TokenRecord, TokenStatus


class EventType(enum.StrEnum):
    NEEDS_REAUTHORIZATION = "shop.needs_reauthorization"
    RECOVERED = "shop.recovered"
    AUTHORIZATION_EXPIRING = "shop.authorization_expiring"
    REFRESH_FAILING = "shop.refresh_failing"


@dataclass(frozen=True)
class Event:
    id: str
    type: EventType
    app: str
    shop: str
    at: float  # Unix seconds; ISO 8601 (UTC, milliseconds) in JSON
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, kind: EventType, key: TokenKey, at: float, **data: Any) -> Event:
        return cls(f"evt_{secrets.token_hex(12)}", kind, key.app, key.shop, at, data)

    @property
    def key(self) -> TokenKey:
        return TokenKey(self.app, self.shop)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "app": self.app,
            "shop": self.shop,
            "at": iso(self.at),
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """The event in `raw`, or ValueError naming what is wrong."""
        try:
            doc = json.loads(raw)
            return cls(
                id=str(doc["id"]),
                type=EventType(doc["type"]),
                app=str(doc["app"]),
                shop=str(doc["shop"]),
                at=parse_iso(str(doc["at"])),
                data=dict(doc.get("data") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an event ({type(exc).__name__}: {exc})") from None

    def summary(self) -> str:
        """One line for a person: type, shop, then the data as key=value."""
        pairs = "".join(f" {name}={value}" for name, value in self.data.items())
        return f"{iso(self.at)} {self.type.value} {self.key}{pairs} id={self.id}"


def iso(at: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """ISO 8601 to Unix seconds; a time without an offset is UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def changes(
    before: TokenRecord | None, after: TokenRecord | None, failing_after: int
) -> list[tuple[EventType, dict[str, Any]]]:
    """The events a record written over `before` as `after` implies.

    needs_reauthorization: the shop became marked. refresh_failing: its
    consecutive failures reached `failing_after` (once per streak).
    recovered: a good token again (failures 0) after either of those.
    """
    if after is None:
        return []
    was_marked = before is not None and before.status is TokenStatus.NEEDS_REAUTHORIZATION
    is_marked = after.status is TokenStatus.NEEDS_REAUTHORIZATION
    failed_before = before.failures if before is not None else 0
    if is_marked:
        if was_marked:
            return []
        return [(EventType.NEEDS_REAUTHORIZATION, {"reason": after.last_error})]
    if after.failures >= failing_after > failed_before:
        data = {
            "failures": after.failures,
            "reason": after.last_error,
            "next_attempt_at": iso(after.retry_at),
        }
        return [(EventType.REFRESH_FAILING, data)]
    if after.failures == 0 and after.token is not None and (was_marked or failed_before >= failing_after):
        return [(EventType.RECOVERED, {"from": "needs_reauthorization" if was_marked else "refresh_failing"})]
    return []
