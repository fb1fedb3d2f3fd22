"""`authproxy events tail | replay` as users run them: subprocesses on a shared Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from authproxy.events import Event, EventType, open_events
from authproxy.metrics import Metrics
from authproxy.models import SystemClock, TokenKey
from authproxy.settings import EventSettings
from tests.conftest import shared_store, url_of
from tests.procs import ROOT, to_toml
from tests.receiver import SECRET, Receiver

KEY = TokenKey("shopee", "1001")


def write_config(tmp_path, shared_redis, receiver_url: str | None = None):
    events = {"retry_base": 0.01, "retry_max": 0.05}
    if receiver_url:
        events |= {"webhook_url": receiver_url + "/hook", "webhook_secret": "${HOOK_SECRET}"}
    document = {
        "server": {"store_url": shared_redis.url, "key_prefix": shared_redis.prefix},
        "events": events,
    }
    path = tmp_path / "authproxy.toml"
    path.write_text(to_toml(document))
    return path


async def run(*args: str, config) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authproxy",
        *args,
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={"HOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def emit(shared_redis, count: int) -> list[Event]:
    store = shared_store(shared_redis)
    events, _ = open_events(EventSettings(), store, Metrics(), SystemClock())
    made = []
    for i in range(count):
        event = Event.new(
            EventType.NEEDS_REAUTHORIZATION, KEY, SystemClock().now(), reason=f"invalid grant {i}"
        )
        await events.emit(event)
        made.append(event)
    assert not events.outbox
    await store.close()
    return made


async def test_tail_since_prints_the_retained_events_then_stops_after_count(tmp_path, shared_redis):
    config = write_config(tmp_path, shared_redis)
    made = await emit(shared_redis, 3)
    code, out, err = await run("events", "tail", "--since", "10m", "--count", "3", "--json", config=config)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [event.id for event in made]
    code, out, err = await run("events", "tail", "--since", "10m", "--count", "1", config=config)
    assert out.split()[1:4] == ["shop.needs_reauthorization", "shopee/1001", "reason=invalid"]


async def test_tail_follows_events_as_they_come(tmp_path, shared_redis):
    config = write_config(tmp_path, shared_redis)
    tailing = asyncio.ensure_future(run("events", "tail", "--count", "2", config=config))
    emitted = []
    while not tailing.done():  # it prints only events after it started: emit until it has two
        emitted += await emit(shared_redis, 1)
        await asyncio.wait([tailing], timeout=0.2)
    code, out, err = tailing.result()
    assert code == 0, err
    shown = [line.rsplit(" id=", 1)[1] for line in out.splitlines()]
    ids = [event.id for event in emitted]
    assert len(shown) == 2 and shown[0] in ids
    assert ids[ids.index(shown[0]) + 1] == shown[1]  # two consecutive events, as they came


async def test_replay_redelivers_signed_events_in_order(tmp_path, shared_redis, serve):
    receiver = Receiver()
    config = write_config(tmp_path, shared_redis, url_of(await serve(receiver.app())))
    made = await emit(shared_redis, 3)
    code, out, err = await run("events", "replay", "--since", "1h", config=config)
    assert code == 0, err
    assert receiver.ids() == [event.id for event in made] and receiver.bad == []
    assert out.splitlines()[-1].startswith("3 event(s) since ")
    receiver.down = True
    code, out, err = await run("events", "replay", "--since", "1h", config=config)
    assert code == 1
    assert f"replay stopped: {made[0].id}" in err and "HTTP 503 after 5 attempts" in err
    assert SECRET not in out + err


async def test_events_commands_refuse_what_they_cannot_do(tmp_path, shared_redis):
    config = write_config(tmp_path, shared_redis)
    code, _, err = await run("events", "replay", "--since", "yesterday", config=config)
    assert code == 2 and "neither an ISO 8601 time nor a duration" in err
    code, _, err = await run("events", "replay", "--since", "2h", config=config)
    assert code == 2 and "webhook_url is not configured" in err
    memory = tmp_path / "memory.toml"
    memory.write_text(to_toml({"server": {"store_url": "memory://"}}))
    code, _, err = await run("events", "tail", config=memory)
    assert code == 2 and "need Redis" in err
