"""Run a Python program and count the bytecodes it executes, per function, between two signals.

    python bench/opcode_trace.py OUT -m module [args...]
    python bench/opcode_trace.py OUT script.py [args...]

SIGUSR1 starts counting (sys.settrace with opcode events), SIGUSR2 stops and writes OUT: JSON
{"functions": [[file, first line, function, bytecodes, entries]...], "lines": [[file, line,
function, bytecodes]...]} ("entries": calls plus coroutine and generator resumptions; "lines"
only with OPCODE_TRACE_LINES=1 in the environment). Used by bench/bytecodes.py; slow while
counting (about 30x), exact.
Frames already running when counting starts are counted from their next entry on.
"""

from __future__ import annotations

import collections
import json
import os
import runpy
import signal
import sys
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

opcodes: collections.Counter[CodeType] = collections.Counter()
entries: collections.Counter[CodeType] = collections.Counter()


lines: collections.Counter[tuple[CodeType, int]] = collections.Counter()


def _each_opcode(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "opcode":
        opcodes[frame.f_code] += 1
    return _each_opcode


def _each_opcode_by_line(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "opcode":
        opcodes[frame.f_code] += 1
        lines[frame.f_code, frame.f_lineno] += 1
    return _each_opcode_by_line


def _each_entry(frame: FrameType, event: str, arg: Any) -> Any:
    if event != "call":
        return None
    frame.f_trace_opcodes = True
    entries[frame.f_code] += 1
    return _each_opcode_by_line if BY_LINE else _each_opcode


BY_LINE = bool(os.environ.get("OPCODE_TRACE_LINES"))


def _start(signum: int, frame: FrameType | None) -> None:
    opcodes.clear()
    entries.clear()
    lines.clear()
    sys.settrace(_each_entry)


def _stop(out: Path) -> None:
    sys.settrace(None)
    rows = [
        [code.co_filename, code.co_firstlineno, code.co_qualname, count, entries[code]]
        for code, count in opcodes.items()
    ]
    by_line = [[code.co_filename, line, code.co_qualname, count] for (code, line), count in lines.items()]
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps({"functions": rows, "lines": by_line}))
    partial.rename(out)


def main() -> None:
    out = Path(sys.argv[1])
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, lambda signum, frame: _stop(out))
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
