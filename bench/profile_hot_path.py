"""A sampling profile of authproxy's request path under wrk load (py-spy).

    python bench/profile_hot_path.py [--variant NAME=SRC[,KEY=VALUE...]] [--shape bearer|shopee]
                                     [--test get:32|post:32] [--seconds S] [--lines] [--out DIR]

Starts the ../shared/bench environment (upstream nginx, redis) and one authproxy as
bench/sidebyside.py does, runs wrk against it and records it with `py-spy record` (install
py-spy in the venv yourself: it is not a dependency). Writes DIR/profile.svg (flame graph),
DIR/profile.txt (collapsed stacks) and prints the functions with the most samples, own and
cumulative.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidebyside

#: py-spy counts a sample in the event loop's poll as the loop's run call (uvloop is C)
IDLE_LEAVES = ("Runner.run (asyncio/runners.py:86)", "Runner.run (asyncio/runners.py:118)")


def summarise(collapsed: Path, top: int = 40) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        if stack.endswith(IDLE_LEAVES) or "concurrent/futures/thread.py" in stack:
            continue  # waiting in the event loop's poll, or an idle worker thread (malloc_trim's)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} busy samples", "", "own %  function"]
    lines += [f"{100 * n / samples:5.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "cumulative %  function"]
    lines += [f"{100 * n / samples:5.1f}  {name}" for name, n in total.most_common(3 * top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="authproxy")
    parser.add_argument("--shape", default="bearer", choices=["bearer", "shopee"])
    parser.add_argument("--test", default="get:32")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--harness")
    parser.add_argument("--base-port", type=int, default=29080)
    parser.add_argument("--out", default="")
    parser.add_argument("--lines", action="store_true", help="samples by line, not by function")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(sidebyside.ROOT / ".venv" / "bin" / "py-spy")
    folder = sidebyside.find_harness(args.harness)
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="authproxy-profile-"))
    if not (home / ".venv").exists():
        (home / ".venv").symlink_to(folder / ".venv")
    os.environ.update(BENCH_HOME=str(home), BASE_PORT=str(args.base_port), CANDIDATES="none")
    h = sidebyside.load_harness(folder)
    out = Path(args.out or home / "profile")
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="configs-", dir=home))
    specs = sidebyside.proxy_specs(h, [sidebyside.Variant(args.variant)], [args.shape], workdir)
    try:
        envprocs = h.start_env()
        h.start_candidates(specs, envprocs)
        h.validate(specs)
        spec = specs[0]
        method, conns = args.test.split(":")
        h.run_wrk(spec["url"], method, int(conns), 2)  # warm-up
        pid = str(spec["pgid"])
        recorder = subprocess.Popen(
            [spy, "record", "--pid", pid, "--duration", str(args.seconds), "--rate", "250",
             *([] if args.lines else ["--function"]),
             "--format", "raw", "--output", str(out / "profile.txt")],
        )  # fmt: skip
        load = threading.Thread(target=h.run_wrk, args=(spec["url"], method, int(conns), args.seconds + 2))
        load.start()
        recorder.wait()
        load.join()
    finally:
        h.stop_all()
    summary = summarise(out / "profile.txt")
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"== wrote {out}/profile.txt and summary.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
