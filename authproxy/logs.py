"""Log set-up: one JSON object per line, or readable text on a terminal.

Records may carry `extra={"fields": {...}}`; those become JSON members (or
`key=value` pairs in text). Callers put no secrets in messages or fields.

A request's line (fields `method`, `path`, `status`; see proxy/handler.py)
reads in text like what the curl user just typed:

    12:00:01 GET /v2/orders?limit=5 -> 200 app=gfg shop=shop1 12.3ms refreshed id=4f1c…
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

EXCHANGE_KEYS = ("method", "path", "status")
SHOWN_FIRST = ("app", "shop")
FLAGS = ("refreshed", "replayed")
RESET = "\033[0m"
STATUS_COLORS = {2: "\033[32m", 3: "\033[36m", 4: "\033[33m", 5: "\033[31m"}
LEVEL_COLORS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """One line per record for a person at a terminal; colours only when asked."""

    def __init__(self, color: bool = False) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.color = color

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


def wants_color(stream: TextIO) -> bool:
    """Colours on a terminal, unless NO_COLOR (https://no-color.org) says otherwise."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter(color=wants_color(out)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
