"""Running the server: one process, or N worker processes on one port.

With N workers a scrape of /_authproxy/metrics reaches any one of them, so
the supervisor gives them a shared, fresh metrics directory (see metrics.py)
before it starts them, marks each worker that ends as dead there (its live
gauges go), and removes the directory when it stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web
from prometheus_client import multiprocess

from authproxy.app import create_app
from authproxy.logs import setup_logging
from authproxy.metrics import MULTIPROC_ENV
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
        "listening on http://%s:%d/ (%d app(s), store %s, pid %d)",
        server.host,
        server.port,
        len(settings.apps),
        _store_kind(server.store_url),
        os.getpid(),
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
    """Run the workers with a metrics directory of their own, fresh each start:
    values a previous run left behind would be added to this run's."""
    metrics_dir = tempfile.mkdtemp(prefix="authproxy-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers started below
    try:
        return _run_workers(settings, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(settings: Settings, metrics_dir: str) -> int:
    """Start the workers; stop them all when one dies or when told to stop."""
    context = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = [
        context.Process(target=run_worker, args=(settings,), name=f"authproxy-worker-{i}")
        for i in range(settings.server.workers)
    ]
    for worker in workers:
        worker.start()

    told: set[int | None] = set()

    def stop(signum: int, frame: FrameType | None) -> None:
        """SIGTERM each worker once: a second one could cut its clean-up short."""
        for worker in workers:
            if worker.is_alive() and worker.pid not in told:
                told.add(worker.pid)
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = list(workers)
    while running:
        ready = multiprocessing.connection.wait([worker.sentinel for worker in running])
        for worker in [worker for worker in running if worker.sentinel in ready]:
            running.remove(worker)
            worker.join()
            multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
        stop(signal.SIGTERM, None)  # one worker down: stop the rest (the orchestrator restarts us)
    codes = [worker.exitcode or 0 for worker in workers]
    return max((abs(code) for code in codes), default=0) and 1
