"""The streaming commands: ``send``, ``recv`` and ``events``.

``send`` takes its payload from the MESSAGE argument, generates it (``--size``
without MESSAGE), or reads standard input: all of it as one message, or one
message per line with ``--lines``. ``--rate`` paces messages on a fixed
schedule. ``recv`` and ``events`` print what arrives until ``--count`` items
came or ``--timeout`` seconds passed since they started listening (an error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from rich.text import Text

from hamcast.cli.connect import describe_mode, open_socket, socket_path
from hamcast.cli.render import Output, event_json, event_text, message_json, payload_preview
from hamcast.client.sync import MulticastSocket
from hamcast.errors import MessageTooLongError, ReceiveTimeoutError, ResourceError, UsageError
from hamcast.model import Interface
from hamcast.uri import URI

__all__ = ["events_command", "recv_command", "send_command"]

_T = TypeVar("_T")

#: What ``--size`` pads a payload with: printable, so padded text stays text.
PAD_BYTE = b"."


# --- send --------------------------------------------------------------------------


class Pacer:
    """Spaces sends ``1 / rate`` seconds apart on a schedule fixed at the first send.

    Each message is due at ``start + n / rate``; sleeping until that deadline
    (rather than for ``1 / rate`` after the previous send) keeps sleep overshoot
    from accumulating, so the average rate is the one asked for.
    """

    def __init__(self, rate: float | None) -> None:
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._start: float | None = None

    def wait(self, sent: int) -> None:
        """Sleep until message number ``sent`` (0-based) is due."""
        if not self._interval:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
            return
        delay = self._start + sent * self._interval - now
        if delay > 0:
            time.sleep(delay)


def _pad(body: bytes, size: int | None, what: str) -> bytes:
    if size is None:
        return body
    if len(body) > size:
        raise UsageError(f"{what} is {len(body)} bytes, longer than --size {size}")
    return body + PAD_BYTE * (size - len(body))


def _stdin() -> BinaryIO:
    if sys.stdin is None:
        raise UsageError("no MESSAGE given and standard input is closed")
    return sys.stdin.buffer


def _read_whole(stream: BinaryIO, limit: int) -> bytes:
    # Read at most one byte more than fits, so a huge input fails fast
    # instead of being read into memory first.
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UsageError(
            f"standard input is longer than the largest message ({limit} bytes);"
            " use --lines to send one message per line"
        )
    return data


def _read_lines(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    """Each line of ``stream`` without its line ending, bounded by ``limit`` bytes."""
    while True:
        # limit + 2 leaves room for "\r\n"; readline returns as soon as a line
        # is complete, so `tail -f log | hamcast send --lines` streams.
        line = stream.readline(limit + 2)
        if not line:
            return
        if not line.endswith(b"\n") and len(line) == limit + 2:
            raise UsageError(
                f"a line of standard input is longer than the largest message ({limit} bytes)"
            )
        if line.endswith(b"\r\n"):
            line = line[:-2]
        elif line.endswith(b"\n"):
            line = line[:-1]
        yield line


def _payloads(args: argparse.Namespace, out: Output, limit: int) -> Iterator[bytes]:
    """The messages to send, in order, as the arguments describe them."""
    size: int | None = args.size
    count: int | None = args.count
    if size is not None and size > limit:
        raise MessageTooLongError(size, limit)
    if args.lines:
        for number, line in enumerate(_read_lines(_stdin(), limit)):
            if count is not None and number >= count:
                return
            yield _pad(line, size, "a line of standard input")
        return
    if args.message is not None:
        # fsencode gives back the exact bytes of the argument, even ones
        # that are not valid in the locale's encoding.
        payload = _pad(os.fsencode(args.message), size, "MESSAGE")
    elif size is not None:
        payload = PAD_BYTE * size
    else:
        stream = _stdin()
        if sys.stdin.isatty():
            out.status("reading one message from standard input; end it with Ctrl-D")
        payload = _pad(_read_whole(stream, limit), size, "standard input")
    for _ in range(1 if count is None else count):
        yield payload


def send_command(args: argparse.Namespace, out: Output) -> int:
    """Send messages to a group and print a summary."""
    uri = URI.parse(args.uri)
    if args.lines and args.message is not None:
        raise UsageError("give either MESSAGE or --lines, not both")
    with open_socket(args, out, "send") as sock:
        if args.ttl is not None:
            sock.set_ttl(args.ttl)
        pacer = Pacer(args.rate)
        sent = total_bytes = 0
        started = time.monotonic()
        for payload in _payloads(args, out, sock.max_msg_size()):
            pacer.wait(sent)
            sock.send(uri, payload)
            sent += 1
            total_bytes += len(payload)
        # A round trip after the sends: the middleware answers it only after
        # it handled every message before it, so the counters are final.
        stats = sock.stats()
        elapsed = time.monotonic() - started
        mode = sock.mode
    if out.json_mode:
        out.json_document(
            {
                "group": str(uri),
                "sent": sent,
                "bytes": total_bytes,
                "send_failed": stats.send_failed,
                "seconds": round(elapsed, 6),
                "mode": mode,
            }
        )
    elif not out.quiet:
        plural = "" if sent == 1 else "s"
        out.line(
            f"sent {sent} message{plural} ({total_bytes} bytes) to {uri} in {elapsed:.3f} s"
            f" via {'the daemon' if mode == 'daemon' else 'the embedded middleware'}"
        )
    if stats.send_failed:
        raise ResourceError(f"{stats.send_failed} of {sent} messages could not be sent")
    return 0


# --- recv and events -------------------------------------------------------------------


def _until(
    next_item: Callable[[float | None], _T],
    count: int | None,
    timeout: float | None,
    waiting: str,
) -> Iterator[_T]:
    """Items from ``next_item(timeout)`` until ``count`` came or ``timeout`` s passed.

    ``waiting`` completes the timeout message: "timed out after 2 s waiting
    for messages on ham:opaque:news (1 of 3 received)".

    The timeout is one deadline for the whole command, not per item, so a
    script knows how long ``hamcast recv --timeout`` can take at most.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    while count is None or seen < count:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = next_item(remaining)
        except ReceiveTimeoutError:
            wanted = "" if count is None else f" of {count}"
            raise ReceiveTimeoutError(
                f"timed out after {timeout:g} s waiting for {waiting} ({seen}{wanted} received)"
            ) from None
        seen += 1
        yield item


class _InterfaceNames:
    """Interface index to :class:`Interface`, refreshed when an unknown index shows up."""

    def __init__(self, sock: MulticastSocket) -> None:
        self._sock = sock
        self._known = {i.index: i for i in sock.interfaces()}

    def get(self, index: int) -> Interface | None:
        if index not in self._known:
            # An interface that appeared after the command started.
            self._known = {i.index: i for i in self._sock.interfaces()}
        return self._known.get(index)


def _where(index: int, iface: Interface | None) -> str:
    return str(index) if iface is None else f"{index} ({iface.name})"


def recv_command(args: argparse.Namespace, out: Output) -> int:
    """Join a group and print each message that arrives."""
    uri = URI.parse(args.uri)
    with open_socket(args, out, "recv") as sock:
        interfaces = _InterfaceNames(sock)
        sock.join(uri)
        # Scripts and tests wait for this line to know the join is done.
        out.status(f"receiving {uri} via {describe_mode(sock, socket_path(args))}")
        for message in _until(sock.receive, args.count, args.timeout, f"messages on {uri}"):
            iface = interfaces.get(message.interface)
            if out.json_mode:
                out.json_line(message_json(message, None if iface is None else iface.technology))
                continue
            out.line(
                Text.assemble(
                    (message.source, "cyan"),
                    " -> ",
                    str(message.group),
                    (f"  on {_where(message.interface, iface)}, {len(message.payload)} B  ", "dim"),
                    payload_preview(message.payload),
                )
            )
    return 0


def events_command(args: argparse.Namespace, out: Output) -> int:
    """Print membership events as they happen on every interface."""
    with open_socket(args, out, "events") as sock:
        interfaces = _InterfaceNames(sock)
        sock.enable_events()
        out.status(f"watching membership events via {describe_mode(sock, socket_path(args))}")
        for event in _until(sock.next_event, args.count, args.timeout, "membership events"):
            iface = interfaces.get(event.interface)
            if out.json_mode:
                out.json_line(event_json(event, None if iface is None else iface.technology))
            else:
                out.line(event_text(event, _where(event.interface, iface)))
    return 0
