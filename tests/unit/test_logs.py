"""Formatters and set-up: one line per record, colours only on a terminal, JSON elsewhere."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from authproxy.logs import JsonFormatter, TextFormatter, setup_logging


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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
