"""Run one sandbox on its own: `python -m authproxy.sandbox sellercenter --port 9001`.

For benchmarks and tests that must keep the upstream out of the measured
process, and for poking at a sandbox with curl.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from authproxy.sandbox.base import Sandbox


def sellercenter() -> Sandbox:
    from authproxy.sandbox.sellercenter import SellerCenterSandbox

    return SellerCenterSandbox({"app-1": "secret-1"})


SANDBOXES = {"sellercenter": sellercenter}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m authproxy.sandbox")
    parser.add_argument("name", choices=sorted(SANDBOXES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    app = SANDBOXES[args.name]().app()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
