"""Run the Seller Center sandbox in its own process: `python -m tests.sandbox_main PORT`.

Used where the test process must not share a CPU with the upstream (GB streams, benchmarks).
"""

from __future__ import annotations

import sys

from aiohttp import web

from authproxy.sandbox.sellercenter import SellerCenterSandbox

ACCOUNT = ("app-1", "secret-1")

if __name__ == "__main__":
    sandbox = SellerCenterSandbox(dict([ACCOUNT]))
    web.run_app(sandbox.app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
