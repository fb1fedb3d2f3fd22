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
import socket
import sys
import tempfile
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from authproxy import http_server
from authproxy.app import create_app
from authproxy.errors import CannotListen
from authproxy.logs import setup_logging
from authproxy.metrics import MULTIPROC_ENV
from authproxy.proxy.handler import access_log
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

    def listening() -> None:
        log.info(
            "listening on http://%s:%d/ (%d app(s), store %s, %s loop, pid %d)",
            server.host,
            server.port,
            len(settings.apps),
            _store_kind(server.store_url),
            http_server.event_loop_name(server.event_loop),
            os.getpid(),
        )

    try:
        http_server.run(create_app(settings), server, listening)
    finally:
        access_log.flush()  # a line logged after the app's clean-up, as the loop closed


def _worker_main(settings: Settings) -> None:
    """A worker process: an address it cannot use is one line on stderr and exit 1."""
    try:
        run_worker(settings)
    except CannotListen as exc:
        print(f"authproxy: {exc}", file=sys.stderr)
        sys.exit(1)


def _store_kind(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "?"


def _supervise(settings: Settings) -> int:
    """Run the workers with a metrics directory of their own, fresh each start:
    values a previous run left behind would be added to this run's."""
    _check_port(settings.server.host, settings.server.port)  # one message, not one per worker
    metrics_dir = tempfile.mkdtemp(prefix="authproxy-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers started below
    try:
        return _run_workers(settings, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_port(host: str, port: int) -> None:
    """Raise CannotListen when host:port is taken (bound as the workers bind it, then let go)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise http_server.cannot_listen(exc, host, port) from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise http_server.cannot_listen(exc, host, port) from None


def _run_workers(settings: Settings, metrics_dir: str) -> int:
    """Start the workers; stop them all when one dies or when told to stop."""
    context = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = [
        context.Process(target=_worker_main, args=(settings,), name=f"authproxy-worker-{i}")
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
