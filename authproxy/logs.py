"""Log set-up: one JSON object per line, or readable text on a terminal.

Records may carry `extra={"fields": {...}}`; those become JSON members (or
`key=value` pairs in text). Callers put no secrets in messages or fields.

A request's line (fields `method`, `path`, `status`; see proxy/handler.py)
reads in text like what the curl user just typed:

    12:00:01 GET /v2/orders?limit=5 -> 200 app=gfg shop=shop1 12.3ms refreshed id=4f1c…

Request lines go through `AccessLog`: while the handler `setup_logging` made is
the only one that would see them, it formats the line itself and writes it to
that handler's stream: the same line, without a LogRecord, a caller lookup and
the handler chain, and the lines of 50 ms (`FLUSH_EVERY`) in one write, so a
busy proxy does not make a system call per request. Otherwise (tests, an
embedder's own handlers or filters) it logs a record as any other logger.
The logger `authproxy.access` switches them on and off as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson

EXCHANGE_KEYS = ("method", "path", "status")
SHOWN_FIRST = ("app", "shop")
FLAGS = ("refreshed", "replayed")
RESET = "\033[0m"
STATUS_COLORS = {2: "\033[32m", 3: "\033[36m", 4: "\033[33m", 5: "\033[31m"}
LEVEL_COLORS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


#: the stdlib's encoder, for what orjson refuses (lone surrogates, ints over 64 bits, keys
#: that are not strings, deep nesting)
_ENCODER = json.JSONEncoder(default=str)
ACCESS_LOGGER = "authproxy.access"
#: handed to _default as they are, as the stdlib's encoder would see them: orjson would write
#: a dataclass's every field, those its repr hides too (a token's), and a datetime its own way
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
#: line breaks to str.splitlines() that JSON leaves unescaped: escaped, so that a line stays
#: one line whoever splits it (the stdlib's encoder wrote all but ASCII escaped)
_BREAKS = (("\u0085", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _default(value: Any) -> Any:
    """What orjson writes no JSON for, as json.dumps(default=str) writes it: a float
    subclass as its number, anything else as its str()."""
    return float(value) if isinstance(value, float) else str(value)


def _dumps(data: Mapping[str, Any]) -> str:
    """One JSON object on one line; anything JSON has no type for as its str()."""
    try:
        text = orjson.dumps(data, default=_default, option=_PASSTHROUGH).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return _ENCODER.encode(_named_as_str(data))
    if not text.isascii():
        for brk, escaped in _BREAKS:
            text = text.replace(brk, escaped)
    return text


def _named_as_str(value: Any) -> Any:
    """`value` with each NamedTuple in it as its str(), as orjson's `default` writes it: the
    stdlib's encoder would write one as a list of all its fields (a request's headers too)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _named_as_str(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_named_as_str(item) for item in value]
    return value


ACCESS_MESSAGE = "%(method)s %(path)s -> %(status)s"


class _Seconds:
    """strftime of the current second, computed once a second."""

    def __init__(self, fmt: str, convert: Callable[[float], time.struct_time]) -> None:
        self.fmt, self.convert = fmt, convert
        self.second, self.text = -1, ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.fmt, self.convert(now))
        return self.text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)
        self._millisecond, self._stamp = -1, ""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _dumps(data)

    def exchange(self, fields: Mapping[str, Any], created: float) -> str:
        """What `format` makes of an access record with these fields, created then."""
        msg = f"{fields['method']} {fields['path']} -> {fields['status']}"
        stamp = self._timestamp(created)
        # a field replaces a head member, as in format
        return _dumps({"ts": stamp, "level": "info", "logger": ACCESS_LOGGER, "msg": msg, **fields})

    def _timestamp(self, created: float) -> str:
        """UTC to the millisecond, formatted once per millisecond (a busy proxy logs several)."""
        millisecond = int(created * 1000)
        if millisecond != self._millisecond:
            stamp = f"{self._second(millisecond // 1000)}.{millisecond % 1000:03d}Z"
            self._millisecond, self._stamp = millisecond, stamp
        return self._stamp


class TextFormatter(logging.Formatter):
    """One line per record for a person at a terminal; colours only when asked."""

    def __init__(self, color: bool = False) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.color = color
        self._second = _Seconds("%H:%M:%S", time.localtime)

    def exchange(self, fields: Mapping[str, Any], created: float) -> str:
        """What `format` makes of an access record with these fields, created then."""
        return f"{self._second(created)} {_one_line(self._exchange(fields))}"

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "fields", {})
        if all(key in fields for key in EXCHANGE_KEYS):
            body = self._exchange(fields)
        else:
            body = self._record(record, fields)
        line = f"{self.formatTime(record, self.datefmt)} {_one_line(body)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def _exchange(self, fields: Mapping[str, Any]) -> str:
        status = str(fields["status"])
        parts = [str(fields["method"]), str(fields["path"]), "->", self._paint(status, _status_color(status))]
        parts += [f"{key}={fields[key]}" for key in SHOWN_FIRST if fields.get(key) is not None]
        if fields.get("upstream_ms") is not None:
            parts.append(f"{fields['upstream_ms']}ms")
        parts += [flag for flag in FLAGS if fields.get(flag)]
        skip = {*EXCHANGE_KEYS, *SHOWN_FIRST, *FLAGS, "upstream_ms", "request_id"}
        parts += [f"{key}={value}" for key, value in fields.items() if key not in skip and value is not None]
        if fields.get("request_id"):
            parts.append(f"id={fields['request_id']}")
        return " ".join(parts)

    def _record(self, record: logging.LogRecord, fields: Mapping[str, Any]) -> str:
        level = self._paint(record.levelname.lower(), LEVEL_COLORS.get(record.levelname))
        pairs = "".join(f" {key}={value}" for key, value in fields.items())
        return f"{level} {record.name}: {record.getMessage()}{pairs}"

    def _paint(self, text: str, color: str | None) -> str:
        return f"{color}{text}{RESET}" if self.color and color else text


def _status_color(status: str) -> str | None:
    return STATUS_COLORS.get(int(status) // 100) if status.isdigit() else None


def _one_line(text: str) -> str:
    """A message never spans lines: a forged newline cannot fake a log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class Throttled:
    """Lines about one kind of event, at most one per `interval` seconds.

    For events a client can cause at will (malformed or slow requests): the log
    shows that they happen without one line each. A line counts the events held
    back since the line before it (field `held_back`)."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self.quiet_until = float("-inf")
        self.held_back = 0

    def info(self, message: str, *args: object) -> None:
        now = self.clock()
        if now < self.quiet_until:
            self.held_back += 1
            return
        self.quiet_until = now + self.interval
        fields = {"held_back": self.held_back} if self.held_back else {}
        self.held_back = 0
        self.logger.info(message, *args, extra={"fields": fields})


#: how long a request's line may wait to go out with the lines after it: a busy proxy writes
#: once per interval, not once per request (a write costs about as much as the line itself)
FLUSH_EVERY = 0.05
#: lines that go out at once, whatever the interval (a bound on what waits in memory)
FLUSH_LINES = 512


class AccessLog:
    """Writes request lines (see the module's doc): straight to the stream of the handler
    `setup_logging` made when no other handler or filter would see them, else as records."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._pending: list[str] = []  # lines not written yet, for the handler below
        self._handler: logging.StreamHandler[TextIO] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop the timer is on
        self._timer_thread: int | None = None  # and the thread that runs it

    def write(self, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = _direct()
        if handler is None or self.logger.handlers or self.logger.filters or not self.logger.propagate:
            self.logger.info(ACCESS_MESSAGE, fields, extra={"fields": fields})
            return
        if handler is not self._handler or not self._timer_runs_here():
            self._start(handler)
        self._pending.append(handler.formatter.exchange(fields, time.time()))  # type: ignore[union-attr]
        if self._timer is None or len(self._pending) >= FLUSH_LINES:  # no loop: written at once
            self.flush()

    def _timer_runs_here(self) -> bool:
        """Whether the flush timer is on the loop running in this thread (a thread runs one
        loop at a time): asked per line without a loop lookup, a getpid() system call."""
        loop = self._timer_loop
        return loop is not None and self._timer_thread == threading.get_ident() and loop.is_running()

    def _start(self, handler: logging.StreamHandler[TextIO]) -> None:
        """Write what waits (another handler's lines, or a stopped loop's, whose timer may
        never fire), then time the next flush on the running loop, if there is one."""
        self.flush()
        self._handler = handler
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer, self._timer_loop = loop.call_later(FLUSH_EVERY, self.flush), loop
        self._timer_thread = threading.get_ident()

    def flush(self) -> None:
        """Write the lines that wait, now (the server calls it as it stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        if self._pending and self._handler is not None:
            lines, self._pending = self._pending, []
            _emit(self._handler, self._handler.terminator.join(lines))


def _emit(handler: logging.StreamHandler[TextIO], text: str) -> None:
    with handler.lock:  # type: ignore[union-attr]
        try:
            handler.stream.write(text + handler.terminator)
            handler.flush()
        except Exception:  # as logging does: a broken stream must not fail the request
            handler.handleError(logging.makeLogRecord({"msg": text}))


_installed: logging.StreamHandler[TextIO] | None = None  # the handler setup_logging made


def _direct() -> logging.StreamHandler[TextIO] | None:
    """setup_logging's handler, when it is the root's only one and nothing filters."""
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or handlers[0] is not _installed or root.filters or _installed.filters:
        return None
    if not isinstance(_installed.formatter, (JsonFormatter, TextFormatter)):
        return None
    return _installed


def wants_color(stream: TextIO) -> bool:
    """Colours on a terminal, unless NO_COLOR (https://no-color.org) says otherwise."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    global _installed
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter(color=wants_color(out)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _installed = handler
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
