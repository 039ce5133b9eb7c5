"""The blocking client: :class:`MulticastSocket`, the whole RFC 7046 API.

Each socket has its own stream to the middleware. Threads may share a
socket: one thread can block in :meth:`MulticastSocket.receive` while
another sends or joins. Whichever thread needs input reads the stream for
everyone (a leader/follower scheme): there is no reader thread, so a
message costs no thread switch on its way to the application.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from hamcast.client.connect import open_stream
from hamcast.client.demux import Demux, SocketQueues, decode_result, group_rows
from hamcast.client.direct import (
    ANCILLARY_SPACE,
    REPORT_INTERVAL,
    DirectInbox,
    DirectRoute,
    DirectSockets,
)
from hamcast.core.middleware import GroupInfo
from hamcast.errors import (
    ClosedError,
    DaemonUnavailableError,
    HamcastError,
    MessageTooLongError,
    ReceiveTimeoutError,
    UnsupportedOperationError,
    WouldBlockError,
)
from hamcast.events import Event
from hamcast.ipc.connection import ClientConnection
from hamcast.ipc.ops import Op
from hamcast.model import GroupSetEntry, Interface, Message, SocketStats
from hamcast.uri import URI

__all__ = ["MulticastSocket"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 18
#: Buffers per sendmsg in send_many: header and payload of 256 messages (IOV_MAX is 1024).
_MAX_PARTS = 512
_HANDSHAKE_TIMEOUT = 10.0
#: Seconds before a group sent through the daemon asks again for a direct socket.
_DIRECT_RETRY = 5.0
#: Group names (as the application spells them) remembered per socket.
_MAX_ROUTES = 8192

GroupLike = str | URI
InterfaceLike = int | Interface


def as_uri(group: GroupLike) -> URI:
    return group if isinstance(group, URI) else URI.parse(group)


def as_index(iface: InterfaceLike) -> int:
    return iface.index if isinstance(iface, Interface) else int(iface)


class _Channel:
    """One blocking stream to the middleware, shared by the threads of one socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.demux = Demux()
        self._cond = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()
        self._reader: int | None = None
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        #: Direct receive sockets read alongside the stream: fd -> handler(revents),
        #: called by the reading thread with the lock held; a handler that returns
        #: False is not called again. The reader polls the stream, these and
        #: ``_waker`` (which tells it the set changed).
        self._watched: dict[int, Callable[[int], bool]] = {}
        self._waker = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._poller.register(self._waker, select.POLLIN)
        self.write(self.demux.hello(name))
        self.wait(lambda: self.demux.welcome is not None, time.monotonic() + _HANDSHAKE_TIMEOUT)

    def write(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        with self._write_lock:
            try:
                remaining = sum(len(p) for p in parts)
                while parts:
                    sent = self.sock.sendmsg(parts)
                    remaining -= sent
                    if not remaining:
                        return
                    parts = _advance(parts, sent)
            except OSError as exc:
                self.demux.lost(f"lost the connection to the hamcast middleware: {exc}")
                raise self.demux.error from None  # type: ignore[misc]

    def request(self, op: Op, args: list[Any]) -> Any:
        return self.request_with_fd(op, args)[0]

    def request_with_fd(self, op: Op, args: list[Any]) -> tuple[Any, int | None]:
        """The answer to a request, and the descriptor that came with it, if any."""
        with self._cond:
            if self.demux.error is not None:
                raise self.demux.error
            request_id, out = self.demux.request(op, args)
        self.write(out)
        responses = self.demux.responses
        self.wait(lambda: request_id in responses, None)
        with self._cond:
            response = responses.pop(request_id)
            fd = self.demux.direct_fds.pop(request_id, None)
        if response.error is not None:
            raise response.error
        return decode_result(op, response.results), fd

    def watch(self, fd: int, handler: Callable[[int], bool]) -> None:
        """Read ``fd`` too while waiting: ``handler(revents)`` when it is ready."""
        with self._cond:
            self._watched[fd] = handler
            self._poller.register(fd, select.POLLIN)
        self.wake()

    def unwatch(self, fd: int) -> None:
        with self._cond:
            if self._watched.pop(fd, None) is not None:
                self._poller.unregister(fd)

    def wake(self) -> None:
        """Make a thread waiting in poll() return, to take up a change of the watched set."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._waker, 1)

    def wait(self, ready: Callable[[], bool], deadline: float | None) -> None:
        """Block until ``ready()`` or ``deadline``; read the stream if nobody else is."""
        with self._cond:
            while not ready():
                if self.demux.error is not None:
                    raise self.demux.error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ReceiveTimeoutError("timed out")
                me = threading.get_ident()
                if self._reader not in (None, me):
                    self._cond.wait(remaining)
                    continue
                # Who reads, not just whether: a thread that an exception (Ctrl-C) tore
                # out of here mid-way finds itself still marked and reads again.
                self._reader = me
                self._cond.release()
                try:
                    count, ancdata, flags, ready_fds = self._poll(remaining)
                finally:
                    self._cond.acquire()
                    self._reader = None
                for fd, revents in ready_fds:
                    handler = self._watched.get(fd)
                    if handler is not None and not handler(revents):
                        del self._watched[fd]
                        self._poller.unregister(fd)
                if ancdata or flags:
                    self.demux.ancillary(ancdata, flags)
                if count:
                    self.demux.feed(self._view[:count])
                self._cond.notify_all()

    def _poll(
        self, timeout: float | None
    ) -> tuple[int, list[tuple[int, int, bytes]], int, list[tuple[int, int]]]:
        """Wait for the stream or a watched socket; read the stream if it is ready."""
        millis = -1 if timeout is None else math.ceil(timeout * 1000)
        stream, waker = self.sock.fileno(), self._waker
        try:
            events = self._poller.poll(millis)
        except (InterruptedError, RuntimeError):  # RuntimeError: the socket was closed
            return 0, [], 0, []
        others = []
        readable = False
        for fd, revents in events:
            if fd == stream:
                readable = True
            elif fd == waker:
                with contextlib.suppress(OSError):
                    os.eventfd_read(waker)
            else:
                others.append((fd, revents))
        if not readable:
            return 0, [], 0, others
        return (*self._read(None), others)

    def _read(self, timeout: float | None) -> tuple[int, list[tuple[int, int, bytes]], int]:
        """Bytes read into the buffer, and the descriptors that came with them."""
        try:
            self.sock.settimeout(timeout)
            count, ancdata, flags, _ = self.sock.recvmsg_into([self._buffer], ANCILLARY_SPACE)
        except TimeoutError:
            return 0, [], 0
        except OSError as exc:
            self.demux.lost(f"lost the connection to the hamcast middleware: {exc}")
            return 0, [], 0
        if count == 0:
            self.demux.lost(
                "the hamcast middleware closed the connection (was the daemon stopped?)"
            )
        return count, ancdata, flags & socket.MSG_CTRUNC

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._cond:
            self.demux.close()
            self._watched.clear()
        os.close(self._waker)


def _advance(
    parts: Sequence[bytes | bytearray | memoryview], sent: int
) -> Sequence[bytes | bytearray | memoryview]:
    """Drop ``sent`` bytes from the front of a scatter list."""
    while parts and sent >= len(parts[0]):
        sent -= len(parts[0])
        parts = parts[1:]
    if parts and sent:
        parts = [memoryview(parts[0])[sent:], *parts[1:]]
    return parts


class MulticastSocket:
    """An RFC 7046 multicast socket (createMSocket … deleteMSocket).

    ``interfaces``: the interfaces (indices or :class:`Interface`) the socket
    uses; all of the host's when empty. ``socket_path``: the daemon's IPC
    socket (default: ``$HAMCAST_SOCKET`` or the documented default).
    ``embedded``: True runs the middleware inside this process, False
    requires a daemon, None (default) uses a daemon if one answers and the
    embedded middleware otherwise. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        interfaces: Iterable[InterfaceLike] = (),
        *,
        socket_path: str | None = None,
        embedded: bool | None = None,
        name: str = "",
    ) -> None:
        stream, self.mode = open_stream(socket_path, embedded)
        try:
            self._channel = _Channel(stream, name)
        except BaseException:
            stream.close()
            raise
        self._closed = False
        self._event_thread: threading.Thread | None = None
        self._id: int = self._channel.request(Op.CREATE_SOCKET, [[as_index(i) for i in interfaces]])
        self._queues: SocketQueues = self._channel.demux.add_socket(self._id)
        #: How each group leaves (docs/performance.md, direct data path), by the
        #: group as the application passed it and as a URI.
        self._routes: dict[GroupLike, DirectRoute] = {}
        self._direct = DirectSockets()
        self._direct_ok = True
        #: Joined groups received on sockets of their own, and those whose socket the
        #: daemon revoked (to ask again at the next receive).
        self._inboxes: dict[URI, DirectInbox] = {}
        self._reask: set[URI] = set()
        self._direct_rx_ok = True
        self._datagram = bytearray(65536)

    # --- lifecycle -----------------------------------------------------------------

    @property
    def id(self) -> int:
        """The socket's id within its middleware."""
        return self._id

    def close(self) -> None:
        """Delete the socket (deleteMSocket): leave every group and release it."""
        if self._closed:
            return
        self._closed = True
        for inbox in list(self._inboxes.values()):
            self._channel.unwatch(inbox.sock.fileno())
        with contextlib.suppress(HamcastError, OSError):
            self._report_direct()
        for inbox in list(self._inboxes.values()):
            self._close_inbox(inbox)
        with contextlib.suppress(HamcastError, OSError):
            self._channel.request(Op.DELETE_SOCKET, [self._id])
        self._routes.clear()
        self._direct.close()
        self._channel.close()
        if self._event_thread is not None:
            self._event_thread.join(timeout=2)

    def __enter__(self) -> MulticastSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: Op, *args: Any) -> Any:
        if self._closed:
            raise ClosedError("the multicast socket is closed")
        return self._channel.request(op, list(args))

    # --- group management (RFC 7046 §5.1) --------------------------------------------

    def join(self, group: GroupLike) -> None:
        """Start receiving ``group``.

        Where the group is bound to native IP, its messages then arrive on a socket
        the daemon passed this process (the direct data path, docs/performance.md).
        """
        uri = as_uri(group)
        self._call(Op.JOIN, self._id, str(uri))
        self._receive_directly(uri)

    def leave(self, group: GroupLike) -> None:
        """Stop receiving ``group``."""
        uri = as_uri(group)
        inbox = self._inboxes.get(uri)
        if inbox is not None:
            self._channel.unwatch(inbox.sock.fileno())
            with contextlib.suppress(HamcastError, OSError):
                self._report_inbox(inbox, time.monotonic())
            self._close_inbox(inbox)
        self._reask.discard(uri)
        self._call(Op.LEAVE, self._id, str(uri))

    def _receive_directly(self, uri: URI) -> None:
        """Ask for a socket of our own for a joined group (RECEIVE_DIRECT)."""
        if not self._direct_rx_ok or uri in self._inboxes:
            return
        try:
            results, fd = self._channel.request_with_fd(Op.RECEIVE_DIRECT, [self._id, str(uri)])
        except UnsupportedOperationError:  # a daemon older than the direct path
            self._direct_rx_ok = False
            return
        except HamcastError:
            return  # left meanwhile: nothing to receive
        name_id, granted, interface = results
        if fd is None:
            if granted:  # the descriptor was lost on the way (no room for it here):
                self._direct_rx_ok = False  # let the daemon deliver, as before
                self._call(Op.LEAVE, self._id, str(uri))
                self._call(Op.JOIN, self._id, str(uri))
            return
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        inbox = self._inboxes[uri] = DirectInbox(uri, name_id, interface, sock)
        self._channel.watch(sock.fileno(), lambda revents: self._inbox_ready(inbox, revents))

    def _inbox_ready(self, inbox: DirectInbox, revents: int) -> bool:
        """Drain a direct receive socket into the queue (the channel's lock is held);
        False when the daemon revoked it (POLLHUP): the group is asked for again."""
        queues = self._queues
        queues.dropped += inbox.drain(queues.messages, queues.max_queue, self._datagram)
        now = time.monotonic()
        if revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            with contextlib.suppress(HamcastError, OSError):
                self._report_inbox(inbox, now)
            if self._close_inbox(inbox):
                self._reask.add(inbox.uri)
            return False
        if now - inbox.reported_at >= REPORT_INTERVAL:
            with contextlib.suppress(HamcastError, OSError):
                self._report_inbox(inbox, now)
        return True

    def _report_inbox(self, inbox: DirectInbox, now: float) -> None:
        inbox.reported_at = now
        if inbox.received:
            frame = ClientConnection.direct_report_frame(
                self._id, inbox.name_id, (0, 0), (inbox.received, inbox.size)
            )
            inbox.received = inbox.size = 0
            self._channel.write([frame])

    def _close_inbox(self, inbox: DirectInbox) -> bool:
        """Forget a direct receive socket; False if it was forgotten already."""
        if self._inboxes.get(inbox.uri) is not inbox:
            return False
        del self._inboxes[inbox.uri]
        inbox.sock.close()
        return True

    def src_register(self, group: GroupLike) -> list[int]:
        """Announce this socket as a source of ``group``; returns the interfaces that failed."""
        result: list[int] = self._call(Op.SRC_REGISTER, self._id, str(as_uri(group)))
        return result

    def src_deregister(self, group: GroupLike) -> list[int]:
        """Withdraw the source announcement; returns the interfaces that failed."""
        result: list[int] = self._call(Op.SRC_DEREGISTER, self._id, str(as_uri(group)))
        return result

    # --- send and receive (RFC 7046 §5.2) -----------------------------------------------

    def send(self, group: GroupLike, message: bytes | bytearray | memoryview) -> None:
        """Send ``message`` to ``group``.

        Raises :class:`~hamcast.errors.MessageTooLongError` (EMSGSIZE) when it
        exceeds the group's maximum message size, and any error an earlier
        send on this socket met in the middleware. Where the group is bound to
        native IP the message leaves on a socket the daemon passed this process
        (the direct data path); elsewhere it goes through the daemon.
        """
        route = self._routes.get(group)
        if route is None or (route.sock is None and route.retry_at <= time.monotonic()):
            route = self._route(group)
        sock = route.sock
        if sock is not None:
            if self._queues.failures:
                raise self._queues.failures.popleft()
            if len(message) > route.limit:
                raise MessageTooLongError(len(message), route.limit)
            try:
                sock.sendto(message, route.destination)
            except OSError as exc:
                self._lost_direct(route, exc)  # then through the daemon
            else:
                route.messages += 1
                route.size += len(message)
                now = time.monotonic()
                if now - route.reported_at >= REPORT_INTERVAL:
                    self._report(route, now)
                return
        header = self._channel.demux.send_frame(self._queues, self._id, route.uri, message)
        self._channel.write([header, message])

    def _route(self, group: GroupLike) -> DirectRoute:
        """How ``group`` leaves this socket: asks the daemon (PREPARE_DIRECT) once, and
        again after a revocation or, for a group sent through the daemon, a while."""
        if self._closed:
            raise ClosedError("the multicast socket is closed")
        uri = group if isinstance(group, URI) else URI.parse(group)
        route = self._routes.get(uri)
        if route is None or (route.sock is None and route.retry_at <= time.monotonic()):
            route = self._prepare(uri)
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            self._routes[uri] = route
        self._routes[group] = route
        return route

    def _prepare(self, uri: URI) -> DirectRoute:
        if self._direct_ok:
            try:
                results, fd = self._channel.request_with_fd(Op.PREPARE_DIRECT, [self._id, str(uri)])
            except UnsupportedOperationError:  # a daemon older than the direct path
                self._direct_ok = False
            else:
                name_id, limit, _, address, port, scope = results
                self._queues.send_ids[uri] = (name_id, limit)
                if fd is None:
                    route = DirectRoute(uri, name_id, limit)
                    # Through the daemon for now; the binding may move to native IP.
                    route.retry_at = time.monotonic() + _DIRECT_RETRY
                    return route
                sock = self._direct.adopt(fd)
                return DirectRoute(uri, name_id, limit, sock, (address, port, scope))
        name_id, limit = self._call(Op.PREPARE_SEND, self._id, str(uri))
        self._queues.send_ids[uri] = (name_id, limit)
        return DirectRoute(uri, name_id, limit)

    def _report(self, route: DirectRoute, now: float) -> None:
        """Tell the daemon what went out directly since the last report (its counters)."""
        route.reported_at = now
        if route.messages:
            frame = ClientConnection.direct_report_frame(
                self._id, route.name_id, (route.messages, route.size), (0, 0)
            )
            route.messages = route.size = 0
            self._channel.write([frame])

    def _report_direct(self) -> None:
        now = time.monotonic()
        for route in set(self._routes.values()):
            if route.sock is not None:
                self._report(route, now)
        for inbox in list(self._inboxes.values()):
            self._report_inbox(inbox, now)

    def _lost_direct(self, route: DirectRoute, exc: OSError) -> None:
        """The daemon revoked the route's socket (EPIPE) or it failed: forget every route
        on it; their groups ask the daemon again at their next send."""
        sock = route.sock
        assert sock is not None
        logger.debug("direct socket for %s gone (%s); asking the daemon again", route.uri, exc)
        now = time.monotonic()
        gone = {key: other for key, other in self._routes.items() if other.sock is sock}
        for key, other in gone.items():
            self._report(other, now)
            del self._routes[key]
        for other in gone.values():
            other.sock = None
        self._direct.drop(sock)

    def send_many(
        self, group: GroupLike, messages: Iterable[bytes | bytearray | memoryview]
    ) -> int:
        """Send several messages to ``group`` in order, with one write to the middleware.

        The same as calling :meth:`send` for each, but the frames leave in
        one system call per up to 256 messages, and the daemon can pass a
        run to its technology in one go (docs/performance.md); on the direct
        data path it is one ``sendmmsg`` per 64 messages. Every message is
        checked before any is sent: one too long raises
        :class:`~hamcast.errors.MessageTooLongError` and nothing is sent.
        Returns the number of messages sent.
        """
        route = self._routes.get(group)
        if route is None or (route.sock is None and route.retry_at <= time.monotonic()):
            route = self._route(group)
        payloads = messages if isinstance(messages, list) else list(messages)
        count = len(payloads)
        if route.sock is not None:
            if self._queues.failures:
                raise self._queues.failures.popleft()
            for message in payloads:
                if len(message) > route.limit:
                    raise MessageTooLongError(len(message), route.limit)
            sent, error = route.send_many(payloads)
            if error is None:
                now = time.monotonic()
                if now - route.reported_at >= REPORT_INTERVAL:
                    self._report(route, now)
                return count
            self._lost_direct(route, error)  # the rest through the daemon
            payloads = payloads[sent:]
        send_frame = self._channel.demux.send_frame
        parts: list[bytes | bytearray | memoryview] = []
        for message in payloads:
            parts.append(send_frame(self._queues, self._id, route.uri, message))
            parts.append(message)
        write = self._channel.write
        # sendmsg takes at most IOV_MAX (1024) buffers.
        for start in range(0, len(parts), _MAX_PARTS):
            write(parts[start : start + _MAX_PARTS])
        return count

    def receive(self, timeout: float | None = None) -> Message:
        """The next message: waits forever, or ``timeout`` seconds (ReceiveTimeoutError)."""
        if self._reask:
            for uri in list(self._reask):  # the daemon revoked their sockets (a move)
                self._reask.discard(uri)
                self._receive_directly(uri)
        messages = self._queues.messages
        if not messages:
            if self._closed:
                raise ClosedError("the multicast socket is closed")
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._channel.wait(lambda: bool(messages), deadline)
            except DaemonUnavailableError:
                if self._closed:
                    raise ClosedError("the multicast socket was closed") from None
                raise
        return messages.popleft()

    def receive_nowait(self) -> Message:
        """The next message if one is waiting, else WouldBlockError."""
        try:
            return self.receive(timeout=0)
        except ReceiveTimeoutError:
            raise WouldBlockError("no message waiting") from None

    def __iter__(self) -> Iterator[Message]:
        """Messages as they arrive, until the socket is closed."""
        while True:
            try:
                yield self.receive()
            except ClosedError:
                return

    # --- socket options (RFC 7046 §5.3) -----------------------------------------------

    def get_interfaces(self) -> list[int]:
        """Indices of the interfaces this socket uses."""
        result: list[int] = self._call(Op.GET_INTERFACES, self._id)
        return result

    def add_interface(self, interface: InterfaceLike) -> None:
        self._call(Op.ADD_INTERFACE, self._id, as_index(interface))

    def del_interface(self, interface: InterfaceLike) -> None:
        self._call(Op.DEL_INTERFACE, self._id, as_index(interface))
        self._queues.send_ids.clear()
        self._routes.clear()  # the daemon revoked the interface's direct socket

    def set_ttl(self, ttl: int, interfaces: Iterable[InterfaceLike] = ()) -> None:
        """Set the TTL / hop limit, on the given interfaces or all of the socket's."""
        self._call(Op.SET_TTL, self._id, ttl, [as_index(i) for i in interfaces])

    def get_ttl(self, interface: InterfaceLike = 0) -> int:
        """The TTL on ``interface`` (default: the socket's first)."""
        result: int = self._call(Op.GET_TTL, self._id, as_index(interface))
        return result

    def atomic_msg_size(self) -> int:
        """Largest message sent without fragmentation on every interface (bytes)."""
        result: int = self._call(Op.ATOMIC_MSG_SIZE, self._id)
        return result

    def max_msg_size(self) -> int:
        """Largest message this socket can send on every interface (bytes)."""
        result: int = self._call(Op.MAX_MSG_SIZE, self._id)
        return result

    # --- service calls (RFC 7046 §5.4) ---------------------------------------------------

    def group_set(self, interface: InterfaceLike) -> list[GroupSetEntry]:
        """Groups active on ``interface`` with this host's role in each."""
        result: list[GroupSetEntry] = self._call(Op.GROUP_SET, as_index(interface))
        return result

    def neighbor_set(self, interface: InterfaceLike) -> list[str]:
        """Multicast neighbours on ``interface`` (routers, overlay peers)."""
        result: list[str] = self._call(Op.NEIGHBOR_SET, as_index(interface))
        return result

    def children_set(self, interface: InterfaceLike, group: GroupLike) -> list[str]:
        """Nodes below this host in ``group``'s distribution tree."""
        result: list[str] = self._call(Op.CHILDREN_SET, as_index(interface), str(as_uri(group)))
        return result

    def parent_set(self, interface: InterfaceLike, group: GroupLike) -> list[str]:
        """Nodes above this host in ``group``'s distribution tree."""
        result: list[str] = self._call(Op.PARENT_SET, as_index(interface), str(as_uri(group)))
        return result

    def designated_host(self, interface: InterfaceLike, group: GroupLike) -> bool:
        """Whether this host is the designated forwarder for ``group`` on ``interface``."""
        result: bool = self._call(Op.DESIGNATED_HOST, as_index(interface), str(as_uri(group)))
        return result

    def interface_status(self, interface: InterfaceLike) -> dict[str, Any]:
        """What the interface's technology knows about its network (e.g. discovery verdict)."""
        result: dict[str, Any] = self._call(Op.INTERFACE_STATUS, as_index(interface))
        return result

    def enable_events(self, callback: Callable[[Event], None] | None = None) -> None:
        """Receive membership events: from :meth:`next_event`, or passed to ``callback``.

        A callback runs on a thread of its own that this socket starts; it
        must not block for long.
        """
        self._call(Op.ENABLE_EVENTS, self._id)
        if callback is not None and self._event_thread is None:
            self._event_thread = threading.Thread(
                target=self._event_loop, args=(callback,), name="hamcast-events", daemon=True
            )
            self._event_thread.start()

    def disable_events(self) -> None:
        self._call(Op.DISABLE_EVENTS, self._id)

    def next_event(self, timeout: float | None = None) -> Event:
        """The next membership event (ReceiveTimeoutError after ``timeout`` seconds)."""
        events = self._queues.events
        if not events:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._channel.wait(lambda: bool(events), deadline)
        return events.popleft()

    def _event_loop(self, callback: Callable[[Event], None]) -> None:
        while not self._closed:
            try:
                event = self.next_event(timeout=0.5)
            except ReceiveTimeoutError:
                continue
            except (HamcastError, OSError):
                return
            try:
                callback(event)
            except Exception:
                logger.exception("membership event callback raised")

    # --- beyond the RFC: the host's view ---------------------------------------------------

    def interfaces(self) -> list[Interface]:
        """All interfaces of the host's middleware."""
        result: list[Interface] = self._call(Op.LIST_INTERFACES)
        return result

    def stats(self) -> SocketStats:
        """Counters of this socket.

        ``dropped`` counts messages lost in the daemon and in this process's
        bounded queue; ``received`` those that reached this process's queue.
        """
        self._report_direct()  # what went out directly counts in ``sent``
        sent, received, dropped, failed = self._call(Op.STATS, self._id)
        local = self._queues.dropped
        return SocketStats(sent, received - local, dropped + local, failed)

    def daemon_info(self) -> tuple[str, list[str]]:
        """The middleware's version and its technology modules."""
        version, technologies = self._call(Op.DAEMON_INFO)
        return version, technologies

    def groups(self) -> list[GroupInfo]:
        """The host's group table: each group, its technology, local members and why."""
        try:
            table: dict[str, Any] = self._call(Op.GROUP_TABLE)
        except UnsupportedOperationError:  # a daemon older than GROUP_TABLE
            rows = self._call(Op.GROUPS)
            return [GroupInfo(URI.parse(g), t, i, n, s) for g, t, i, n, s in rows]
        return group_rows(table)

    def gateway_status(self) -> dict[str, Any]:
        """Whether the daemon is a gateway candidate, what it bridges, its counters."""
        table: dict[str, Any] = self._call(Op.GROUP_TABLE)
        status: dict[str, Any] = table["gateway"]
        return status
