"""Shop events: needs_reauthorization, recovered, authorization_expiring, refresh_failing.

model.py     the event and its JSON; which events a record change implies (pure)
emitter.py   Events.emit(): log line + counter + stream entry; never raises
webhook.py   the signature (pure) and one signed POST
delivery.py  the consumer-group webhook delivery, a background task per process
expiry.py    authorization_expiring, once per warning across replicas
commands.py  `authproxy events tail | replay`
"""

from __future__ import annotations

from collections.abc import Sequence

from authproxy.events.delivery import Delivery
from authproxy.events.emitter import Events
from authproxy.events.model import Event, EventType
from authproxy.horizon import WARN_BEFORE
from authproxy.metrics import Metrics
from authproxy.models import Clock
from authproxy.settings import EventSettings
from authproxy.store import TokenStore
from authproxy.store.beside import event_log, warning_marks

__all__ = ["Delivery", "Event", "EventType", "Events", "open_events"]


def open_events(
    settings: EventSettings,
    store: TokenStore,
    metrics: Metrics,
    clock: Clock,
    warn_before: Sequence[float] = WARN_BEFORE,
) -> tuple[Events, Delivery]:
    """The emitter the token code calls, and the delivery task app.py starts and stops."""
    stream = event_log(store, settings.max_events)
    marks = warning_marks(store)
    failing_after = settings.refresh_failing_after
    events = Events(stream, metrics, clock, failing_after, marks=marks, warn_before=warn_before)
    return events, Delivery(stream, events, settings, metrics, clock)
