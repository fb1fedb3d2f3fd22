"""How authproxy's HTTP server treats its clients: the one place that sets it up.

`authproxy serve`, `authproxy demo` and the test fixtures all run the app
with ProxyRunner, so they share one behaviour:

- request bodies are never decoded: a gzip body is forwarded as the gzip
  bytes the client sent, with its Content-Encoding (and signed as such);
- a connection with no request under way is closed after
  `keepalive_timeout` seconds; a request's head must be complete within
  `header_timeout` seconds of its first byte (client_guard.py), its body
  within `body_timeout` seconds of waiting (proxy/body.py);
- malformed requests get 400 problem+json and a throttled log line;
- a client that leaves does not cancel its request's handler (a refresh it
  started must land);
- it runs on uvloop when `server.event_loop` is "auto" (and uvloop imports) or
  "uvloop", else on asyncio's own loop;
- an app may put a handler in front of its route table (FRONT_DOOR): the proxy
  answers most requests without walking the table.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import importlib.util
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from authproxy.client_guard import ClientFaults, GuardedRequestHandler
from authproxy.errors import CannotListen, ConfigError
from authproxy.settings import ServerSettings

MAX_FIELD_SIZE = 16384  # bytes in one header line (aiohttp's default is 8190)
SHUTDOWN_TIMEOUT = 10.0  # seconds in-flight requests get to finish on SIGTERM
#: pending connections the kernel keeps: clients waiting for rate-limit turns arrive in bursts,
#: and aiohttp's default (128) drops SYNs then, which clients retry only after 1, 3, 7 s
LISTEN_BACKLOG = 1024
#: allocations between two collections of the youngest generation (Python's default: 700)
GC_YOUNG = 10_000

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
#: set by an app to see each request before its route table does: called with the app's own
#: handler (the table) once the app has started, it returns the handler the server calls
FRONT_DOOR: web.AppKey[Callable[[Handler], Handler]] = web.AppKey("front_door")


def handler_options(server: ServerSettings) -> dict[str, Any]:
    """aiohttp's request-handler options, for web.Application(handler_args=...)."""
    return {
        "keepalive_timeout": server.keepalive_timeout,
        "max_field_size": MAX_FIELD_SIZE,
        "auto_decompress": False,
    }


class GuardedServer(web.Server):
    """aiohttp's Server, making GuardedRequestHandlers."""

    def __init__(self, made: web.Server, handler: Handler, faults: ClientFaults) -> None:
        super().__init__(
            handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,
        )
        self.faults = faults

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, faults=self.faults, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """web.AppRunner for authproxy's app: its server guards against slow and malformed clients."""

    def __init__(self, app: web.Application, server: ServerSettings, **kwargs: Any) -> None:
        kwargs.update(access_log=None, handler_cancellation=False)
        kwargs.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
        super().__init__(app, **kwargs)
        self.faults = ClientFaults.create(server.header_timeout)

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app has started
        handler: Handler = made.request_handler
        if FRONT_DOOR in self.app:
            handler = self.app[FRONT_DOOR](handler)
        return GuardedServer(made, handler, self.faults)


async def start(
    app: web.Application, server: ServerSettings, host: str, port: int, *, reuse_port: bool = False
) -> tuple[ProxyRunner, int]:
    """Serve `app` on host:port; returns the runner (clean it up) and the bound port.

    Raises CannotListen, the runner cleaned up (its client sessions closed), when the
    address is taken or not permitted."""
    runner = ProxyRunner(app, server)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=LISTEN_BACKLOG).start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(exc, host, port) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def cannot_listen(exc: OSError, host: str, port: int) -> CannotListen | OSError:
    """The one line that says why host:port cannot be used and what to do; other errors as they are."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return CannotListen(
            f"port {port} is already in use ({where}): stop what listens there, "
            "or choose another port with --port (or server.port, AUTHPROXY_SERVER__PORT)"
        )
    if exc.errno == errno.EACCES:
        return CannotListen(
            f"not permitted to listen on {where} (ports below 1024 need privileges): "
            "choose a port from 1024 up with --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        reason = exc.strerror if isinstance(exc, socket.gaierror) else os.strerror(errno.EADDRNOTAVAIL)
        return CannotListen(f"cannot listen on {where} ({reason}): check --host (or server.host)")
    return exc


def event_loop_name(choice: str) -> str:
    """The loop `choice` ("auto", "uvloop", "asyncio") means here: "uvloop" or "asyncio"."""
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        raise ConfigError('server.event_loop = "uvloop" but uvloop is not installed')
    return "uvloop" if choice != "asyncio" and available else "asyncio"


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if event_loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(app: web.Application, server: ServerSettings, listening: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; then in-flight requests get SHUTDOWN_TIMEOUT to finish.
    `listening` is called once the address is bound."""
    with asyncio.Runner(loop_factory=loop_factory(server.event_loop)) as runner:
        runner.run(_serve_until_stopped(app, server, listening))


async def _serve_until_stopped(
    app: web.Application, server: ServerSettings, listening: Callable[[], None] | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, _ = await start(app, server, server.host, server.port, reuse_port=server.workers > 1)
    # what start-up made (modules, settings, the runtime) lives as long as the process: out of
    # the cyclic collector's way, so its full collections scan only what requests left behind;
    # and a young collection per 10,000 allocations, not per 700 (a request makes hundreds)
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)
    try:
        if listening is not None:
            listening()
        await stop.wait()
    finally:
        await runner.cleanup()
