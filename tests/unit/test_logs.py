"""Formatters and set-up: one line per record, colours only on a terminal, JSON elsewhere."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import sys
import threading
from typing import Any

import pytest

from authproxy.logs import FLUSH_LINES, AccessLog, JsonFormatter, TextFormatter, Throttled, setup_logging
from authproxy.models import OutgoingRequest, Token, TokenKey
from authproxy.proxy.handler import _tenths


def record(msg: str = "hello", level: int = logging.INFO, name: str = "authproxy.x", **fields: Any):
    """A record as `log.info(msg, fields, extra={"fields": fields})` makes it (see handler.py)."""
    made = logging.LogRecord(name, level, __file__, 1, msg, (fields,) if "%(" in msg else None, None)
    if fields:
        made.fields = fields  # type: ignore[attr-defined]
    return made


def exchange(**changes: Any) -> logging.LogRecord:
    fields = {
        "request_id": "r1",
        "app": "gfg",
        "shop": "shop1",
        "method": "GET",
        "path": "/v2/orders",
        "status": 200,
        "upstream_ms": 12.3,
        "refreshed": False,
        "replayed": False,
        **changes,
    }
    return record("%(method)s %(path)s -> %(status)s", **fields)


def test_text_exchange_line_reads_like_the_request():
    line = TextFormatter().format(exchange(refreshed=True))
    assert line[9:] == "GET /v2/orders -> 200 app=gfg shop=shop1 12.3ms refreshed id=r1"


def test_text_exchange_line_leaves_out_what_is_unknown():
    line = TextFormatter().format(exchange(app=None, shop=None, upstream_ms=None, error="bad_path"))
    assert line[9:] == "GET /v2/orders -> 200 error=bad_path id=r1"


def test_text_colours_status_and_warnings_only_when_asked():
    ok, failed = exchange(), exchange(status=502)
    assert "\033[" not in TextFormatter().format(ok)
    assert "\033[32m200\033[0m" in TextFormatter(color=True).format(ok)
    assert "\033[31m502\033[0m" in TextFormatter(color=True).format(failed)
    warning = record("slow", logging.WARNING)
    assert TextFormatter(color=True).format(warning)[9:] == "\033[33mwarning\033[0m authproxy.x: slow"


def test_text_other_records_show_level_logger_message_and_fields():
    line = TextFormatter().format(record("refreshed token", key="gfg/shop1"))
    assert line[9:] == "info authproxy.x: refreshed token key=gfg/shop1"


def test_a_newline_in_a_message_cannot_fake_a_second_line():
    forged = "ok\n12:00:00 GET /admin -> 200"
    assert "\n" not in TextFormatter().format(record(forged))
    assert "\n" not in JsonFormatter().format(record(forged))


def test_exceptions_follow_their_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    text = TextFormatter().format(failed)
    assert text.splitlines()[0].endswith("info authproxy.x: failed")
    assert "ValueError: boom" in text
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exc"]


def test_json_has_the_fields_and_survives_odd_values():
    data = json.loads(JsonFormatter().format(exchange(upstream_ms=None, when=object())))
    assert data["msg"] == "GET /v2/orders -> 200"
    assert data["status"] == 200 and data["upstream_ms"] is None
    assert data["ts"].endswith("Z") and data["level"] == "info"
    assert data["when"].startswith("<object")


def test_json_shows_a_request_by_its_repr_also_where_orjson_gives_up():
    """A lone surrogate sends a line to the stdlib's encoder, which would write a NamedTuple
    (a request: its headers too) as a list of its fields."""
    request = OutgoingRequest("GET", "/x", "", (("Authorization", "Bearer secret-t"),), b"secret-b")
    for path in ("/x", "/\udc80"):
        line = JsonFormatter().format(exchange(path=path, request=request, nested={"r": [request]}))
        assert "secret" not in line and json.loads(line)["request"] == repr(request)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "fmt", "no_color", "expected", "color"),
    [
        (io.StringIO, "auto", "", JsonFormatter, False),
        (Terminal, "auto", "", TextFormatter, True),
        (Terminal, "auto", "1", TextFormatter, False),
        (Terminal, "json", "", JsonFormatter, False),
        (io.StringIO, "text", "", TextFormatter, False),
    ],
)
def test_setup_picks_the_format(restore_root, monkeypatch, stream, fmt, no_color, expected, color):
    monkeypatch.setenv("NO_COLOR", no_color)
    out = stream()
    setup_logging(fmt, "info", stream=out)
    formatter = logging.getLogger().handlers[0].formatter
    assert type(formatter) is expected
    assert getattr(formatter, "color", False) is color
    logging.getLogger("authproxy.test").info("written")
    assert "written" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_lines_written_directly_are_the_records_lines(restore_root, fmt):
    """setup_logging's handler alone: AccessLog writes the line itself, the one the record makes."""
    out = io.StringIO()
    setup_logging(fmt, "info", stream=out)
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    fields = dict(exchange(path="/v2/orders?access_token=***\nforged").fields)
    AccessLog().write(fields)
    written = out.getvalue()
    made = exchange(**fields)
    made.name = "authproxy.access"
    made.created, made.msecs = 1700000000.25, 250.0
    expected = formatter.format(made)
    assert written.count("\n") == 1 and written.endswith("\n")
    if fmt == "json":  # the same members, in the same order; only the time differs
        line, wanted = json.loads(written), json.loads(expected)
        assert list(line) == list(wanted) and {**line, "ts": ""} == {**wanted, "ts": ""}
        assert line["ts"].endswith("Z") and len(line["ts"]) == len(wanted["ts"])
    else:
        assert written.rstrip("\n").split(" ", 1)[1] == expected.split(" ", 1)[1]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"upstream_ms": None, "refreshed": True, "error": "client_gone", "waited_ms": 12.5},
        {"path": '/v2/"quoted"\\back\nline\u00e9\u2603?q=1', "shop": None, "status": 502},
        {"upstream_ms": float("nan"), "odd": object(), "nested": {"a": [1, 2.5, None]}},
        {"ts": "a field named like a head member", "logger": "replaced"},
    ],
)
def test_json_exchange_line_is_the_records_line(changes):
    """JsonFormatter.exchange, without a record: the same text as format() makes of the record."""
    formatter = JsonFormatter()
    made = exchange(**changes)
    made.name = "authproxy.access"
    made.created, made.msecs = 1700000000.25, 250.0
    assert formatter.exchange(made.fields, made.created) == formatter.format(made)  # type: ignore[attr-defined]


class CountingStream(io.StringIO):
    """A stream that keeps each write and says when one came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.written.set()
        return super().write(text)

    def ids(self) -> list[str]:
        return [json.loads(line)["request_id"] for line in self.getvalue().splitlines()]


async def test_access_lines_of_an_interval_are_written_at_once(restore_root):
    out = CountingStream()
    setup_logging("json", "info", stream=out)
    access = AccessLog()
    for n in range(3):
        access.write(dict(exchange(request_id=f"r{n}").fields))
    await asyncio.sleep(0)  # a turn of the loop: not at its end, but FLUSH_EVERY later
    assert out.writes == []
    await asyncio.wait_for(out.written.wait(), timeout=5)
    assert len(out.writes) == 1 and out.ids() == ["r0", "r1", "r2"]

    access.write(dict(exchange(request_id="r3").fields))
    access.flush()  # at once, and the interval's timer has nothing left to write
    assert len(out.writes) == 2
    out.written.clear()
    access.write(dict(exchange(request_id="r4").fields))
    await asyncio.wait_for(out.written.wait(), timeout=5)
    assert len(out.writes) == 3 and out.ids() == ["r0", "r1", "r2", "r3", "r4"]


async def test_access_lines_go_out_at_once_when_many_wait(restore_root):
    out = CountingStream()
    setup_logging("json", "info", stream=out)
    access = AccessLog()
    for n in range(FLUSH_LINES):
        access.write(dict(exchange(request_id=f"r{n}").fields))
    assert len(out.writes) == 1 and out.ids() == [f"r{n}" for n in range(FLUSH_LINES)]


async def test_a_new_handler_gets_the_lines_after_the_old_one_got_its_own(restore_root):
    first, second = CountingStream(), CountingStream()
    setup_logging("json", "info", stream=first)
    access = AccessLog()
    access.write(dict(exchange(request_id="r0").fields))
    setup_logging("json", "info", stream=second)
    access.write(dict(exchange(request_id="r1").fields))
    assert first.ids() == ["r0"]
    await asyncio.wait_for(second.written.wait(), timeout=5)
    assert second.ids() == ["r1"]


def test_access_lines_reach_other_handlers_as_records_and_can_be_switched_off(restore_root):
    out = io.StringIO()
    setup_logging("json", "info", stream=out)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    fields = dict(exchange().fields)
    AccessLog().write(fields)
    assert [r.fields for r in records] == [fields]  # as a record: pytest's caplog sees it
    assert out.getvalue().count("\n") == 1  # and setup_logging's handler wrote it once
    logging.getLogger().removeHandler(keep)

    access = logging.getLogger("authproxy.access")
    access.setLevel(logging.WARNING)
    try:
        AccessLog().write(fields)
    finally:
        access.setLevel(logging.NOTSET)
    assert out.getvalue().count("\n") == 1


def test_throttled_lines_count_what_they_held_back():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.throttled")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    now = [100.0]
    throttled = Throttled(logger, interval=10.0, clock=lambda: now[0])
    for _ in range(500):
        throttled.info("bad request from %s", "10.0.0.1")
    now[0] += 10.0
    throttled.info("bad request from %s", "10.0.0.2")
    assert [r.getMessage() for r in records] == ["bad request from 10.0.0.1", "bad request from 10.0.0.2"]
    assert [getattr(r, "fields", {}) for r in records] == [{}, {"held_back": 499}]


def test_lines_of_a_closed_loop_are_not_left_waiting(restore_root):
    """A loop that ends before its timer fires: the next write (another loop's, or one
    with no loop running) writes what waits instead of waiting for that timer."""
    out = CountingStream()
    setup_logging("json", "info", stream=out)
    access = AccessLog()

    async def one(request_id: str) -> None:
        access.write(dict(exchange(request_id=request_id).fields))

    asyncio.run(one("r0"))  # its timer dies with its loop
    assert out.writes == []
    asyncio.run(one("r1"))
    assert out.ids() == ["r0"]
    access.write(dict(exchange(request_id="r2").fields))  # no loop: at once
    assert out.ids() == ["r0", "r1", "r2"]


def test_a_thread_without_a_loop_writes_at_once_while_another_threads_loop_runs(restore_root):
    """The flush timer belongs to the loop of the thread that started it: a line from
    another thread does not wait for that timer (its loop may end before it fires)."""
    out = CountingStream()
    setup_logging("json", "info", stream=out)
    access = AccessLog()
    started, written = threading.Event(), threading.Event()

    async def serving() -> None:
        access.write(dict(exchange(request_id="r0").fields))  # starts the timer on this loop
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, written.wait, 5)

    server = threading.Thread(target=asyncio.run, args=(serving(),))
    server.start()
    try:
        assert started.wait(5)
        access.write(dict(exchange(request_id="r1").fields))  # this thread runs no loop
        assert out.ids() == ["r0", "r1"]
    finally:
        written.set()
        server.join(5)


def test_json_lines_hide_what_reprs_hide():
    """A dataclass in a line's fields is its str(), as with the stdlib's encoder: a token's
    secrets (repr=False) never reach the line. And a float subclass stays a number."""
    token = Token("ACCESS-SECRET", expires_at=None, obtained_at=0.0, refresh_token="REFRESH-SECRET")

    class Seconds(float):
        pass

    made = record("m", token=token, key=TokenKey("gfg", "shop1"), waited=Seconds(1.5))
    line = JsonFormatter().format(made)
    assert "SECRET" not in line
    data = json.loads(line)
    assert data["key"] == "gfg/shop1" and data["token"] == str(token) and data["waited"] == 1.5


@pytest.mark.parametrize(
    "value",
    ["\ud800 a lone surrogate", 2**70, "a \u2028 line \u2029 separator \u0085 next line", "caf\u00e9"],
)
def test_json_lines_stay_one_valid_line(value):
    line = JsonFormatter().format(record("m", value=value))
    assert len(line.splitlines()) == 1
    assert json.loads(line)["value"] == value


@pytest.mark.parametrize(
    ("milliseconds", "shown"), [(12.34, 12.3), (0.25, 0.3), (0.04, 0.0), (1999.96, 2000.0), (0.0, 0.0)]
)
def test_access_line_times_are_tenths_of_a_millisecond_halves_up(milliseconds, shown):
    assert _tenths(milliseconds) == shown


def test_a_time_that_is_no_number_is_shown_as_it_is():
    assert math.isnan(_tenths(float("nan"))) and _tenths(float("inf")) == float("inf")
