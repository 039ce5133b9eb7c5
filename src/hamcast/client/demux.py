"""What both client flavours share: decoding the daemon's frames into per-socket queues.

:class:`Demux` is sans-I/O. The blocking and the asyncio client feed it the
bytes they read and then look into its queues; only how they wait differs.
Every queue is bounded: a socket whose application does not receive loses
the newest messages beyond ``max_queue`` and counts them in ``dropped``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from hamcast.client.direct import close_all, descriptors_in
from hamcast.core.middleware import GroupInfo
from hamcast.errors import (
    DaemonUnavailableError,
    HamcastError,
    InvalidURIError,
    MessageTooLongError,
    ProtocolError,
)
from hamcast.events import (
    BindingChanged,
    Event,
    EventKind,
    InterfaceChanged,
    MemberJoined,
    MemberLeft,
    SourceAppeared,
)
from hamcast.ipc.connection import ClientConnection
from hamcast.ipc.events import (
    DataReceived,
    EventReceived,
    NameDefined,
    ResponseReceived,
    SendFailed,
    WelcomeReceived,
)
from hamcast.ipc.ops import Op
from hamcast.model import GroupRole, GroupSetEntry, Interface, Message
from hamcast.uri import URI

__all__ = ["DEFAULT_MAX_QUEUE", "Demux", "SocketQueues", "decode_result"]

#: Messages one socket holds in the client before it drops the newest.
DEFAULT_MAX_QUEUE = 65536


class SocketQueues:
    """What has arrived for one multicast socket and not been taken yet."""

    __slots__ = ("dropped", "events", "failures", "max_queue", "messages", "send_ids")

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.messages: deque[Message] = deque()
        self.events: deque[Event] = deque()
        self.failures: deque[HamcastError] = deque(maxlen=64)
        self.dropped = 0
        #: group -> (name id, max message size), from PREPARE_SEND.
        self.send_ids: dict[URI, tuple[int, int]] = {}


class Demux:
    """Client-side protocol state: one per connection to a daemon."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.conn = ClientConnection()
        self.max_queue = max_queue
        self.welcome: WelcomeReceived | None = None
        self.responses: dict[int, ResponseReceived] = {}
        self.sockets: dict[int, SocketQueues] = {}
        self._names: dict[int, str] = {}
        self._groups: dict[int, URI] = {}
        self.error: HamcastError | None = None
        #: Descriptors received and not yet matched to a PREPARE_DIRECT answer; the
        #: matched ones by request id, until the requester takes them.
        self.fds: deque[int] = deque()
        self.direct_fds: dict[int, int] = {}
        #: A read lost descriptors (MSG_CTRUNC): answers can no longer be matched.
        self.fds_lost = False

    def hello(self, name: str = "") -> list[bytes | memoryview]:
        self.conn.send_hello(os.getpid(), name or os.path.basename(sys.argv[0] or "python"))
        return self.conn.data_to_send()

    def request(self, op: Op, args: Sequence[Any]) -> tuple[int, list[bytes | memoryview]]:
        request_id = self.conn.send_request(op, args)
        return request_id, self.conn.data_to_send()

    def add_socket(self, sock_id: int) -> SocketQueues:
        queues = self.sockets[sock_id] = SocketQueues(self.max_queue)
        return queues

    def lost(self, reason: str) -> None:
        """The stream ended or broke; every waiter should see ``self.error``."""
        if self.error is None:
            self.error = DaemonUnavailableError(reason)

    def ancillary(self, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        """Take the descriptors one read carried (call before feeding its bytes)."""
        if ancdata:
            descriptors_in(ancdata, self.fds)
        if flags & socket.MSG_CTRUNC:
            self.fds_lost = True
        if self.fds_lost:
            close_all(self.fds)

    def close(self) -> None:
        """Close the descriptors nobody took."""
        close_all(self.fds)
        close_all(deque(self.direct_fds.values()))
        self.direct_fds.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Decode bytes read from the daemon; malformed input marks the connection broken."""
        try:
            events = self.conn.receive_data(data)
            self._file(events)
        except HamcastError as exc:
            self.error = exc
        except KeyError as exc:
            self.error = ProtocolError(f"the daemon used name id {exc} before defining it")

    def _file(self, events: list[Any]) -> None:
        sockets = self.sockets
        names = self._names
        groups = self._groups
        new_message = tuple.__new__  # Message(...) without its Python-level __new__
        for event in events:
            if type(event) is DataReceived:
                queues = sockets.get(event.sock)
                if queues is None:
                    continue
                if len(queues.messages) >= queues.max_queue:
                    queues.dropped += 1
                    continue
                group = groups.get(event.group)
                if group is None:
                    group = self._group(event.group)
                queues.messages.append(
                    new_message(
                        Message,
                        (group, names[event.source], bytes(event.payload), event.interface),
                    )
                )
            elif type(event) is NameDefined:
                names[event.name_id] = event.text
                groups.pop(event.name_id, None)
            elif type(event) is ResponseReceived:
                self.responses[event.request_id] = event
                # A granted direct socket came with this answer's first byte (docs/ipc.md).
                if event.error is None and _grants(event.op, event.results) and self.fds:
                    self.direct_fds[event.request_id] = self.fds.popleft()
            elif type(event) is EventReceived:
                queues = sockets.get(event.sock)
                if queues is not None and len(queues.events) < queues.max_queue:
                    membership = self._event(event)
                    if membership is not None:
                        queues.events.append(membership)
            elif type(event) is SendFailed:
                queues = sockets.get(event.sock)
                if queues is not None:
                    queues.failures.append(event.error)
            elif type(event) is WelcomeReceived:
                self.welcome = event

    def _group(self, name_id: int) -> URI:
        uri = self._groups.get(name_id)
        if uri is None:
            try:
                uri = URI.parse(self._names[name_id])
            except InvalidURIError as exc:
                raise ProtocolError(f"the daemon named a group with a bad URI: {exc}") from None
            self._groups[name_id] = uri
        return uri

    def _event(self, event: EventReceived) -> Event | None:
        if event.kind == EventKind.INTERFACE_CHANGED:
            return InterfaceChanged(event.interface, self._names[event.source])
        group = self._group(event.group)
        if event.kind == EventKind.JOIN:
            return MemberJoined(group, event.interface)
        if event.kind == EventKind.LEAVE:
            return MemberLeft(group, event.interface)
        if event.kind == EventKind.NEW_SOURCE:
            return SourceAppeared(group, event.interface, self._names[event.source])
        if event.kind == EventKind.BINDING_CHANGED:
            return BindingChanged(group, event.interface, self._names[event.source])
        return None  # a kind from a newer daemon: skip it

    def send_frame(
        self,
        queues: SocketQueues,
        sock_id: int,
        group: URI,
        payload: bytes | bytearray | memoryview,
    ) -> bytes:
        """The SEND header for ``payload``; raises for oversize or a pending send failure."""
        if queues.failures:
            raise queues.failures.popleft()
        name_id, limit = queues.send_ids[group]
        if len(payload) > limit:
            raise MessageTooLongError(len(payload), limit)
        return self.conn.send_header(sock_id, name_id, len(payload))


def _grants(op: Op, results: list[Any]) -> bool:
    """Whether an answer says a direct socket came with it (docs/ipc.md)."""
    if op is Op.PREPARE_DIRECT:
        return bool(results[2])
    if op is Op.RECEIVE_DIRECT:
        return bool(results[1])
    return False


def group_rows(table: dict[str, Any]) -> list[GroupInfo]:
    """The rows of a GROUP_TABLE answer as :class:`GroupInfo`."""
    known = {f.name for f in dataclasses.fields(GroupInfo)} - {"group"}
    return [
        GroupInfo(URI.parse(row["group"]), **{k: v for k, v in row.items() if k in known})
        for row in table["groups"]
    ]


def decode_result(op: Op, results: list[Any]) -> Any:
    """Turn a response's raw values into the API's types."""
    if op is Op.LIST_INTERFACES:
        return [Interface(*row) for row in results[0]]
    if op is Op.GROUP_SET:
        return [GroupSetEntry(URI.parse(g), GroupRole(r)) for g, r in results[0]]
    if op is Op.DESIGNATED_HOST:
        return bool(results[0])
    if op is Op.INTERFACE_STATUS or op is Op.GROUP_TABLE:
        return json.loads(results[0])
    if len(results) == 1:
        return results[0]
    return results or None
