"""Read deadlines for ``verity serve``'s HTTP connections (uvicorn's h11 protocol, extended).

uvicorn closes idle keep-alive connections but sets no limit on how long a request may take
to *arrive*: a client that sends half its headers, or a Content-Length body one byte at a
time, holds a connection (and a slot of the app) forever. Here each request must deliver its
headers within ``header_timeout`` seconds of the connection opening (or of its first byte on a
kept-alive connection), and its body within ``body_timeout`` seconds of the headers. Deadlines
are absolute, so dripping bytes does not extend them. A late client gets ``408`` (when no
response has started) and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from verity.serve.protocol import error_body

log = logging.getLogger(__name__)


class DeadlineH11Protocol(H11Protocol):
    """:class:`H11Protocol` with header and body read deadlines (class attributes, in seconds)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._arm("headers")  # a client that connects and sends nothing

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of the part of the request still missing (none when it has all arrived)."""
        state = self.conn.their_state
        if state is h11.IDLE:
            partial = bool(self.conn.trailing_data[0])  # bytes of the next request's headers, not yet complete
            self._arm("headers" if partial else None)
        elif state is h11.SEND_BODY:
            self._arm("body")
        else:
            self._arm(None)

    def _arm(self, phase: str | None) -> None:
        if phase == self._phase:
            return  # the deadline runs from when the phase began, however the bytes trickle in
        if self._timer is not None:
            self._timer.cancel()
        self._phase, self._timer = phase, None
        if phase is not None:
            delay = self.header_timeout if phase == "headers" else self.body_timeout
            self._timer = self.loop.call_later(delay, self._expired, phase, delay)

    def _expired(self, phase: str, delay: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        who = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        log.warning("%s: request %s not received within %g s; closing the connection", who, phase, delay)
        ours = self.conn.our_state
        if ours is h11.IDLE or (ours is h11.SEND_RESPONSE and self.cycle is not None
                                and not self.cycle.response_started):
            body = json.dumps(error_body(f"request {phase} not received within {delay:g} s",
                                         code="request_timeout")).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[Any]:
    """A :class:`DeadlineH11Protocol` subclass with these deadlines, for ``uvicorn.run(http=...)``."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})
