"""Instructions per proxied request, counted by valgrind (callgrind): a figure noise cannot move.

    python bench/instructions.py [--variant NAME=SRC[,KEY=VALUE...]]... [--shape bearer|shopee]
                                 [--tests get:32,post:32] [--requests N] [--base-port P]

CPU time per request on a shared machine moves by 10-30 % between runs (other tenants, steal,
frequency), more than most changes to the request path are worth. The instructions a process
executes for the same requests do not: this script runs each authproxy variant, and the bare
`aio1-cache` proxy of ../shared/bench, under `valgrind --tool=callgrind`, sends each exactly N
requests after a warm-up (zeroing the counters in between with `callgrind_control -z`, then
dumping them) and prints instructions per request and the ratio to `aio1-cache`'s.

Instructions are not time: a cache miss or a system call costs the same count as a cheap
instruction, and the kernel's work is not counted (it is the same for both proxies: 2 reads and
2 writes per request, measured with strace). Work done per unit of wall time weighs more than
in a real run, since everything runs about 50x slower under valgrind: authproxy's penalty check
(a Redis script call at most every 100 ms per shop, about 450,000 instructions) comes about every
10th request instead of every 400th, which adds about 45,000 instructions to each; the access
log's flush every 50 ms and spare rate-limit turns kept for 50 ms weigh more too. The baseline's
token is cached for BASELINE_TOKEN_TTL here, so it reads Redis once. Runs of the same authproxy
code agree within 1 %; aio1-cache's count moved by up to 6 % between runs (how many requests one
turn of its event loop holds). Compare authproxy variants with each other, in one run, where all
this weighs the same; the issue's targets are judged by bench/sidebyside.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidebyside

START_TIMEOUT = 300.0  # seconds: python under valgrind starts slowly
#: the baseline's token cache (1 s in ../shared/bench): about every 100th request under
#: valgrind would read Redis, against every 5,000th in a real run
BASELINE_TOKEN_TTL = 3600
TOTALS = re.compile(rb"^(?:totals|summary): (\d+)", re.MULTILINE)


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no", "-q"]


def under_valgrind(spec: dict, out: Path) -> None:
    """Run the spec's python under callgrind (the same pid: valgrind execs into its tool)."""
    wrap = " ".join(callgrind(out))
    argv = spec["argv"]
    if argv[-2:-1] == ["-c"]:  # authproxy: bash -c "...; exec python -m authproxy serve ..."
        if "&& exec " not in argv[-1]:  # the pid counted must stay the one the harness started
            raise RuntimeError(f"no exec in the command of {spec['name']}: {argv[-1]}")
        argv[-1] = argv[-1].replace("&& exec ", f"&& exec {wrap} ", 1)
    else:  # the harness's baseline: [taskset..., python, script, ...]
        python = next(i for i, arg in enumerate(argv) if arg.endswith("python") or "/python" in arg)
        argv[python:python] = shlex.split(wrap)
    spec["start_timeout"] = START_TIMEOUT


def request_bytes(method: str, path: str, port: int, body: bytes) -> bytes:
    head = f"{method.upper()} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if method == "post":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body if method == "post" else b"")


async def one_connection(port: int, request: bytes, count: int, statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(int(head.split(b" ", 2)[1]))
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is None:
                raise RuntimeError(f"a reply without Content-Length: {head[:200]!r}")
            await reader.readexactly(int(length.group(1)))
    finally:
        writer.close()


def send(port: int, request: bytes, total: int, conns: int) -> None:
    statuses: list[int] = []

    async def all_connections() -> None:
        shares = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
        await asyncio.gather(*(one_connection(port, request, n, statuses) for n in shares if n))

    asyncio.run(all_connections())
    bad = [s for s in statuses if s != 200]
    if bad or len(statuses) != total:
        raise RuntimeError(f"{len(statuses)} replies of {total}, not 200: {bad[:5]}")


def counted(pid: int, out: Path, send_all: Callable[[], None]) -> int:
    """Instructions the process executed while send_all() ran."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    send_all()
    before = set(out.parent.glob(out.name + "*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(out.parent.glob(out.name + "*")) - before:
            found = TOTALS.search(dump.read_bytes())
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump for {pid}")


def per_request(spec: dict, out: Path, test: str, post_body: bytes, requests: int, warmup: int) -> float:
    """Instructions per request of `test` ("get:32") against the candidate of `spec`."""
    method, conns = test.split(":")
    port = spec["port"]
    request = request_bytes(method, spec["url"].split(str(port), 1)[1], port, post_body)
    send(port, request, warmup, int(conns))
    return counted(spec["pgid"], out, functools.partial(send, port, request, requests, int(conns))) / requests


def beside_baseline(args: argparse.Namespace, prefix: str) -> tuple[ModuleType, Path, list[dict]]:
    """The harness of ../shared/bench in a new home (`prefix`...), and the specs of `aio1-cache`
    (its token cached for BASELINE_TOKEN_TTL) and of each --variant in --shape."""
    folder = sidebyside.find_harness(args.harness)
    home = Path(tempfile.mkdtemp(prefix=prefix))
    (home / ".venv").symlink_to(folder / ".venv")
    os.environ.update(BENCH_HOME=str(home), BASE_PORT=str(args.base_port), CANDIDATES="aio1-cache")
    h = sidebyside.load_harness(folder)
    workdir = Path(tempfile.mkdtemp(prefix="configs-", dir=home))
    variants = [sidebyside.Variant(v) for v in args.variant or ["authproxy"]]
    specs = [s for s in h.candidate_specs() if s["name"] == "aio1-cache"]
    for spec in specs:  # the baseline reads its token from Redis once per TTL
        argv = spec["argv"]
        argv[argv.index("--cache-ttl") + 1] = str(BASELINE_TOKEN_TTL)
    return h, home, specs + sidebyside.proxy_specs(h, variants, [args.shape], workdir)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--shape", default="bearer", choices=["bearer", "shopee"])
    parser.add_argument("--tests", default="get:32,post:32")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--harness")
    parser.add_argument("--base-port", type=int, default=31080)
    args = parser.parse_args()
    h, home, specs = beside_baseline(args, "authproxy-instructions-")
    outs = {}
    for spec in specs:
        outs[spec["name"]] = home / f"callgrind.{spec['name']}"
        under_valgrind(spec, outs[spec["name"]])
    counts: dict[tuple[str, str], float] = {}
    try:
        envprocs = h.start_env()
        h.start_candidates(specs, envprocs)
        h.validate(specs)
        for test in args.tests.split(","):
            for spec in specs:
                per = per_request(spec, outs[spec["name"]], test, h.POST_BODY, args.requests, args.warmup)
                counts[(spec["name"], test)] = per
                print(f"  {test:8} {spec['name']:20} {per:12,.0f} instructions/request", flush=True)
    finally:
        h.stop_all()
    print("\n| candidate | test | instructions/request | x aio1-cache |\n|---|---|---:|---:|")
    for (name, test), per in counts.items():
        base = counts.get(("aio1-cache", test))
        ratio = f"{per / base:.2f}" if base else "n/a"
        print(f"| {name} | {test} | {per:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
