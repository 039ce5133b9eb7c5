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

The socket is read with ``loop.add_reader`` and non-blocking reads in a loop,
not with asyncio's datagram transport: the transport reads one datagram per
wake-up, which saturates a core at ~50k datagrams/s (DESIGN.md §11). Run it on
uvloop where installed (``hamcast.daemon.server.new_event_loop``). On Linux
the reads and writes are batched system calls: ``recvmmsg`` takes up to 16
frames per call, and consecutive frames to one peer go out together — a run
of whole frames of one size (messages to a tree neighbour) as one ``sendmsg``
with UDP segmentation offload (``UDP_SEGMENT``; the receiver sees ordinary
datagrams), anything else (the fragments of one message) with one
``sendmmsg``; elsewhere it is one ``recvfrom``/``sendto`` per frame. What reaches the core
is the same either way (docs/performance.md, "Overlay data path").

Host parts of addresses must be IP literals: ``sendto`` with a host name would
block the loop on a name lookup.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hamcast.errors import MessageTooLongError, ResourceError, UsageError
from hamcast.overlay.fragments import FragmentConfig, Fragmenter, Reassembler, ReassemblyStats
from hamcast.overlay.ids import Address
from hamcast.technologies.ip import mmsg
from hamcast.technologies.ip.mmsg import BATCH, DatagramBatcher

__all__ = ["BatchCore", "DatagramCore", "DriverStats", "OverlayDriver"]

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
# C sockaddrs cached for sendmmsg and recvmmsg: one per peer; peers come and
# go, so bounded.
_MAX_SOCKADDRS = 1024
# Frames per recvmmsg; each slot holds the largest UDP payload (1 MiB in all).
_READ_SLOTS = 16
_SOCKADDR_IN = 16
_SOCKADDR_IN6 = 28
_PORT = struct.Struct("!H")
# UDP generic segmentation offload (Linux >= 4.18): one sendmsg carries a run
# of equal-size datagrams, cut by the kernel (or the NIC) as late as it can;
# the receiver sees ordinary datagrams. At most 64 segments, 64 KB in all.
_UDP_SEGMENT = 103
_GSO_SEGMENTS = 64
_GSO_BYTES = 65000
_GSO_SIZE = struct.Struct("=H")
# What says "no GSO here" (old kernel, a device without checksum offload, a
# segment above the path MTU): send those runs with sendmmsg from then on.
_GSO_UNSUPPORTED = (
    errno.EINVAL,
    errno.EIO,
    errno.ENOPROTOOPT,
    errno.EOPNOTSUPP,
    errno.EMSGSIZE,
)


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


class BatchCore(DatagramCore, Protocol):
    """A core that also takes all datagrams of one wake-up at once.

    ``receive_datagrams(items, now)`` must do what ``receive_datagram`` on
    each ``(data, source)`` in order would; a stack of layers can then run
    its upper layers once per batch instead of once per datagram.
    """

    def receive_datagrams(self, items: list[tuple[bytes, Address]], now: float) -> None:
        """Take the datagrams received at one wake-up, in order."""


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


class _BatchReader:
    """``recvmmsg`` into preallocated buffers: many frames per system call (Linux).

    Each of ``slots`` buffers holds the largest UDP payload, so no frame is
    ever truncated (as with ``recvfrom(_RECV_SIZE)``). Sources come back as
    the ``(host, port)`` pairs ``recvfrom`` gives, IPv4-mapped hosts unmapped.
    """

    def __init__(self, fd: int, family: int, slots: int = _READ_SLOTS) -> None:
        self._call = mmsg.recvmmsg()
        self._fd = fd
        self._family = family
        self._slots = slots
        self._namelen = _SOCKADDR_IN6 if family == socket.AF_INET6 else _SOCKADDR_IN
        self._buffer = bytearray(_RECV_SIZE * slots)
        self._data = memoryview(self._buffer)
        self._names = bytearray(_SOCKADDR_IN6 * slots)
        self._store = (ctypes.c_char * len(self._buffer)).from_buffer(self._buffer)
        self._name_store = (ctypes.c_char * len(self._names)).from_buffer(self._names)
        self._iov, self._msgs = mmsg.receive_ring(ctypes.addressof(self._store), _RECV_SIZE, slots)
        names = ctypes.addressof(self._name_store)
        for index in range(slots):
            header = self._msgs[index].msg_hdr
            header.msg_name = names + index * _SOCKADDR_IN6
            header.msg_namelen = self._namelen
        self._headers = memoryview(self._msgs).cast("B")
        # The same memory as native u32s: a length read is an index, not an unpack.
        self._words = self._headers.cast("I")
        self._stride = ctypes.sizeof(mmsg.Mmsghdr)
        self._len_at = mmsg.Mmsghdr.msg_len.offset
        self._namelen_at = mmsg.Msghdr.msg_namelen.offset
        assert self._stride % 4 == self._len_at % 4 == self._namelen_at % 4 == 0
        self._ptr = ctypes.addressof(self._msgs)
        self._sources: dict[bytes, Address] = {}

    def read(self, limit: int) -> tuple[list[tuple[bytes, Address]], OSError | None]:
        """Up to ``limit`` frames waiting now, with their sources, and the read error if any.

        "Nothing (more) to read" is no error; another failure ends the batch
        with the frames read before it.
        """
        out: list[tuple[bytes, Address]] = []
        words, data, names = self._words, self._data, self._names
        stride, len_at, namelen_at, full = (
            self._stride // 4,
            self._len_at // 4,
            self._namelen_at // 4,
            self._namelen,
        )
        sources = self._sources
        while len(out) < limit:
            want = min(self._slots, limit - len(out))
            got: int = self._call(self._fd, self._ptr, want, 0, None)
            if got < 0:
                code = ctypes.get_errno()
                if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    break
                return out, OSError(code, f"recvmmsg: {os.strerror(code)}")
            for index in range(got):
                at = index * stride
                length = words[at + len_at]
                namelen = words[at + namelen_at]
                start = index * _RECV_SIZE
                frame = bytes(data[start : start + length])
                name_at = index * _SOCKADDR_IN6
                key = bytes(names[name_at : name_at + namelen])
                if namelen != full:
                    words[at + namelen_at] = full
                source = sources.get(key)
                if source is None:
                    source = self._source(key)
                out.append((frame, source))
            if got < want:
                break
        return out, None

    def _source(self, raw: bytes) -> Address:
        family = int.from_bytes(raw[:2], sys.byteorder) if len(raw) >= 2 else -1
        if family == socket.AF_INET and len(raw) >= 8:
            source: Address = (
                socket.inet_ntop(socket.AF_INET, raw[4:8]),
                _PORT.unpack_from(raw, 2)[0],
            )
        elif family == socket.AF_INET6 and len(raw) >= 28:
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            scope = int.from_bytes(raw[24:28], sys.byteorder)
            if host.startswith(_MAPPED_PREFIX) and "." in host:
                host = host[len(_MAPPED_PREFIX) :]
            elif scope:
                try:
                    host += "%" + socket.if_indextoname(scope)
                except OSError:
                    host += f"%{scope}"
            source = (host, _PORT.unpack_from(raw, 2)[0])
        else:
            source = ("0.0.0.0", 0)  # no address: cannot happen for UDP
        if len(self._sources) >= _MAX_SOCKADDRS:
            self._sources.clear()
        self._sources[raw] = source
        return source


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
        #: sendmmsg for runs of frames to one peer (Linux); None: a sendto each.
        self._batcher: DatagramBatcher | None = None
        #: Runs of equal-size whole frames go out as one UDP_SEGMENT sendmsg
        #: (Linux, with the batcher); off after the first refusal.
        self._gso = sys.platform == "linux"
        #: recvmmsg for the frames waiting at a wake-up (Linux); None: recvfrom each.
        self._reader: _BatchReader | None = None
        self._sockaddrs: dict[Address, bytes] = {}
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
        if mmsg.available():
            self._batcher = DatagramBatcher(self._fd)
            self._reader = _BatchReader(self._fd, self._family)
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
        self._sock, self._fd, self._batcher, self._reader = None, -1, None, None
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
        if not outgoing:
            return
        self._messages_out += len(outgoing)
        if self._batcher is None:
            for data, address in outgoing:
                frames = self._frames(data, address)
                if frames is not None:
                    self._sendto(sock, frames, address)
            return
        # Consecutive frames to one destination go out with one sendmmsg: a
        # run of messages to a tree neighbour, or the fragments of one message.
        run: list[bytes] = []
        ends: list[int] = []  # run index after each core datagram's last frame
        run_address: Address | None = None
        for data, address in outgoing:
            frames = self._frames(data, address)
            if frames is None:
                continue
            if run and (address != run_address or len(run) + len(frames) > BATCH):
                self._send_run(sock, run, ends, run_address)  # type: ignore[arg-type]
                run, ends = [], []
            run_address = address
            run.extend(frames)
            ends.append(len(run))
        if run:
            self._send_run(sock, run, ends, run_address)  # type: ignore[arg-type]

    def _frames(self, data: bytes, address: Address) -> list[bytes] | None:
        try:
            return self._fragmenter.fragment(data, ipv6=":" in address[0])
        except MessageTooLongError as exc:
            self._oversized += 1
            self._warn("oversized", "not sending to %s: %s", address, exc)
            return None

    def _destination(self, address: Address) -> Address:
        if self._family == socket.AF_INET6 and ":" not in address[0]:
            # An IPv6 socket reaches IPv4 peers through mapped addresses.
            return (_MAPPED_PREFIX + address[0], address[1])
        return address

    def _sendto(self, sock: socket.socket, frames: list[bytes], address: Address) -> None:
        """Send one core datagram's frames, one system call each."""
        destination = self._destination(address)
        for frame in frames:
            try:
                sock.sendto(frame, destination)
            except OSError as exc:
                self._send_failed(address, exc)
                # The message cannot be completed without this frame.
                return
            except (TypeError, ValueError, OverflowError) as exc:
                # A malformed address from the core: its bug, not a reason to stop.
                self._send_errors += 1
                self._warn("send", "cannot send to %r: %s", address, exc)
                return
            self._datagrams_out += 1
            self._bytes_out += len(frame)

    def _send_run(
        self, sock: socket.socket, run: list[bytes], ends: list[int], address: Address
    ) -> None:
        """Send the frames of whole core datagrams to one ``address``, batched.

        A datagram whose frame the kernel does not take is lost, as UDP loses
        it; the datagrams after it are still tried.
        """
        if len(run) == 1:
            self._sendto(sock, run, address)
            return
        if self._gso and len(run) == len(ends):
            # Whole frames only (a fragmented datagram's frames go by sendmmsg).
            self._send_segmented(sock, run, address)
            return
        batcher = self._batcher
        assert batcher is not None
        sockaddr = self._sockaddrs.get(address)
        if sockaddr is None:
            try:
                sockaddr = self._sockaddr(address)
            except (TypeError, ValueError, OverflowError) as exc:
                self._send_errors += len(ends)
                self._warn("send", "cannot send to %r: %s", address, exc)
                return
        start = 0
        datagram = 0  # index in ends of the datagram that frame `start` belongs to
        total = len(run)
        while start < total:
            chunk = run[start : start + BATCH]
            try:
                taken = batcher.send(chunk, sockaddr)
                failure: OSError | None = None
            except OSError as exc:
                taken, failure = 0, exc
            self._datagrams_out += taken
            self._bytes_out += sum(map(len, chunk[:taken]))
            if taken == len(chunk):
                start += taken
                continue
            failed = start + taken
            while ends[datagram] <= failed:
                datagram += 1
            if failure is None:
                failure = OSError(errno.EAGAIN, "the send buffer is full")
            self._send_failed(address, failure)
            start = ends[datagram]
            datagram += 1

    def _send_segmented(self, sock: socket.socket, frames: list[bytes], address: Address) -> None:
        """Send whole frames, each a datagram of its own, with UDP segmentation offload.

        Consecutive frames of one size (the last of a chunk may be shorter)
        go out with one ``sendmsg``; a chunk the kernel does not take loses
        its datagrams, as UDP loses them. The first "not supported here"
        turns GSO off and sends the rest with ``sendmmsg``.
        """
        destination = self._destination(address)
        total = len(frames)
        start = 0
        while start < total:
            size = len(frames[start])
            limit = min(_GSO_SEGMENTS, _GSO_BYTES // size) if size else 1
            end = start + 1
            while end < total and end - start < limit and len(frames[end]) == size:
                end += 1
            if end < total and end - start < limit and len(frames[end]) < size:
                end += 1  # a shorter last segment is allowed
            chunk = frames[start:end]
            if len(chunk) == 1:
                self._sendto(sock, chunk, address)
                start = end
                continue
            try:
                sock.sendmsg(
                    [b"".join(chunk)],
                    [(socket.SOL_UDP, _UDP_SEGMENT, _GSO_SIZE.pack(size))],
                    0,
                    destination,
                )
            except OSError as exc:
                if exc.errno in _GSO_UNSUPPORTED:
                    self._gso = False
                    logger.info("overlay: no UDP segmentation offload (%s); using sendmmsg", exc)
                    rest = frames[start:]
                    self._send_run(sock, rest, list(range(1, len(rest) + 1)), address)
                    return
                for _ in chunk:
                    self._send_failed(address, exc)
            except (TypeError, ValueError, OverflowError) as exc:
                self._send_errors += len(chunk)
                self._warn("send", "cannot send to %r: %s", address, exc)
                return
            else:
                self._datagrams_out += len(chunk)
                self._bytes_out += sum(map(len, chunk))
            start = end

    def _send_failed(self, address: Address, exc: OSError) -> None:
        if exc.errno in _DROPPED:
            self._send_drops += 1
        else:
            self._send_errors += 1
            self._warn("send", "sending to %s failed: %s", address, exc)

    def _sockaddr(self, address: Address) -> bytes:
        """The C sockaddr of ``address`` for ``sendmmsg`` (cached, bounded)."""
        host, port = self._destination(address)
        ip = ipaddress.ip_address(host)
        if self._family == socket.AF_INET6:
            if ip.version != 6:
                raise ValueError(f"{host} is not an IPv6 address")
            scope = 0
            if ip.scope_id:  # fe80::1%eth0, as sendto takes it
                try:
                    scope = (
                        int(ip.scope_id)
                        if ip.scope_id.isdigit()
                        else socket.if_nametoindex(ip.scope_id)
                    )
                except OSError:
                    raise ValueError(f"{host}: no interface {ip.scope_id}") from None
            raw = struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0, ip.packed, scope)
        else:
            if ip.version != 4:
                raise ValueError(f"{host} is not an IPv4 address")
            raw = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), ip.packed)
        if len(self._sockaddrs) >= _MAX_SOCKADDRS:
            self._sockaddrs.clear()
        self._sockaddrs[address] = raw
        return raw

    # --- input -------------------------------------------------------------------

    def _readable(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        now = loop.time()
        deliver = self._core.receive_datagram
        frames, error = self._read(sock)
        if error is not None:
            self._read_errors += 1
            self._warn("read", "reading the overlay socket failed: %s", error)
        messages = self._reassembler.receive_many(frames, now)
        batch = getattr(self._core, "receive_datagrams", None)
        if batch is not None and messages:
            try:
                batch(messages, now)
            except Exception:
                self._core_failed("receive_datagrams")
        else:
            for message, source in messages:
                try:
                    deliver(message, source, now)
                except Exception:
                    self._core_failed("receive_datagram")
        self._datagrams_in += len(frames)
        self._bytes_in += sum(len(frame) for frame, _ in frames)
        self._messages_in += len(messages)
        self._wakeup()

    def _read(self, sock: socket.socket) -> tuple[list[tuple[bytes, Address]], OSError | None]:
        """The frames waiting now (at most ``read_batch``) with their sources; a read error."""
        if self._reader is not None:
            return self._reader.read(self._read_batch)
        recvfrom = sock.recvfrom
        mapped = self._family == socket.AF_INET6
        frames: list[tuple[bytes, Address]] = []
        for _ in range(self._read_batch):
            try:
                frame, peer = recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                return frames, exc
            host = peer[0]
            if mapped and host.startswith(_MAPPED_PREFIX) and "." in host:
                host = host[len(_MAPPED_PREFIX) :]
            frames.append((frame, (host, peer[1])))
        return frames, None

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
