"""One client session of the daemon: the asyncio driver of a ServerConnection.

It only moves data (STYLE.md 3): bytes read go to the sans-I/O
:class:`~hamcast.ipc.connection.ServerConnection`; the events it returns are
handed to the middleware core; what the core delivers is encoded back and
written once per event-loop iteration, so many messages leave in one write.

Flow control: when the client does not read, the transport's buffer passes
its high-water mark and asyncio pauses writing. From then on deliveries wait
in a bounded queue per socket (``SessionConfig.queue_messages`` /
``queue_bytes``); what does not fit is dropped and counted in the socket's
``dropped`` statistic. Nothing the client does can grow the daemon's memory
past those bounds.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from hamcast import __version__
from hamcast.config import SessionConfig
from hamcast.core.middleware import Middleware, Session
from hamcast.errors import HamcastError, ProtocolError, UsageError
from hamcast.events import (
    BindingChanged,
    Event,
    EventKind,
    InterfaceChanged,
    MemberJoined,
    MemberLeft,
    SourceAppeared,
)
from hamcast.ipc.connection import ServerConnection
from hamcast.ipc.events import DirectReported, HelloReceived, RequestReceived, SendReceived
from hamcast.ipc.names import NameTable
from hamcast.ipc.ops import Op
from hamcast.ipc.wire import NameKind
from hamcast.uri import URI

__all__ = ["ClientSession"]

logger = logging.getLogger(__name__)

_Queued = tuple[URI, str, int, bytes]
#: Kernel send buffer of a session's stream (bytes). A Unix stream socket holds
#: what its *sender's* buffer allows, so this is the room for deliveries while a
#: client is not scheduled; past it the transport pauses and the bounded queues
#: take over, and past those messages are dropped. The default (~200 KiB) is 150
#: messages of 1400 bytes, 2 ms at 80k messages/s: on a busy host a receiver
#: lost 4-11 % at saturation, none with this (docs/performance.md). Only this
#: direction: towards the daemon the client blocks instead of losing, and a
#: bigger buffer there would only add queueing delay.
_STREAM_BUFFER = 4 << 20
_EVENT_KINDS = {
    MemberJoined: EventKind.JOIN,
    MemberLeft: EventKind.LEAVE,
    SourceAppeared: EventKind.NEW_SOURCE,
    InterfaceChanged: EventKind.INTERFACE_CHANGED,
    BindingChanged: EventKind.BINDING_CHANGED,
}


class ClientSession(asyncio.Protocol):
    """The daemon's end of one IPC connection."""

    def __init__(
        self,
        middleware: Middleware,
        config: SessionConfig,
        on_close: Callable[[ClientSession], None] | None = None,
    ) -> None:
        self.middleware = middleware
        self.config = config
        self.conn = ServerConnection()
        self.names = NameTable(config.max_names)
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None
        self._on_close = on_close
        self._group_uris: dict[int, URI] = {}
        self._prepared: dict[int, set[int]] = {}
        self._paused = False
        self._flush_scheduled = False
        self._queues: dict[int, deque[_Queued | Event]] = {}
        self._queued_bytes: dict[int, int] = {}
        self._loop = asyncio.get_running_loop()
        self._error_log_at = 0.0
        self._last_names: tuple[URI, str, int] | None = None
        self._last_ids = (0, 0)

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.config.write_high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # the kernel caps it at wmem_max: fine
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_BUFFER)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        middleware = self.middleware
        run: list[memoryview] = []
        run_key = (0, 0)
        for event in events:
            if type(event) is SendReceived:
                key = (event.sock, event.group)
                if key != run_key:
                    if run:
                        self._send_run(run_key, run)
                        run = []
                    run_key = key
                run.append(event.payload)
                continue
            if run:
                self._send_run(run_key, run)
                run = []
            if type(event) is RequestReceived:
                self._request(event)
            elif type(event) is DirectReported:
                self._direct_report(event)
            elif type(event) is HelloReceived:
                session = self.session = middleware.open_session(self, event.pid, event.name)
                self.conn.session_id = session.id
                self.conn.send_welcome(__version__)
                logger.debug("session %d opened by pid %d (%s)", session.id, event.pid, event.name)
        if run:
            self._send_run(run_key, run)
        self._flush()
        transport = self.transport
        if (
            self._paused
            and transport is not None
            and transport.get_write_buffer_size() > 4 * self.config.write_high_water
        ):
            # Only answers to its own requests can pile up here (data waits in
            # the bounded queues): stop reading until the client reads.
            transport.pause_reading()

    def _send_run(self, key: tuple[int, int], payloads: list[memoryview]) -> None:
        """Send a run of SEND frames of one (socket, group) with one core call."""
        sock, group = key
        session = self.session
        assert session is not None
        uri = self._group_uris.get(group)
        if uri is None or group not in self._prepared.get(sock, ()):
            error = UsageError(f"group id {group} was not prepared for sending")
            for _ in payloads:
                self.conn.send_failed(sock, group, error)
            return
        try:
            self.middleware.send_many(session, sock, uri, payloads)
        except HamcastError as exc:
            self.conn.send_failed(sock, group, exc)

    def _direct_report(self, event: DirectReported) -> None:
        """Count what the client sent and received on its direct sockets (a report for
        a group id it was not given counts nothing)."""
        uri = self._group_uris.get(event.group)
        if uri is None or event.group not in self._prepared.get(event.sock, ()):
            return
        assert self.session is not None
        with contextlib.suppress(HamcastError):  # the socket is already gone
            self.middleware.direct_counts(
                self.session,
                event.sock,
                uri,
                (event.sent, event.sent_bytes),
                (event.received, event.received_bytes),
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.middleware.close_session(self.session)
            logger.debug("session %d closed", self.session.id)
        self._queues.clear()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._drain_queues()
        self._flush()

    # --- requests --------------------------------------------------------------

    def _request(self, event: RequestReceived) -> None:
        assert self.session is not None
        if event.op is Op.PREPARE_DIRECT or event.op is Op.RECEIVE_DIRECT:
            self._direct(event)
            return
        try:
            results = self._dispatch(event.op, event.args)
        except HamcastError as exc:
            self.conn.send_error(event.request_id, exc)
            return
        self.conn.send_response(event.request_id, event.op, results)

    def _dispatch(self, op: Op, args: list[Any]) -> list[Any]:
        session = self.session
        assert session is not None
        mw = self.middleware
        if op is Op.CREATE_SOCKET:
            return [mw.create_socket(session, args[0])]
        if op is Op.DELETE_SOCKET:
            mw.delete_socket(session, args[0])
            for name_id in self._prepared.pop(args[0], ()):
                self.names.unpin(name_id)
            return []
        if op is Op.JOIN:
            mw.join(session, args[0], URI.parse(args[1]))
            return []
        if op is Op.LEAVE:
            mw.leave(session, args[0], URI.parse(args[1]))
            return []
        if op is Op.SRC_REGISTER:
            return [mw.src_register(session, args[0], URI.parse(args[1]))]
        if op is Op.SRC_DEREGISTER:
            return [mw.src_deregister(session, args[0], URI.parse(args[1]))]
        if op is Op.GET_INTERFACES:
            return [mw.get_interfaces(session, args[0])]
        if op is Op.ADD_INTERFACE:
            mw.add_interface(session, args[0], args[1])
            return []
        if op is Op.DEL_INTERFACE:
            mw.del_interface(session, args[0], args[1])
            return []
        if op is Op.SET_TTL:
            mw.set_ttl(session, args[0], args[1], args[2])
            return []
        if op is Op.GET_TTL:
            return [mw.get_ttl(session, args[0], args[1])]
        if op is Op.ATOMIC_MSG_SIZE:
            return [mw.atomic_msg_size(session, args[0])]
        if op is Op.MAX_MSG_SIZE:
            return [mw.max_msg_size(session, args[0])]
        if op is Op.GROUP_SET:
            return [[(str(e.group), int(e.role)) for e in mw.group_set(args[0])]]
        if op is Op.NEIGHBOR_SET:
            return [mw.neighbor_set(args[0])]
        if op is Op.CHILDREN_SET:
            return [mw.children_set(args[0], URI.parse(args[1]))]
        if op is Op.PARENT_SET:
            return [mw.parent_set(args[0], URI.parse(args[1]))]
        if op is Op.DESIGNATED_HOST:
            return [int(mw.designated_host(args[0], URI.parse(args[1])))]
        if op is Op.ENABLE_EVENTS:
            mw.enable_events(session, args[0])
            return []
        if op is Op.DISABLE_EVENTS:
            mw.disable_events(session, args[0])
            return []
        if op is Op.LIST_INTERFACES:
            return [[(i.index, i.name, i.address, i.technology) for i in mw.interfaces()]]
        if op is Op.PREPARE_SEND:
            return self._prepare_send(args[0], URI.parse(args[1]))
        if op is Op.STATS:
            s = mw.stats(session, args[0])
            return [s.sent, s.received, s.dropped, s.send_failed]
        if op is Op.DAEMON_INFO:
            return [__version__, [t.name for t in mw.technologies]]
        if op is Op.INTERFACE_STATUS:
            return [json.dumps(mw.interface_status(args[0]), sort_keys=True)]
        if op is Op.GROUP_TABLE:
            return [json.dumps(mw.group_table(), sort_keys=True)]
        if op is Op.GROUPS:
            return [
                [
                    (str(g.group), g.technology, g.interface, g.listeners, g.senders)
                    for g in mw.groups()
                ]
            ]
        raise UsageError(f"operation {op.name} is not implemented by this daemon")

    def _prepare_send(self, sock: int, uri: URI) -> list[Any]:
        assert self.session is not None
        uri = uri.without_credentials()
        limit = self.middleware.prepare_send(self.session, sock, uri)
        return [self._pinned_name(sock, uri), limit]

    def _direct(self, event: RequestReceived) -> None:
        """PREPARE_DIRECT and RECEIVE_DIRECT: the answer, with a direct socket where the
        core grants one (docs/ipc.md). The descriptor travels with the answer's first
        byte, so the answer must not queue behind other output: with output pending,
        or a stream that cannot pass descriptors, nothing is granted."""
        session = self.session
        assert session is not None
        sock, text = event.args
        mw = self.middleware
        self._flush()
        stream = self._descriptor_stream()
        grant = stream is not None
        try:
            uri = URI.parse(text).without_credentials()
            if event.op is Op.PREPARE_DIRECT:
                limit, sender, destination = mw.prepare_direct(session, sock, uri, grant=grant)
                name_id = self._pinned_name(sock, uri)
                granted = sender.socket if sender is not None else None
                results: list[Any] = [name_id, limit, 1, *(destination or ("", 0, 0))]
            else:
                index, receiver = mw.receive_direct(session, sock, uri, grant=grant)
                name_id = self._pinned_name(sock, uri)
                granted = receiver.socket if receiver is not None else None
                results = [name_id, 1, index]
        except HamcastError as exc:
            self.conn.send_error(event.request_id, exc)
            return
        if granted is not None:
            if self._send_with_descriptor(stream, event, results, granted.fileno()):
                return
            with contextlib.suppress(HamcastError):
                mw.withdraw_direct(session, sock, uri)
        if event.op is Op.PREPARE_DIRECT:
            results[2:] = [0, "", 0, 0]
        else:
            results[1] = 0
        self.conn.send_response(event.request_id, event.op, results)

    def _descriptor_stream(self) -> Any:
        """The stream's socket if a descriptor can go out now: nothing queued before it
        and a Unix socket; else None."""
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return None
        stream = transport.get_extra_info("socket")
        if stream is None or stream.family != socket.AF_UNIX:
            return None
        return stream

    def _send_with_descriptor(
        self, stream: Any, event: RequestReceived, results: list[Any], fd: int
    ) -> bool:
        """Send the answer and the descriptor in one ``sendmsg``; False if it failed."""
        transport = self.transport
        assert transport is not None
        before = b"".join(self.conn.data_to_send())  # a NAME frame for the group, maybe
        self.conn.send_response(event.request_id, event.op, results)
        data = before + b"".join(self.conn.data_to_send())
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=stream.fileno())
        try:
            fds = array.array("i", [fd])
            sent = raw.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError:
            sent = 0  # full or broken: nothing went (the transport sees a break)
        finally:
            raw.detach()
        if not sent:
            transport.write(before)  # the caller answers again, without a socket
            return False
        if sent < len(data):
            transport.write(data[sent:])
        return True

    def _pinned_name(self, sock: int, uri: URI) -> int:
        """The group's name id, pinned while socket ``sock`` exists (it sends to the group,
        or reports on it)."""
        name_id = self._name(NameKind.GROUP, uri.name)
        prepared = self._prepared.setdefault(sock, set())
        if name_id not in prepared:
            if (
                not self.names.pinned(name_id)
                and self.names.pinned_count >= self.names.capacity - 2
            ):
                raise UsageError(
                    f"this session already sends to {self.names.pinned_count} groups, the maximum"
                )
            self.names.pin(name_id)
            prepared.add(name_id)
        self._group_uris[name_id] = uri
        return name_id

    def _name(self, kind: NameKind, text: str) -> int:
        name_id, new = self.names.intern(kind, text)
        if new:
            self._group_uris.pop(name_id, None)
            self.conn.send_name(name_id, kind, text)
        return name_id

    # --- SessionSink: what the core hands us -------------------------------------

    def deliver(
        self, sock: int, group: URI, source: str, iface: int, payload: bytes | memoryview
    ) -> bool:
        if self._paused or self._queues:
            return self._enqueue(sock, (group, source, iface, bytes(payload)))
        if not self._send_data(sock, group, source, iface, payload):
            return False
        self._schedule_flush()
        return True

    def _send_data(
        self, sock: int, group: URI, source: str, iface: int, payload: bytes | memoryview
    ) -> bool:
        # A stream repeats its (group, source): skip the two name lookups while
        # neither changes and no id was reassigned meanwhile.
        key = (group, source, self.names.evictions)
        if key == self._last_names:
            group_id, source_id = self._last_ids
        else:
            try:
                group_id = self._name(NameKind.GROUP, group.name)
                source_id = self._name(NameKind.SOURCE, source)
            except UsageError:
                return False  # every name id is pinned for sending: count it as a drop
            self._last_names = (group, source, self.names.evictions)
            self._last_ids = (group_id, source_id)
        self.conn.send_data(sock, group_id, source_id, iface, payload)
        return True

    def event(self, sock: int, event: Event) -> None:
        if self._paused or self._queues:
            self._enqueue(sock, event)
            return
        self._send_event(sock, event)
        self._schedule_flush()

    def _send_event(self, sock: int, event: Event) -> None:
        try:
            if isinstance(event, InterfaceChanged):
                group, source = 0, self._name(NameKind.TEXT, event.status)
            elif isinstance(event, BindingChanged):
                group = self._name(NameKind.GROUP, event.group.name)
                source = self._name(NameKind.TEXT, event.reason)
            else:
                group = self._name(NameKind.GROUP, event.group.name)
                source = (
                    self._name(NameKind.SOURCE, event.source)
                    if isinstance(event, SourceAppeared)
                    else 0
                )
        except UsageError:
            return  # no name id free: the event is lost, like a dropped message
        self.conn.send_event(sock, _EVENT_KINDS[type(event)], group, event.interface, source)

    def _enqueue(self, sock: int, item: _Queued | Event) -> bool:
        queue = self._queues.get(sock)
        if queue is None:
            queue = self._queues[sock] = deque()
            self._queued_bytes[sock] = 0
        size = len(item[3]) if isinstance(item, tuple) else 0
        if (
            len(queue) >= self.config.queue_messages
            or self._queued_bytes[sock] + size > self.config.queue_bytes
        ):
            return False
        queue.append(item)
        self._queued_bytes[sock] += size
        return True

    def _drain_queues(self) -> None:
        # Round-robin over sockets, a slice each, so one busy socket cannot starve the others.
        while self._queues and not self._paused:
            for sock in list(self._queues):
                queue = self._queues[sock]
                for _ in range(min(len(queue), 64)):
                    item = queue.popleft()
                    if isinstance(item, tuple):
                        group, source, iface, payload = item
                        self._queued_bytes[sock] -= len(payload)
                        self._send_data(sock, group, source, iface, payload)
                    else:
                        self._send_event(sock, item)
                if not queue:
                    del self._queues[sock]
                    del self._queued_bytes[sock]
            self._flush()

    # --- output ----------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _abort(self, exc: Exception) -> None:
        now = time.monotonic()
        # Garbage from one client is worth a log line, not a log flood.
        if now - self._error_log_at > 1.0:
            self._error_log_at = now
            who = f"session {self.session.id}" if self.session else "unopened session"
            logger.error("closing %s: %s", who, exc)
        self._flush()
        if self.transport is not None:
            self.transport.close()
