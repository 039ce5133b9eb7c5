"""The asyncio client: :class:`MulticastSocket` with the RFC 7046 API as coroutines.

Use it as ``async with MulticastSocket() as s:``; receive with
``await s.receive()``, ``s.receive_nowait()`` or ``async for msg in s``, and
membership events with ``async for event in s.events()``. Messages are read
from the stream as they come and held (bounded) per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from hamcast.client.connect import open_stream
from hamcast.client.demux import Demux, SocketQueues, decode_result, group_rows
from hamcast.client.sync import GroupLike, InterfaceLike, as_index, as_uri
from hamcast.core.middleware import GroupInfo
from hamcast.errors import (
    ClosedError,
    HamcastError,
    ReceiveTimeoutError,
    UnsupportedOperationError,
    WouldBlockError,
)
from hamcast.events import Event
from hamcast.ipc.ops import Op
from hamcast.model import GroupSetEntry, Interface, Message, SocketStats
from hamcast.uri import URI

__all__ = ["MulticastSocket"]


class _Protocol(asyncio.Protocol):
    """Feeds the demux and wakes whoever waits for what arrived."""

    def __init__(self, name: str) -> None:
        self.demux = Demux()
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._arrivals: asyncio.Event = asyncio.Event()
        self._welcome: asyncio.Future[None] = self._loop.create_future()
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()
        self._name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.writelines(self.demux.hello(self._name))

    def data_received(self, data: bytes) -> None:
        demux = self.demux
        demux.feed(data)
        if demux.error is not None:
            self._fail()
            if self.transport is not None:
                self.transport.close()
            return
        if demux.welcome is not None and not self._welcome.done():
            self._welcome.set_result(None)
        for request_id in [r for r in demux.responses if r in self._waiters]:
            waiter = self._waiters.pop(request_id)
            if not waiter.done():
                waiter.set_result(None)
        self._arrivals.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.demux.lost("the hamcast middleware closed the connection (was the daemon stopped?)")
        self._fail()

    def _fail(self) -> None:
        error = self.demux.error
        assert error is not None
        for waiter in [self._welcome, *self._waiters.values()]:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
        self._arrivals.set()
        self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    async def welcome(self) -> None:
        await self._welcome

    async def request(self, op: Op, args: list[Any]) -> Any:
        if self.demux.error is not None:
            raise self.demux.error
        assert self.transport is not None
        request_id, out = self.demux.request(op, args)
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters[request_id] = waiter
        self.transport.writelines(out)
        await waiter
        response = self.demux.responses.pop(request_id)
        if response.error is not None:
            raise response.error
        return decode_result(op, response.results)

    async def write(self, parts: list[bytes | bytearray | memoryview]) -> None:
        if self.demux.error is not None:
            raise self.demux.error
        assert self.transport is not None
        self.transport.writelines(parts)
        if not self._drained.is_set():
            await self._drained.wait()

    async def arrival(self) -> None:
        """Wait until something new arrives (or the connection fails)."""
        if self.demux.error is not None:
            raise self.demux.error
        self._arrivals.clear()
        await self._arrivals.wait()
        if self.demux.error is not None:
            raise self.demux.error


class MulticastSocket:
    """An RFC 7046 multicast socket for asyncio programs.

    The arguments are those of :class:`hamcast.MulticastSocket`. The socket
    connects in ``__aenter__`` (or :meth:`open`).
    """

    def __init__(
        self,
        interfaces: Iterable[InterfaceLike] = (),
        *,
        socket_path: str | None = None,
        embedded: bool | None = None,
        name: str = "",
    ) -> None:
        self._interfaces = [as_index(i) for i in interfaces]
        self._socket_path = socket_path
        self._embedded = embedded
        self._name = name
        self._protocol: _Protocol | None = None
        self._queues: SocketQueues | None = None
        self._id = 0
        self._closed = False
        self.mode = ""

    async def open(self) -> MulticastSocket:
        """Connect and create the socket (createMSocket)."""
        loop = asyncio.get_running_loop()
        stream, self.mode = await asyncio.to_thread(open_stream, self._socket_path, self._embedded)
        _, protocol = await loop.create_connection(lambda: _Protocol(self._name), sock=stream)
        self._protocol = protocol
        await protocol.welcome()
        self._id = await protocol.request(Op.CREATE_SOCKET, [self._interfaces])
        self._queues = protocol.demux.add_socket(self._id)
        return self

    @property
    def id(self) -> int:
        return self._id

    async def close(self) -> None:
        """Delete the socket (deleteMSocket) and close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._protocol is not None:
            with contextlib.suppress(HamcastError, OSError):
                await self._protocol.request(Op.DELETE_SOCKET, [self._id])
            if self._protocol.transport is not None:
                self._protocol.transport.close()

    async def __aenter__(self) -> MulticastSocket:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _state(self) -> tuple[_Protocol, SocketQueues]:
        if self._closed:
            raise ClosedError("the multicast socket is closed")
        if self._protocol is None or self._queues is None:
            raise ClosedError("the multicast socket is not open yet: use `async with` or open()")
        return self._protocol, self._queues

    async def _call(self, op: Op, *args: Any) -> Any:
        protocol, _ = self._state()
        return await protocol.request(op, list(args))

    # --- group management ----------------------------------------------------------

    async def join(self, group: GroupLike) -> None:
        await self._call(Op.JOIN, self._id, str(as_uri(group)))

    async def leave(self, group: GroupLike) -> None:
        await self._call(Op.LEAVE, self._id, str(as_uri(group)))

    async def src_register(self, group: GroupLike) -> list[int]:
        result: list[int] = await self._call(Op.SRC_REGISTER, self._id, str(as_uri(group)))
        return result

    async def src_deregister(self, group: GroupLike) -> list[int]:
        result: list[int] = await self._call(Op.SRC_DEREGISTER, self._id, str(as_uri(group)))
        return result

    # --- send and receive ---------------------------------------------------------------

    async def send(self, group: GroupLike, message: bytes | bytearray | memoryview) -> None:
        """Send ``message`` to ``group`` (MessageTooLongError when oversize)."""
        protocol, queues = self._state()
        uri = as_uri(group)
        if uri not in queues.send_ids:
            name_id, limit = await self._call(Op.PREPARE_SEND, self._id, str(uri))
            queues.send_ids[uri] = (name_id, limit)
        header = protocol.demux.send_frame(queues, self._id, uri, message)
        await protocol.write([header, message])

    async def send_many(
        self, group: GroupLike, messages: Iterable[bytes | bytearray | memoryview]
    ) -> int:
        """Send several messages to ``group`` in order with one write; see the blocking
        client's :meth:`~hamcast.MulticastSocket.send_many`. Returns how many were sent."""
        protocol, queues = self._state()
        uri = as_uri(group)
        if uri not in queues.send_ids:
            name_id, limit = await self._call(Op.PREPARE_SEND, self._id, str(uri))
            queues.send_ids[uri] = (name_id, limit)
        send_frame = protocol.demux.send_frame
        parts: list[bytes | bytearray | memoryview] = []
        for message in messages:
            parts.append(send_frame(queues, self._id, uri, message))
            parts.append(message)
        await protocol.write(parts)
        return len(parts) // 2

    def receive_nowait(self) -> Message:
        """The next message if one is waiting, else WouldBlockError."""
        _, queues = self._state()
        if not queues.messages:
            raise WouldBlockError("no message waiting")
        return queues.messages.popleft()

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message; ReceiveTimeoutError after ``timeout`` seconds."""
        protocol, queues = self._state()
        if queues.messages:
            return queues.messages.popleft()
        try:
            async with asyncio.timeout(timeout):
                while not queues.messages:
                    await protocol.arrival()
        except TimeoutError:
            raise ReceiveTimeoutError(f"no message within {timeout} s") from None
        return queues.messages.popleft()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except ClosedError:
                return

    # --- socket options ------------------------------------------------------------

    async def get_interfaces(self) -> list[int]:
        result: list[int] = await self._call(Op.GET_INTERFACES, self._id)
        return result

    async def add_interface(self, interface: InterfaceLike) -> None:
        await self._call(Op.ADD_INTERFACE, self._id, as_index(interface))

    async def del_interface(self, interface: InterfaceLike) -> None:
        await self._call(Op.DEL_INTERFACE, self._id, as_index(interface))
        self._state()[1].send_ids.clear()

    async def set_ttl(self, ttl: int, interfaces: Iterable[InterfaceLike] = ()) -> None:
        await self._call(Op.SET_TTL, self._id, ttl, [as_index(i) for i in interfaces])

    async def get_ttl(self, interface: InterfaceLike = 0) -> int:
        result: int = await self._call(Op.GET_TTL, self._id, as_index(interface))
        return result

    async def atomic_msg_size(self) -> int:
        result: int = await self._call(Op.ATOMIC_MSG_SIZE, self._id)
        return result

    async def max_msg_size(self) -> int:
        result: int = await self._call(Op.MAX_MSG_SIZE, self._id)
        return result

    # --- service calls -----------------------------------------------------------------

    async def group_set(self, interface: InterfaceLike) -> list[GroupSetEntry]:
        result: list[GroupSetEntry] = await self._call(Op.GROUP_SET, as_index(interface))
        return result

    async def neighbor_set(self, interface: InterfaceLike) -> list[str]:
        result: list[str] = await self._call(Op.NEIGHBOR_SET, as_index(interface))
        return result

    async def children_set(self, interface: InterfaceLike, group: GroupLike) -> list[str]:
        result: list[str] = await self._call(
            Op.CHILDREN_SET, as_index(interface), str(as_uri(group))
        )
        return result

    async def parent_set(self, interface: InterfaceLike, group: GroupLike) -> list[str]:
        result: list[str] = await self._call(Op.PARENT_SET, as_index(interface), str(as_uri(group)))
        return result

    async def designated_host(self, interface: InterfaceLike, group: GroupLike) -> bool:
        result: bool = await self._call(Op.DESIGNATED_HOST, as_index(interface), str(as_uri(group)))
        return result

    async def interface_status(self, interface: InterfaceLike) -> dict[str, Any]:
        """What the interface's technology knows about its network."""
        result: dict[str, Any] = await self._call(Op.INTERFACE_STATUS, as_index(interface))
        return result

    async def enable_events(self) -> None:
        """Start receiving membership events; read them with :meth:`events`."""
        await self._call(Op.ENABLE_EVENTS, self._id)

    async def disable_events(self) -> None:
        await self._call(Op.DISABLE_EVENTS, self._id)

    async def next_event(self, timeout: float | None = None) -> Event:
        protocol, queues = self._state()
        try:
            async with asyncio.timeout(timeout):
                while not queues.events:
                    await protocol.arrival()
        except TimeoutError:
            raise ReceiveTimeoutError(f"no event within {timeout} s") from None
        return queues.events.popleft()

    async def events(self) -> AsyncIterator[Event]:
        """Membership events as they come, until the socket is closed."""
        while True:
            try:
                yield await self.next_event()
            except ClosedError:
                return

    # --- the host's view -----------------------------------------------------------------

    async def interfaces(self) -> list[Interface]:
        result: list[Interface] = await self._call(Op.LIST_INTERFACES)
        return result

    async def stats(self) -> SocketStats:
        _, queues = self._state()
        sent, received, dropped, failed = await self._call(Op.STATS, self._id)
        local = queues.dropped
        return SocketStats(sent, received - local, dropped + local, failed)

    async def daemon_info(self) -> tuple[str, list[str]]:
        version, technologies = await self._call(Op.DAEMON_INFO)
        return version, technologies

    async def groups(self) -> list[GroupInfo]:
        try:
            table: dict[str, Any] = await self._call(Op.GROUP_TABLE)
        except UnsupportedOperationError:  # a daemon older than GROUP_TABLE
            rows = await self._call(Op.GROUPS)
            return [GroupInfo(URI.parse(g), t, i, n, s) for g, t, i, n, s in rows]
        return group_rows(table)

    async def gateway_status(self) -> dict[str, Any]:
        table: dict[str, Any] = await self._call(Op.GROUP_TABLE)
        status: dict[str, Any] = table["gateway"]
        return status
