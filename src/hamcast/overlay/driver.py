"""The asyncio UDP driver of the overlay: one socket, one sans-I/O core.

It only moves data (STYLE.md item 3): read the socket until empty, pass each
frame through the :class:`~hamcast.overlay.fragments.Reassembler` and every
complete datagram to the core, cut what the core wants sent into frames with
the :class:`~hamcast.overlay.fragments.Fragmenter` and send them, keep one
``loop.call_at`` timer armed at the earlier of the core's and the
reassembler's deadlines, and call ``on_wakeup`` after every input and timer so
the layer above can take the core's events.

Usage::

    driver = OverlayDriver(node, ("0.0.0.0", 4711), on_wakeup=drain_events)
    await driver.start()
    node.route(key, payload, loop.time())   # input from outside a wake-up ...
    driver.transmit()                        # ... is sent by transmit()
    await driver.stop()

The socket is read with ``loop.add_reader`` and non-blocking ``recvfrom`` in a
loop, not with asyncio's datagram transport: the transport reads one datagram
per wake-up, which saturates a core at ~50k datagrams/s (DESIGN.md §11). Run
it on uvloop where installed (``hamcast.daemon.server.new_event_loop``).

Host parts of addresses must be IP literals: ``sendto`` with a host name would
block the loop on a name lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hamcast.errors import MessageTooLongError, ResourceError, UsageError
from hamcast.overlay.fragments import FragmentConfig, Fragmenter, Reassembler, ReassemblyStats
from hamcast.overlay.ids import Address

__all__ = ["DatagramCore", "DriverStats", "OverlayDriver"]

logger = logging.getLogger(__name__)

# Larger than any UDP payload (65507 over IPv4, 65527 over IPv6), so no read
# is ever truncated; the reassembler bounds what it keeps.
_RECV_SIZE = 65536
# Linux SO_MEMINFO (not in Python's socket module): nine u32 counters, the
# ninth (SK_MEMINFO_DROPS) the datagrams dropped because the receive buffer
# was full.
_SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")
_DROPPED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
# Seconds between two warnings of one kind; a peer or a broken route can
# trigger them at line rate.
_WARN_INTERVAL = 10.0
_MAPPED_PREFIX = "::ffff:"


class DatagramCore(Protocol):
    """The sans-I/O contract the driver drives (aioquic-style).

    ``receive_datagram`` takes one complete datagram with its source address
    and the time; ``datagrams_to_send`` hands over (and forgets) everything the
    core wants sent; ``get_timer`` says when ``handle_timer`` is due next
    (``None``: no timer). Times are seconds on the driver's loop clock.
    """

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Take one datagram received from ``source``."""

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """The datagrams to send now, each with its destination."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due, or ``None``."""

    def handle_timer(self, now: float) -> None:
        """The time reached :meth:`get_timer`."""


@dataclass(frozen=True, slots=True)
class DriverStats:
    """A snapshot of an :class:`OverlayDriver`'s counters.

    Attributes:
        datagrams_in: UDP datagrams (frames) read from the socket.
        bytes_in: Their bytes (UDP payload).
        messages_in: Complete datagrams handed to the core, after reassembly.
        malformed: Frames the reassembler rejected as bad input
            (:attr:`ReassemblyStats.rejected`).
        datagrams_out: UDP datagrams (frames) sent.
        bytes_out: Their bytes (UDP payload).
        messages_out: Datagrams taken from the core to send.
        send_drops: Core datagrams lost, whole or in part, because the kernel
            had no buffer (EAGAIN, ENOBUFS), as UDP loses them.
        send_errors: Core datagrams lost to any other send error (no route,
            wrong address family, a bad address).
        oversized: Core datagrams longer than ``max_message_size``, not sent.
        read_errors: Socket reads that failed other than "nothing to read".
        core_errors: Exceptions raised by the core or by ``on_wakeup``,
            logged and survived.
        kernel_drops: Datagrams the kernel dropped because the receive buffer
            was full (Linux ``SO_MEMINFO``); ``None`` where unknown.
        reassembly: The reassembler's counters.
    """

    datagrams_in: int
    bytes_in: int
    messages_in: int
    malformed: int
    datagrams_out: int
    bytes_out: int
    messages_out: int
    send_drops: int
    send_errors: int
    oversized: int
    read_errors: int
    core_errors: int
    kernel_drops: int | None
    reassembly: ReassemblyStats


class _Throttle:
    """At most one warning per kind every ``interval`` seconds, with a count of the rest."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, now: float, message: str, *args: object) -> None:
        if now < self._next.get(kind, float("-inf")):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d more like it not logged)"
            args = (*args, suppressed)
        logger.warning(message, *args)
        self._next[kind] = now + self._interval


def _family_of(bind: Address) -> int:
    host, port = bind
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"the overlay binds to an IP address, not {host!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is not between 0 and 65535")
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


class OverlayDriver:
    """Runs a :class:`DatagramCore` on one UDP socket on the running asyncio loop.

    ``bind`` chooses the family: an IPv6 address (``"::"`` for all) gives an
    IPv6 socket, which on Linux also serves IPv4 peers as ``::ffff:a.b.c.d``;
    the driver shows the core those as plain IPv4 addresses and maps IPv4
    destinations the same way. ``fragments`` configures the fragmenter and
    reassembler. ``on_wakeup`` is called after every batch of input and every
    timer, before the core's datagrams are sent, so that datagrams the layer
    above queues while handling events go out in the same wake-up. At most
    ``read_batch`` datagrams are read per wake-up before other work gets a
    turn. ``socket_buffer`` sets the socket's receive and send buffer sizes in
    bytes (the kernel caps them at ``net.core.rmem_max`` / ``wmem_max``);
    ``None`` keeps the system default.
    """

    def __init__(
        self,
        core: DatagramCore,
        bind: Address,
        *,
        fragments: FragmentConfig | None = None,
        on_wakeup: Callable[[], None] | None = None,
        read_batch: int = 256,
        socket_buffer: int | None = 4 * 1024 * 1024,
        first_message_id: int | None = None,
    ) -> None:
        if read_batch < 1:
            raise UsageError("read_batch must be at least 1")
        self._family = _family_of(bind)
        self._bind = bind
        self._core = core
        self._on_wakeup = on_wakeup
        self._read_batch = read_batch
        self._socket_buffer = socket_buffer
        config = fragments or FragmentConfig()
        self._fragmenter = Fragmenter(config, first_message_id=first_message_id)
        self._reassembler = Reassembler(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._throttle = _Throttle(_WARN_INTERVAL)
        self._next_core_log = float("-inf")
        self._last_kernel_drops: int | None = None
        self._datagrams_in = self._bytes_in = self._messages_in = 0
        self._datagrams_out = self._bytes_out = self._messages_out = 0
        self._send_drops = self._send_errors = self._oversized = 0
        self._read_errors = self._core_errors = 0

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start reading; sends what the core already queued.

        Raises :class:`~hamcast.errors.ResourceError` when the address cannot
        be bound (in use, not an address of this host).
        """
        if self._sock is not None:
            return
        loop = asyncio.get_running_loop()
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self._socket_buffer is not None:
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    sock.setsockopt(socket.SOL_SOCKET, option, self._socket_buffer)
            sock.bind(self._bind)
        except OSError as exc:
            sock.close()
            host, port = self._bind
            raise ResourceError(
                f"cannot bind the overlay's UDP socket to {host} port {port}: {exc.strerror or exc}"
            ) from exc
        self._loop, self._sock, self._fd = loop, sock, sock.fileno()
        loop.add_reader(self._fd, self._readable)
        logger.debug("overlay driver listening on %s", self.local_address)
        self.transmit()

    async def stop(self) -> None:
        """Send what the core has queued, then close the socket and cancel the timer."""
        if self._sock is None:
            return
        self._flush()
        self._kernel_drops()  # keep the last count for stats() after the socket is gone
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._sock.close()
        self._sock, self._fd = None, -1
        logger.debug("overlay driver stopped")

    @property
    def local_address(self) -> Address:
        """The bound (address, port); the port is the real one after binding port 0."""
        if self._sock is None:
            raise ResourceError("the overlay driver is not running")
        name = self._sock.getsockname()
        return (name[0], name[1])

    @property
    def running(self) -> bool:
        """Whether the socket is open."""
        return self._sock is not None

    def stats(self) -> DriverStats:
        """A snapshot of the counters."""
        reassembly = self._reassembler.stats
        return DriverStats(
            datagrams_in=self._datagrams_in,
            bytes_in=self._bytes_in,
            messages_in=self._messages_in,
            malformed=reassembly.rejected,
            datagrams_out=self._datagrams_out,
            bytes_out=self._bytes_out,
            messages_out=self._messages_out,
            send_drops=self._send_drops,
            send_errors=self._send_errors,
            oversized=self._oversized,
            read_errors=self._read_errors,
            core_errors=self._core_errors,
            kernel_drops=self._kernel_drops(),
            reassembly=dataclasses.replace(reassembly),
        )

    @property
    def reassembler(self) -> Reassembler:
        """The reassembler (for its bounds and state; do not feed it)."""
        return self._reassembler

    # --- output ------------------------------------------------------------------

    def transmit(self) -> None:
        """Send what the core has queued and re-arm the timer.

        The driver does this itself after every input and timer; call it after
        giving the core input from outside (an API call, a new group).
        """
        if self._sock is None:
            return
        self._flush()
        self._rearm()

    def _flush(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            outgoing = self._core.datagrams_to_send()
        except Exception:
            self._core_failed("datagrams_to_send")
            return
        sendto = sock.sendto
        fragment = self._fragmenter.fragment
        mapped = self._family == socket.AF_INET6
        sent = nbytes = 0
        for data, address in outgoing:
            try:
                frames = fragment(data)
            except MessageTooLongError as exc:
                self._oversized += 1
                self._warn("oversized", "not sending to %s: %s", address, exc)
                continue
            destination = address
            if mapped and ":" not in address[0]:
                # An IPv6 socket reaches IPv4 peers through mapped addresses.
                destination = (_MAPPED_PREFIX + address[0], address[1])
            for frame in frames:
                try:
                    sendto(frame, destination)
                except OSError as exc:
                    if exc.errno in _DROPPED:
                        self._send_drops += 1
                    else:
                        self._send_errors += 1
                        self._warn("send", "sending to %s failed: %s", address, exc)
                    # The message cannot be completed without this frame.
                    break
                except (TypeError, ValueError, OverflowError) as exc:
                    # A malformed address from the core: its bug, not a reason to stop.
                    self._send_errors += 1
                    self._warn("send", "cannot send to %r: %s", address, exc)
                    break
                sent += 1
                nbytes += len(frame)
        self._messages_out += len(outgoing)
        self._datagrams_out += sent
        self._bytes_out += nbytes

    # --- input -------------------------------------------------------------------

    def _readable(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        now = loop.time()
        recvfrom = sock.recvfrom
        reassemble = self._reassembler.receive
        deliver = self._core.receive_datagram
        mapped = self._family == socket.AF_INET6
        count = nbytes = messages = 0
        for _ in range(self._read_batch):
            try:
                frame, peer = recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._read_errors += 1
                self._warn("read", "reading the overlay socket failed: %s", exc)
                break
            count += 1
            nbytes += len(frame)
            host = peer[0]
            if mapped and host.startswith(_MAPPED_PREFIX) and "." in host:
                host = host[len(_MAPPED_PREFIX) :]
            source = (host, peer[1])
            message = reassemble(frame, source, now)
            if message is None:
                continue
            messages += 1
            try:
                deliver(message, source, now)
            except Exception:
                self._core_failed("receive_datagram")
        self._datagrams_in += count
        self._bytes_in += nbytes
        self._messages_in += messages
        self._wakeup()

    def _fire(self, when: float) -> None:
        self._timer = self._timer_at = None
        loop = self._loop
        if self._sock is None or loop is None:
            return
        # asyncio may run a timer up to one clock tick early; the cores must
        # see a time at or after the deadline they asked for.
        now = max(loop.time(), when)
        due = self._reassembler.get_timer()
        if due is not None and due <= now:
            self._reassembler.handle_timer(now)
        try:
            due = self._core.get_timer()
            if due is not None and due <= now:
                self._core.handle_timer(now)
        except Exception:
            self._core_failed("handle_timer")
        self._wakeup()

    def _wakeup(self) -> None:
        """After input or a timer: let the layer above drain, then send and re-arm."""
        if self._on_wakeup is not None:
            try:
                self._on_wakeup()
            except Exception:
                self._core_failed("on_wakeup")
        self.transmit()

    def _rearm(self) -> None:
        loop = self._loop
        if loop is None or self._sock is None:
            return
        when = self._reassembler.get_timer()
        try:
            core_when = self._core.get_timer()
        except Exception:
            self._core_failed("get_timer")
            core_when = None
        if core_when is not None and (when is None or core_when < when):
            when = core_when
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else loop.call_at(when, self._fire, when)

    # --- helpers -----------------------------------------------------------------

    def _core_failed(self, what: str) -> None:
        # A bug in the core must not stop the socket for every peer; it is
        # logged with its traceback (rate-limited: it may repeat per datagram).
        self._core_errors += 1
        now = self._loop.time() if self._loop is not None else 0.0
        if now >= self._next_core_log:
            logger.exception("overlay core failed in %s", what)
            self._next_core_log = now + _WARN_INTERVAL

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        self._throttle.warning(kind, now, message, *args)

    def _kernel_drops(self) -> int | None:
        if self._sock is None:
            return self._last_kernel_drops
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size)
        except OSError:
            return None  # not Linux, or a kernel older than 4.6
        if len(raw) < _MEMINFO.size:
            return None
        self._last_kernel_drops = int(_MEMINFO.unpack(raw)[8])
        return self._last_kernel_drops
