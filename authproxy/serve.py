"""Running the server: one process, or N worker processes on one port."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from types import FrameType

from aiohttp import web

from authproxy.app import create_app
from authproxy.logs import setup_logging
from authproxy.settings import Settings

log = logging.getLogger("authproxy")


def serve(settings: Settings) -> int:
    server = settings.server
    if server.workers == 1:
        run_worker(settings)
        return 0
    if server.port == 0:
        print("authproxy: --workers needs a fixed --port", file=sys.stderr)
        return 2
    return _supervise(settings)


def run_worker(settings: Settings) -> None:
    server = settings.server
    setup_logging(server.log_format, server.log_level)
    log.info(
        "authproxy listening on http://%s:%d/ (%d app(s), store %s)",
        server.host,
        server.port,
        len(settings.apps),
        _store_kind(server.store_url),
    )
    web.run_app(
        create_app(settings),
        host=server.host,
        port=server.port,
        reuse_port=server.workers > 1,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


def _store_kind(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "?"


def _supervise(settings: Settings) -> int:
    """Start the workers; stop them all when one dies or when told to stop."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=run_worker, args=(settings,), name=f"authproxy-worker-{i}")
        for i in range(settings.server.workers)
    ]
    for worker in workers:
        worker.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sentinels = [worker.sentinel for worker in workers]
    multiprocessing.connection.wait(sentinels)
    stop(signal.SIGTERM, None)
    for worker in workers:
        worker.join()
    codes = [worker.exitcode or 0 for worker in workers]
    return max((abs(code) for code in codes), default=0) and 1
