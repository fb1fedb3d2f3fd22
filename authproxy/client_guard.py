"""The server's side facing clients: requests slow to arrive, or not HTTP at all.

aiohttp's RequestHandler closes a connection that waits for a request longer
than `keepalive_timeout`, but once a request's first byte has come it waits
for the rest of its head without limit (a "slowloris" holds a connection by
sending a byte a second), and it logs every malformed request as an error
with a traceback. GuardedRequestHandler adds, per connection:

- `header_timeout`: a request's head (request line and headers) must be
  complete this many seconds after its first byte, else 408 request_timeout
  (problem+json) and the connection is closed;
- malformed requests are answered 400 bad_request (problem+json) and logged
  in one throttled line naming the kind of fault, never the request's bytes
  (a request line may carry a token).

A body's time limit is kept where the body is read (proxy/body.py).

A connection cut for a slow head is closed the way nginx's `lingering_close`
does it: the 408 is written, the sending side shut (FIN), and what the client
still sends is dropped for up to `LINGER` seconds. Closing a socket with
unread bytes in it sends a reset instead, and the client may lose the 408.

It relies on four attributes of aiohttp's RequestHandler (3.14): `_messages`
(heads parsed, not yet handled), `_waiter` (set while it waits for the next
request), `_current_request` (set while a handler runs) and `_loop`; the tests
in tests/integration/test_client_faults.py fail if they change meaning.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler

from authproxy.errors import BadRequest, ProxyError, RequestTimeout
from authproxy.logs import Throttled

log = logging.getLogger("authproxy.server")

#: seconds a connection cut for a slow head keeps dropping what still arrives, before it closes
LINGER = 2.0

#: what a parser error means, in words that quote nothing the client sent (most specific first)
FAULTS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "no valid HTTP method (is it HTTP at all, or TLS to a plain-HTTP port?)"),
    (BadStatusLine, "the request line is malformed"),
    (LineTooLong, "the request line or a header is too long"),
    (InvalidHeader, "a header is malformed"),
    (InvalidURLError, "the request target is not a valid URL"),
    (TransferEncodingError, "the chunked body is malformed"),
    (ContentLengthError, "the body is shorter than its Content-Length"),
)


def describe(exc: BaseException) -> str:
    for kind, meaning in FAULTS:
        if isinstance(exc, kind):
            return meaning
    return "it is not valid HTTP/1.1"


@dataclass
class ClientFaults:
    """What the connections of one server share: the head's time limit, the log lines."""

    header_timeout: float
    malformed: Throttled
    slow: Throttled

    @classmethod
    def create(cls, header_timeout: float) -> ClientFaults:
        return cls(header_timeout, Throttled(log), Throttled(log))


def problem_response(error: ProxyError) -> web.Response:
    """A problem+json answer to a request that never reached the proxy's handler."""
    body = error.body_bytes(app=None, shop=None, request_id="-")
    response = web.Response(status=error.status, body=body, headers=error.headers())
    response.force_close()
    return response


def raw_problem(error: ProxyError, reason: str) -> bytes:
    """The same, as bytes for a connection that has no request object (its head never came)."""
    body = error.body_bytes(app=None, shop=None, request_id="-")
    head = [f"HTTP/1.1 {error.status} {reason}"]
    head += [f"{name}: {value}" for name, value in error.headers().items()]
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedRequestHandler(RequestHandler):
    __slots__ = ("_body", "_faults", "_head_timer", "_lingering")

    def __init__(self, manager: web.Server, *, faults: ClientFaults, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._faults = faults
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the latest request, while it arrives
        self._lingering = False

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        queued = len(self._messages)
        body = self._body
        receiving = body is not None and not body.is_eof()
        super().data_received(data)
        if len(self._messages) > queued:  # a head is complete (or found malformed)
            if self._head_timer is not None:
                self._stop_head_timer()
            if body is not None and not body.is_eof():  # the parser gave up on the body arriving
                self._abandon_body(body)
            self._body = self._messages[-1][1]
        elif data and self._head_timer is None and not receiving and self.transport is not None:
            # a head begun and not complete: its clock starts now (a head that arrives in one
            # piece, the usual case, never needs a timer)
            self._head_timer = self._loop.call_later(self._faults.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # not the client's fault: aiohttp's way
            return super().handle_error(request, status, exc, message)
        meaning = describe(exc)
        self._faults.malformed.info("malformed request from %s: %s", request.remote, meaning)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was under way: the connection is closed instead")
        return problem_response(BadRequest(f"the request was refused: {meaning}"))

    def _abandon_body(self, body: StreamReader) -> None:
        """A body the parser found malformed (bad chunking): its reader fails (the proxy
        answers 400), nothing is left to drain, and this connection takes no more requests."""
        if self._current_request is not None:  # a handler may be reading it (else aiohttp is)
            body.set_exception(web.RequestPayloadError("malformed body"))
        body.feed_eof()
        self.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport is None:
            return
        limit = self._faults.header_timeout
        peer = self.transport.get_extra_info("peername")
        self._faults.slow.info("request head from %s not complete within %g s: closed", peer, limit)
        waiter = self._waiter
        if waiter is None or waiter.done():  # an earlier request's answer is under way: end after it
            self.close()
            return
        error = RequestTimeout(f"the request head did not arrive within {limit:g} s (server.header_timeout)")
        self.transport.write(raw_problem(error, "Request Timeout"))
        self._linger()

    def _linger(self) -> None:
        """Answered: shut the sending side after the answer, drop what the client still sends,
        close when it closes (its FIN ends the transport) or after LINGER seconds."""
        self._lingering = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self._loop.call_later(LINGER, self.force_close)
