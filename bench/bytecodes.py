"""Python bytecodes per proxied request, by function: where the interpreted work goes.

    python bench/bytecodes.py [--variant NAME=SRC[,KEY=VALUE...]]... [--shape bearer|shopee]
                              [--test get:32] [--requests N] [--top N] [--lines PATH_PART]
                              [--base-port P]

bench/instructions.py counts machine instructions, all of them in one figure. This script says
which Python functions execute them: it runs each authproxy variant, and `aio1-cache`, under
bench/opcode_trace.py, sends exactly N requests after a warm-up with counting on, and prints
bytecodes per request in all, per module and per function (the top N), each with how often it
is entered per request (calls and coroutine resumptions); with --lines, also per line of
the files whose path contains PATH_PART (say `authproxy/`). The count is exact: the same code
gives the same figures, give or take the loop turns a batch of requests shares.

Bytecodes are not time: one may call into C that does a lot (json encoding, HMAC, a socket
write) and is counted once. Use it to find interpreted work the bare proxy does not do, and
bench/instructions.py or bench/sidebyside.py to judge what removing it is worth.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instructions

TRACER = Path(__file__).resolve().parent / "opcode_trace.py"
Row = tuple[str, int, str, int, int]  # file, first line, function, bytecodes, entries
Line = tuple[str, int, str, int]  # file, line, function, bytecodes


def under_tracer(spec: dict, out: Path) -> None:
    """Run the spec's python under opcode_trace.py (the same pid: bash and taskset exec)."""
    argv = spec["argv"]
    wrap = f"{shlex.quote(str(TRACER))} {shlex.quote(str(out))}"
    if argv[-2:-1] == ["-c"]:  # authproxy: bash -c "...; exec python -m authproxy serve ..."
        head, sep, serve = argv[-1].partition("&& exec ")
        if not sep:
            raise RuntimeError(f"no exec in the command of {spec['name']}: {argv[-1]}")
        python, rest = serve.split(" ", 1)
        argv[-1] = f"{head}{sep}{python} {wrap} {rest}"
    else:
        python = next(i for i, arg in enumerate(argv) if arg.endswith("python") or "/python" in arg)
        argv[python + 1 : python + 1] = [str(TRACER), str(out)]


def traced(pid: int, out: Path, send_all: Callable[[], None]) -> tuple[list[Row], list[Line]]:
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)  # the signal is handled at the loop's next turn; nothing is in flight here
    send_all()
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no counts from {pid}")
        time.sleep(0.1)
    counts = json.loads(out.read_text())
    out.unlink()
    return [tuple(row) for row in counts["functions"]], [tuple(row) for row in counts["lines"]]  # type: ignore[misc]


def short(path: str) -> str:
    for marker in ("site-packages/", "/authproxy/", "/lib/python3"):
        if marker in path:
            return path[path.index(marker) :].removeprefix("site-packages/").lstrip("/")
    return Path(path).name


def report_lines(lines: list[Line], requests: int, where: str) -> None:
    """Bytecodes per request on each line of the files whose path contains `where`."""
    print(f"\n| line in {where} | function | bytecodes/request |\n|---|---|---:|")
    for path, line, func, count in sorted(lines, key=lambda row: (row[0], row[1] or 0)):
        if where in path and count >= requests / 10:
            print(f"| {short(path)}:{line} | {func} | {count / requests:,.1f} |")


def report(name: str, rows: list[Row], requests: int, top: int) -> None:
    total = sum(row[3] for row in rows) / requests
    print(f"\n## {name}: {total:,.0f} bytecodes/request\n")
    modules: collections.Counter[str] = collections.Counter()
    for path, _, _, count, _ in rows:
        modules[short(path)] += count
    print("| module | bytecodes/request |\n|---|---:|")
    for module, count in modules.most_common(top):
        print(f"| {module} | {count / requests:,.0f} |")
    print("\n| function | bytecodes/request | entries/request |\n|---|---:|---:|")
    for path, line, func, count, entered in sorted(rows, key=lambda r: -r[3])[:top]:
        print(f"| {short(path)}:{line} {func} | {count / requests:,.1f} | {entered / requests:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--shape", default="bearer", choices=["bearer", "shopee"])
    parser.add_argument("--test", default="get:32")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--lines", metavar="PATH_PART", help="also bytecodes per line in these files")
    parser.add_argument("--harness")
    parser.add_argument("--base-port", type=int, default=32080)
    args = parser.parse_args()
    h, home, specs = instructions.beside_baseline(args, "authproxy-bytecodes-")
    outs = {spec["name"]: home / f"bytecodes.{spec['name']}.json" for spec in specs}
    for spec in specs:
        under_tracer(spec, outs[spec["name"]])
        if args.lines:
            spec["env"] = {**spec.get("env", {}), "OPCODE_TRACE_LINES": "1"}
    results: dict[str, tuple[list[Row], list[Line]]] = {}
    method, conns = args.test.split(":")
    try:
        envprocs = h.start_env()
        h.start_candidates(specs, envprocs)
        h.validate(specs)
        for spec in specs:
            port = spec["port"]
            path = spec["url"].split(str(port), 1)[1]
            request = instructions.request_bytes(method, path, port, h.POST_BODY)
            instructions.send(port, request, args.warmup, int(conns))
            send_all = functools.partial(instructions.send, port, request, args.requests, int(conns))
            results[spec["name"]] = traced(spec["pgid"], outs[spec["name"]], send_all)
    finally:
        h.stop_all()
    for name, (rows, lines) in results.items():
        report(name, rows, args.requests, args.top)
        if args.lines:
            report_lines(lines, args.requests, args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
