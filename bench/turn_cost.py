"""What a rate-limit turn costs a call: Shaper.admit + learn, one call after another.

    python bench/turn_cost.py [--calls 50000] [--rounds 5] [--redis-url redis://127.0.0.1:6379/14]

The bench's Shopee app (bench/sidebyside.py's config: a limit that never binds, so every
call takes its turn) on a real Redis, spare turns on: most calls find a spare, one in
about 65 asks the store. Prints the process time per call of each round and the best;
the buckets it made are deleted afterwards. Run it on an idle machine: it is a
micro-benchmark of the shaper and the store's client side, not of a request.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import redis
import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidebyside

from authproxy.models import HttpReply, OutgoingRequest
from authproxy.runtime import open_runtime
from authproxy.settings import load_settings

REQUEST = OutgoingRequest(
    method="GET", path="/api/v2/order/get_order_list", query="", headers=(), body=None, streamed=False
)
REPLY = HttpReply(200, CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})), b"{}")


async def measure(config: Path, calls: int, rounds: int) -> list[float]:
    async with open_runtime(load_settings(config), check_keys=False) as runtime:
        app, shaper = runtime.apps["shopee"], runtime.shaper
        key = app.tokens.key(sidebyside.SHOPEE_SHOP)
        per_call = []
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(calls):
                admission = await shaper.admit(key, app.platform, REQUEST, shaper.ticket({}))
                await shaper.learn(admission, app.platform, REPLY)
            per_call.append((time.process_time() - started) / calls * 1e6)
        return per_call


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    prefix = f"turns-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "turns.toml"
        text = sidebyside.config_text(1, args.redis_url, "http://127.0.0.1:9", limits=True)
        config.write_text(text.replace("[server]\n", f'[server]\nkey_prefix = "{prefix}"\n'))
        try:
            per_call = uvloop.run(measure(config, args.calls, args.rounds))
        finally:
            client = redis.Redis.from_url(args.redis_url)
            for name in client.scan_iter(match=f"{prefix}:*"):
                client.delete(name)
            client.close()
    rounds = ", ".join(f"{us:.1f}" for us in per_call)
    print(f"admit + learn: best {min(per_call):.1f} us per call (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
