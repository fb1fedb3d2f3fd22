"""`authproxy events tail` and `authproxy events replay`: the stream, for people and scripts.

tail    prints events as they come, one line each (`--json`: the webhook's body);
        `--since T` starts with the retained events since T; `--count N` stops after N.
replay  re-delivers the retained events since T to the configured webhook, in
        order, with their ids (receivers deduplicate) and fresh signatures;
        the events that arrive meanwhile are the delivery task's, not replay's.

T is an ISO 8601 time (UTC unless it says otherwise) or a duration back from
now: 90s, 15m, 2h, 7d, 1h30m. Both need the Redis store: with memory:// the
events live inside the serving process only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from authproxy.events.model import Event, iso, parse_iso
from authproxy.events.webhook import WebhookSender
from authproxy.settings import EventSettings, Settings
from authproxy.store import open_store
from authproxy.store.beside import event_log
from authproxy.store.events import Entry, EventLog, entry_order

DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TAIL_WAIT = 2.0  # seconds per blocking read (below the store's socket timeout)
PAGE = 500
REPLAY_ATTEMPTS = 5


def parse_duration(text: str) -> float | None:
    """Seconds in a duration like 90s, 2h, 7d or 1h30m; None when `text` is not one."""
    text = text.strip()
    if not DURATION.match(text):
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    return sum(float(amount) * UNITS[unit] for amount, unit in parts)


def parse_since(text: str, now: float, *, ahead: bool = False) -> float:
    """Unix seconds for an ISO time or a duration before `now` (after it, when `ahead`);
    ValueError otherwise."""
    span = parse_duration(text)
    if span is not None:
        return now + span if ahead else now - span
    try:
        return parse_iso(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor a duration like 2h or 1h30m") from None


def events_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = None if args.since is None else parse_since(args.since, time.time())
    except ValueError as exc:
        return _usage(f"--since: {exc}")
    if settings.server.store_url.startswith("memory://"):
        return _usage("events live in the serving process with a memory:// store; tail and replay need Redis")
    if args.action == "tail":
        return asyncio.run(_with_log(settings, lambda log: tail(log, since, args.json, args.count)))
    if since is None:
        return _usage("replay needs --since")
    if not settings.events.webhook_url:
        return _usage("events.webhook_url is not configured: nothing to replay to")
    return asyncio.run(_with_log(settings, lambda log: replay(log, since, settings.events)))


async def _with_log(settings: Settings, work: Callable[[EventLog], Awaitable[int]]) -> int:
    store = open_store(settings.server.store)
    try:
        return await work(event_log(store, settings.events.max_events))
    finally:
        await store.close()


async def tail(log: EventLog, since: float | None, as_json: bool, count: int | None) -> int:
    """Print events as they come; with `count`, stop after that many."""
    cursor = await log.last_id() if since is None else _just_before(since)
    shown = 0
    while count is None or shown < count:
        for entry in await log.follow(cursor, TAIL_WAIT):
            cursor = entry.id
            event = _event(entry)
            if event is not None:
                print(event.to_json() if as_json else event.summary(), flush=True)
                shown += 1
                if shown == count:
                    break
    return 0


async def replay(log: EventLog, since: float, settings: EventSettings) -> int:
    """POST every retained event since `since` (up to the newest when it started), in order."""
    last = await log.last_id()
    delivered = 0
    async with aiohttp.ClientSession(trust_env=False) as session:
        sender = WebhookSender(
            session, settings.webhook_url, settings.webhook_secret.get_secret_value(), settings.timeout
        )
        async for entry in _entries_between(log, since, last):
            event = _event(entry)
            if event is None:
                continue
            problem = await _deliver(sender, event, settings)
            if problem:
                print(
                    f"authproxy: replay stopped: {event.id} ({iso(event.at)}) was refused: {problem}; "
                    f"{delivered} delivered; go on with --since {iso(event.at)}",
                    file=sys.stderr,
                )
                return 1
            print(f"replayed {event.summary()}", flush=True)
            delivered += 1
    print(f"{delivered} event(s) since {iso(since)} replayed to {sender.host}")
    return 0


async def _entries_between(log: EventLog, since: float, last: str) -> AsyncIterator[Entry]:
    cursor: str | None = None
    while True:
        page = await log.since(int(since * 1000), PAGE, after=cursor)
        for entry in page:
            if entry_order(entry.id) > entry_order(last):
                return
            yield entry
        if len(page) < PAGE:
            return
        cursor = page[-1].id


async def _deliver(sender: WebhookSender, event: Event, settings: EventSettings) -> str | None:
    """A few attempts with backoff; None when delivered, else the last outcome."""
    outcome = ""
    for attempt in range(REPLAY_ATTEMPTS):
        if attempt:
            pause = min(settings.retry_max, settings.retry_base * 2 ** (attempt - 1))
            await asyncio.sleep(pause * random.uniform(0.75, 1.25))
        result = await sender.send(event, time.time())
        if result.ok:
            return None
        outcome = result.outcome
    return f"{outcome} after {REPLAY_ATTEMPTS} attempts"


def _event(entry: Entry) -> Event | None:
    try:
        return Event.from_json(entry.payload)
    except ValueError as exc:
        print(f"authproxy: entry {entry.id} skipped: {exc}", file=sys.stderr)
        return None


def _just_before(since: float) -> str:
    """The stream id right before the first entry at `since` (reads start after an id)."""
    ms = int(since * 1000)
    return "0-0" if ms <= 0 else f"{ms - 1}-{2**64 - 1}"


def _usage(message: str) -> int:
    print(f"authproxy: {message}", file=sys.stderr)
    return 2
