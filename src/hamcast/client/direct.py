"""The client's end of the direct data path (docs/performance.md, docs/ipc.md).

Where a group is bound to native IP, the daemon answers PREPARE_DIRECT with a
UDP socket it configured (interface, TTL, loopback) and the group's
destination. The client then sends that group's messages on the socket
itself: no IPC hop, no daemon wake-up, and ``send_many`` is one ``sendmmsg``
per 64 messages. What leaves is byte for byte what the daemon would send.

The daemon stays in charge: it changes the TTL on its copy of the socket,
and revokes the socket (shuts it down, so sends on every copy fail with
EPIPE) when the binding moves or the group is deregistered; the client then
drops every route on that socket and asks again. Sent messages are counted
here and reported to the daemon (DIRECT_REPORT frames) at least every
:data:`REPORT_INTERVAL` seconds of sending, at ``stats()`` and at close.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

from hamcast.model import Message
from hamcast.technologies.ip import mmsg
from hamcast.uri import URI

__all__ = [
    "ANCILLARY_SPACE",
    "REPORT_INTERVAL",
    "DirectInbox",
    "DirectRoute",
    "DirectSockets",
    "close_all",
    "descriptors_in",
]

#: Seconds between reports of what was sent directly, while sending.
REPORT_INTERVAL = 0.5
#: Room for the descriptors of one read: the daemon passes one per answer.
ANCILLARY_SPACE = socket.CMSG_SPACE(4 * array.array("i").itemsize)


class DirectRoute:
    """One group's way out of this process: a direct socket, or ``sock`` None (frames)."""

    __slots__ = (
        "batcher",
        "destination",
        "limit",
        "messages",
        "name_id",
        "reported_at",
        "retry_at",
        "size",
        "sock",
        "sockaddr",
        "uri",
    )

    def __init__(
        self,
        uri: URI,
        name_id: int,
        limit: int,
        sock: socket.socket | None = None,
        destination: tuple[str, int, int] = ("", 0, 0),
    ) -> None:
        self.uri = uri
        self.name_id = name_id
        self.limit = limit
        self.sock = sock
        address, port, scope = destination
        self.destination: tuple[str, int] | tuple[str, int, int, int] = (
            (address, port, 0, scope) if ":" in address else (address, port)
        )
        self.sockaddr = _sockaddr(address, port, scope) if sock is not None else b""
        self.batcher: mmsg.DatagramBatcher | None = None
        #: Sent directly and not reported yet.
        self.messages = 0
        self.size = 0
        self.reported_at = 0.0
        #: When a route through the daemon asks again for a direct socket.
        self.retry_at = float("inf")

    def send_many(
        self, payloads: Sequence[bytes | bytearray | memoryview]
    ) -> tuple[int, OSError | None]:
        """Send ``payloads`` in order, 64 per ``sendmmsg`` (``sendto`` each without it),
        and count them; returns how many left, and the error that stopped it, if any."""
        sock = self.sock
        assert sock is not None
        if self.batcher is None and mmsg.available():
            self.batcher = mmsg.DatagramBatcher(sock.fileno())
        batcher = self.batcher
        done = 0
        try:
            if batcher is None:
                for payload in payloads:
                    sock.sendto(payload, self.destination)
                    done += 1
                    self.size += len(payload)
            else:
                while done < len(payloads):
                    chunk = [
                        p if isinstance(p, bytes | memoryview) else bytes(p)
                        for p in payloads[done : done + mmsg.BATCH]
                    ]
                    # A blocking socket takes a whole batch; nothing taken is a full
                    # queue: that datagram is lost, as with any UDP socket.
                    taken = batcher.send(chunk, self.sockaddr) or 1
                    self.size += sum(len(p) for p in chunk[:taken])
                    done += taken
        except OSError as exc:
            self.messages += done
            return done, exc
        self.messages += done
        return done, None


class DirectInbox:
    """One joined group received on a socket of this process's own (the receiving half
    of the direct data path): each datagram is a message, its sender the source."""

    __slots__ = (
        "_sources",
        "interface",
        "name_id",
        "received",
        "reported_at",
        "size",
        "sock",
        "uri",
    )

    def __init__(self, uri: URI, name_id: int, interface: int, sock: socket.socket) -> None:
        self.uri = uri
        self.name_id = name_id
        self.interface = interface
        self.sock = sock
        #: Read and not reported yet (those the socket's full queue dropped included).
        self.received = 0
        self.size = 0
        self.reported_at = 0.0
        self._sources: dict[Any, str] = {}

    def drain(self, messages: deque[Message], max_queue: int, buffer: bytearray) -> int:
        """Move what arrived (up to 256 datagrams) into ``messages``, at most
        ``max_queue`` in all; returns how many did not fit (dropped)."""
        recv = self.sock.recvfrom_into
        view = memoryview(buffer)
        sources = self._sources
        uri, interface = self.uri, self.interface
        new_message = tuple.__new__  # Message(...) without its Python-level __new__
        dropped = 0
        for _ in range(256):
            try:
                size, peer = recv(buffer)
            except OSError:  # nothing more (EAGAIN), or the socket went away
                break
            self.received += 1
            self.size += size
            if len(messages) >= max_queue:
                dropped += 1
                continue
            source = sources.get(peer)
            if source is None:
                source = self._source(peer)
            messages.append(new_message(Message, (uri, source, bytes(view[:size]), interface)))
        return dropped

    def _source(self, peer: Any) -> str:
        """The sender as the daemon writes it: ``ADDRESS:PORT``, ``[ADDRESS]:PORT``."""
        address = str(peer[0]).split("%", 1)[0]
        text = f"[{address}]:{peer[1]}" if ":" in address else f"{address}:{peer[1]}"
        if len(self._sources) >= 1024:
            self._sources.clear()
        self._sources[peer] = text
        return text


class DirectSockets:
    """The direct sockets this process holds, one per socket the daemon passed.

    The daemon passes the same socket again for every group it serves (a new
    descriptor each time); the copies are recognised by the socket's inode and
    closed, so a process holds one descriptor per daemon socket.
    """

    def __init__(self) -> None:
        self._by_inode: dict[int, socket.socket] = {}

    def adopt(self, fd: int) -> socket.socket:
        """The socket for descriptor ``fd`` (owned from now on), blocking like a plain one."""
        inode = os.fstat(fd).st_ino
        known = self._by_inode.get(inode)
        if known is not None and known.fileno() >= 0:
            os.close(fd)
            return known
        sock = socket.socket(fileno=fd)
        # Blocking, as a plain UDP socket: a full send queue waits instead of losing.
        # The daemon never sends on its copy, so the shared flag does not matter to it.
        sock.setblocking(True)
        self._by_inode[inode] = sock
        return sock

    def drop(self, sock: socket.socket) -> None:
        """Close a socket the daemon revoked (or that failed)."""
        for inode, known in list(self._by_inode.items()):
            if known is sock:
                del self._by_inode[inode]
        sock.close()

    def close(self) -> None:
        for sock in self._by_inode.values():
            sock.close()
        self._by_inode.clear()


def descriptors_in(ancdata: list[tuple[int, int, bytes]], into: deque[int]) -> None:
    """Append the descriptors an ``SCM_RIGHTS`` message carried to ``into``."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def close_all(fds: deque[int]) -> None:
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.popleft())


def _sockaddr(address: str, port: int, scope: int) -> bytes:
    """The C ``sockaddr_in``/``sockaddr_in6`` of a destination, for ``sendmmsg``."""
    if ":" in address:
        packed = socket.inet_pton(socket.AF_INET6, address)
        return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0, packed, scope)
    packed = socket.inet_pton(socket.AF_INET, address)
    return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), packed)
