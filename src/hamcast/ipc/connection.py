"""Sans-I/O endpoints of one IPC session: the daemon's side and the client's.

Driving contract, the same for both classes: hand every chunk read from the
stream to :meth:`receive_data`, which returns the events it completed (see
:mod:`hamcast.ipc.events`); call the ``send_*`` methods to queue frames; write
out what :meth:`data_to_send` returns. Neither class touches a socket, a
clock or an event loop. Any malformed input raises
:class:`~hamcast.errors.ProtocolError` and leaves the connection CLOSED: the
driver then drops the session.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Sequence
from typing import Any

from hamcast.errors import (
    HamcastError,
    ProtocolError,
    UnsupportedOperationError,
    error_class_for_code,
)
from hamcast.ipc.events import (
    DataReceived,
    DirectReported,
    EventReceived,
    HelloReceived,
    NameDefined,
    RequestReceived,
    ResponseReceived,
    SendFailed,
    SendReceived,
    WelcomeReceived,
)
from hamcast.ipc.ops import OPS, Op
from hamcast.ipc.wire import (
    CLIENT_MAGIC,
    DAEMON_MAGIC,
    DATA_HEADER,
    DEFAULT_MAX_FRAME,
    EVENT_BODY,
    FRAME_HEADER,
    NAME_HEADER,
    PROTOCOL_VERSION,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    SEND_HEADER,
    FrameReader,
    FrameType,
    decode_values,
    encode_values,
)

__all__ = ["ClientConnection", "ConnectionState", "ServerConnection", "error_from_wire"]

logger = logging.getLogger(__name__)

_HELLO = struct.Struct("<4sHHI")  # magic, lowest version, highest version, pid
_WELCOME = struct.Struct("<4sHII")  # magic, version (0 = refused), session id, max frame
_SEND_FAILED = struct.Struct("<IIH")  # sock, group id, error code; then the text
_SEND_IDS = struct.Struct("<II")  # sock, group id at the start of a SEND body
_DATA_IDS = struct.Struct("<IIII")  # sock, group id, source id, interface of a DATA body
#: sock, group id, sent messages and bytes, received messages and bytes
_DIRECT_REPORT = struct.Struct("<IIIQIQ")
# Plain ints for the per-frame comparisons: IntEnum attribute lookups cost more.
_SEND: int = FrameType.SEND.value
_DATA: int = FrameType.DATA.value


class ConnectionState(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"
    AWAITING_WELCOME = "awaiting-welcome"
    OPEN = "open"
    CLOSED = "closed"


def _frame(ftype: FrameType, body: bytes) -> bytes:
    return FRAME_HEADER.pack(len(body) + 1, ftype) + body


def error_from_wire(code: int, message: str) -> HamcastError:
    """The exception a client raises for an error the daemon reported."""
    cls = error_class_for_code(code)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc


class _Endpoint:
    def __init__(self, max_frame: int) -> None:
        self._reader = FrameReader(max_frame)
        self._out: list[bytes | memoryview] = []
        self.state = ConnectionState.CLOSED

    def _set_state(self, new: ConnectionState) -> None:
        logger.debug("ipc %s: %s -> %s", type(self).__name__, self.state.value, new.value)
        self.state = new

    def data_to_send(self) -> list[bytes | memoryview]:
        """The queued frames, in order; the caller must write all of them."""
        out, self._out = self._out, []
        return out

    def _frames(self, data: bytes | bytearray | memoryview) -> list[tuple[int, memoryview]]:
        if self.state is ConnectionState.CLOSED:
            raise ProtocolError("data on a closed IPC connection")
        try:
            return self._reader.feed(data)
        except ProtocolError:
            self._set_state(ConnectionState.CLOSED)
            raise

    def _fail(self, message: str) -> ProtocolError:
        self._set_state(ConnectionState.CLOSED)
        return ProtocolError(message)


class ServerConnection(_Endpoint):
    """The daemon's side of one session.

    The first frame must be HELLO; afterwards REQUEST and SEND frames are
    accepted. Responses go out with :meth:`send_response` /
    :meth:`send_error`, received messages with :meth:`send_data`.
    """

    def __init__(self, session_id: int = 0, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        #: Sent in WELCOME; the daemon sets it to the core's session id after HELLO.
        self.session_id = session_id
        self.max_frame = max_frame
        self.state = ConnectionState.AWAITING_HELLO

    def receive_data(
        self, data: bytes | bytearray | memoryview
    ) -> list[HelloReceived | RequestReceived | SendReceived | DirectReported]:
        events: list[HelloReceived | RequestReceived | SendReceived | DirectReported] = []
        append = events.append
        unpack_ids = _SEND_IDS.unpack_from
        request: RequestReceived | None
        opened = self.state is ConnectionState.OPEN
        for ftype, body in self._frames(data):
            # The data path first, with as little per-frame work as possible.
            if ftype == _SEND and opened:
                if len(body) < 8:
                    raise self._fail("SEND frame shorter than its header")
                sock, group = unpack_ids(body)
                append(SendReceived(sock, group, body[8:]))
            elif ftype == FrameType.REQUEST and opened:
                request = self._request(body)
                if request is not None:
                    append(request)
            elif ftype == FrameType.DIRECT_REPORT and opened:
                if len(body) != _DIRECT_REPORT.size:
                    raise self._fail(f"DIRECT_REPORT frame of {len(body)} bytes, not 32")
                append(DirectReported(*_DIRECT_REPORT.unpack(body)))
            elif ftype == FrameType.HELLO and self.state is ConnectionState.AWAITING_HELLO:
                append(self._hello(body))
                opened = True
            else:
                raise self._fail(f"unexpected frame type 0x{ftype:02x} in state {self.state.value}")
        return events

    def _hello(self, body: memoryview) -> HelloReceived:
        if len(body) < _HELLO.size:
            raise self._fail("HELLO frame too short")
        magic, low, high, pid = _HELLO.unpack_from(body)
        if magic != CLIENT_MAGIC:
            raise self._fail(f"bad HELLO magic {bytes(magic)!r}: not a hamcast client")
        try:
            (name,) = decode_values("S", body[_HELLO.size :])
        except ProtocolError as exc:
            raise self._fail(f"bad HELLO: {exc}") from None
        if not low <= PROTOCOL_VERSION <= high:
            refusal = encode_values("S", [f"daemon speaks IPC version {PROTOCOL_VERSION} only"])
            self._out.append(
                _frame(
                    FrameType.WELCOME,
                    _WELCOME.pack(DAEMON_MAGIC, 0, 0, self.max_frame) + refusal,
                )
            )
            raise self._fail(
                f"client speaks IPC versions {low}..{high}, we need {PROTOCOL_VERSION}"
            )
        self._set_state(ConnectionState.OPEN)
        return HelloReceived(PROTOCOL_VERSION, pid, name)

    def _request(self, body: memoryview) -> RequestReceived | None:
        if len(body) < 5:
            raise self._fail("REQUEST frame shorter than its header")
        request_id, op_code = struct.unpack_from("<IB", body)
        try:
            op = Op(op_code)
        except ValueError:
            # A newer client may probe for operations: answer, keep the session.
            self.send_error(
                request_id,
                UnsupportedOperationError(f"operation {op_code} is not supported by this daemon"),
            )
            return None
        try:
            args = decode_values(OPS[op].args, body[5:])
        except ProtocolError as exc:
            raise self._fail(f"bad arguments for {op.name}: {exc}") from None
        return RequestReceived(request_id, op, args)

    def send_welcome(self, daemon_version: str) -> None:
        body = _WELCOME.pack(DAEMON_MAGIC, PROTOCOL_VERSION, self.session_id, self.max_frame)
        self._out.append(_frame(FrameType.WELCOME, body + encode_values("S", [daemon_version])))

    def send_response(self, request_id: int, op: Op, results: Sequence[Any]) -> None:
        body = encode_values(OPS[op].results, results)
        self._out.append(
            RESPONSE_HEADER.pack(len(body) + 7, FrameType.RESPONSE, request_id, 0) + body
        )

    def send_error(self, request_id: int, error: HamcastError) -> None:
        body = encode_values("S", [_clip(str(error))])
        self._out.append(
            RESPONSE_HEADER.pack(len(body) + 7, FrameType.RESPONSE, request_id, error.code) + body
        )

    def send_name(self, name_id: int, kind: int, text: str) -> None:
        raw = text.encode()
        self._out.append(NAME_HEADER.pack(len(raw) + 6, FrameType.NAME, name_id, kind) + raw)

    def send_data(
        self, sock: int, group: int, source: int, interface: int, payload: bytes | memoryview
    ) -> None:
        self._out.append(
            DATA_HEADER.pack(len(payload) + 17, FrameType.DATA, sock, group, source, interface)
        )
        self._out.append(payload)

    def send_event(self, sock: int, kind: int, group: int, interface: int, source: int) -> None:
        self._out.append(
            _frame(FrameType.EVENT, EVENT_BODY.pack(sock, kind, group, interface, source))
        )

    def send_failed(self, sock: int, group: int, error: HamcastError) -> None:
        body = _SEND_FAILED.pack(sock, group, error.code) + encode_values("S", [_clip(str(error))])
        self._out.append(_frame(FrameType.SEND_FAILED, body))


def _clip(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ClientConnection(_Endpoint):
    """The application's side of one session.

    Start with :meth:`send_hello`; :meth:`send_request` returns the request id
    whose :class:`ResponseReceived` answers it. SEND frames are built by the
    caller with :meth:`send_header` so the payload is never copied.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._next_request = 1
        self._pending: dict[int, Op] = {}
        self.session_id = 0
        self.state = ConnectionState.AWAITING_WELCOME

    def send_hello(self, pid: int, name: str) -> None:
        body = _HELLO.pack(CLIENT_MAGIC, PROTOCOL_VERSION, PROTOCOL_VERSION, pid)
        self._out.append(_frame(FrameType.HELLO, body + encode_values("S", [name])))

    def send_request(self, op: Op, args: Sequence[Any]) -> int:
        request_id = self._next_request
        self._next_request = request_id + 1 if request_id < 0xFFFFFFFF else 1
        body = encode_values(OPS[op].args, args)
        self._out.append(
            REQUEST_HEADER.pack(len(body) + 6, FrameType.REQUEST, request_id, op) + body
        )
        self._pending[request_id] = op
        return request_id

    @staticmethod
    def send_header(sock: int, group: int, size: int) -> bytes:
        """The header of a SEND frame for a payload of ``size`` bytes."""
        return SEND_HEADER.pack(size + 9, FrameType.SEND, sock, group)

    @staticmethod
    def direct_report_frame(
        sock: int, group: int, sent: tuple[int, int], received: tuple[int, int]
    ) -> bytes:
        """A DIRECT_REPORT frame: (messages, bytes) socket ``sock`` sent to and received
        from group id ``group`` on its direct sockets."""
        body = _DIRECT_REPORT.pack(sock, group, *sent, *received)
        return _frame(FrameType.DIRECT_REPORT, body)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Complete events: the classes of :mod:`hamcast.ipc.events` for the client side."""
        events: list[Any] = []
        append = events.append
        unpack_ids = _DATA_IDS.unpack_from
        opened = self.state is ConnectionState.OPEN
        for ftype, body in self._frames(data):
            if ftype == _DATA and opened:
                if len(body) < 16:
                    raise self._fail("DATA frame shorter than its header")
                sock, group, source, iface = unpack_ids(body)
                append(DataReceived(sock, group, source, iface, body[16:]))
            elif ftype == FrameType.RESPONSE and opened:
                events.append(self._response(body))
            elif ftype == FrameType.NAME and opened:
                if len(body) < 5:
                    raise self._fail("NAME frame shorter than its header")
                name_id, kind = struct.unpack_from("<IB", body)
                try:
                    text = str(body[5:], "utf-8")
                except UnicodeDecodeError:
                    raise self._fail("NAME text is not UTF-8") from None
                events.append(NameDefined(name_id, kind, text))
            elif ftype == FrameType.EVENT and opened:
                if len(body) != EVENT_BODY.size:
                    raise self._fail("EVENT frame of the wrong size")
                events.append(EventReceived(*EVENT_BODY.unpack(body)))
            elif ftype == FrameType.SEND_FAILED and opened:
                events.append(self._send_failed(body))
            elif ftype == FrameType.WELCOME and self.state is ConnectionState.AWAITING_WELCOME:
                events.append(self._welcome(body))
                opened = True
            else:
                raise self._fail(f"unexpected frame type 0x{ftype:02x} in state {self.state.value}")
        return events

    def _welcome(self, body: memoryview) -> WelcomeReceived:
        if len(body) < _WELCOME.size:
            raise self._fail("WELCOME frame too short")
        magic, version, session, max_frame = _WELCOME.unpack_from(body)
        if magic != DAEMON_MAGIC:
            raise self._fail(f"bad WELCOME magic {bytes(magic)!r}: not a hamcast daemon")
        try:
            (text,) = decode_values("S", body[_WELCOME.size :])
        except ProtocolError as exc:
            raise self._fail(f"bad WELCOME: {exc}") from None
        if version != PROTOCOL_VERSION:
            raise self._fail(f"daemon refused IPC version {PROTOCOL_VERSION}: {text}")
        self.session_id = session
        self._set_state(ConnectionState.OPEN)
        return WelcomeReceived(version, session, max_frame, text)

    def _response(self, body: memoryview) -> ResponseReceived:
        if len(body) < 6:
            raise self._fail("RESPONSE frame shorter than its header")
        request_id, status = struct.unpack_from("<IH", body)
        op = self._pending.pop(request_id, None)
        if op is None:
            raise self._fail(f"response to unknown request {request_id}")
        try:
            if status == 0:
                return ResponseReceived(
                    request_id, op, decode_values(OPS[op].results, body[6:]), None
                )
            (message,) = decode_values("S", body[6:])
        except ProtocolError as exc:
            raise self._fail(f"bad response to {op.name}: {exc}") from None
        return ResponseReceived(request_id, op, [], error_from_wire(status, message))

    def _send_failed(self, body: memoryview) -> SendFailed:
        if len(body) < _SEND_FAILED.size:
            raise self._fail("SEND_FAILED frame too short")
        sock, group, code = _SEND_FAILED.unpack_from(body)
        try:
            (message,) = decode_values("S", body[_SEND_FAILED.size :])
        except ProtocolError as exc:
            raise self._fail(f"bad SEND_FAILED: {exc}") from None
        return SendFailed(sock, group, error_from_wire(code, message))
