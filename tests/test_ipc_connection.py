"""Tests for hamcast.ipc.connection: both endpoints wired in memory (docs/ipc.md).

Frames the endpoints must reject are built here with ``struct`` straight from
the layouts in docs/ipc.md, not with the code under test.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hamcast.errors as errors_module
from hamcast.errors import (
    ClosedError,
    HamcastError,
    InvalidURIError,
    MessageTooLongError,
    NotJoinedError,
    ProtocolError,
    RemoteError,
    ResourceError,
    UnsupportedOperationError,
    UsageError,
)
from hamcast.events import EventKind
from hamcast.ipc.connection import (
    ClientConnection,
    ConnectionState,
    ServerConnection,
    error_from_wire,
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
from hamcast.ipc.wire import DEFAULT_MAX_FRAME, FrameReader, FrameType, NameKind, decode_values

FUZZ = settings(max_examples=120, deadline=None)

HELLO, WELCOME, REQUEST, RESPONSE = 0x01, 0x02, 0x10, 0x11
NAME, SEND, DATA, SEND_FAILED, EVENT = 0x20, 0x30, 0x31, 0x32, 0x40
DIRECT_REPORT = 0x33


def frame(ftype: int, body: bytes) -> bytes:
    return struct.pack("<IB", len(body) + 1, ftype) + body


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<H", len(raw)) + raw


def hello_body(low: int = 1, high: int = 1, pid: int = 4242, name: str = "test") -> bytes:
    return b"HAMC" + struct.pack("<HHI", low, high, pid) + s(name)


def welcome_body(version: int = 1, session: int = 7, text: str = "9.9") -> bytes:
    return b"HAMD" + struct.pack("<HII", version, session, DEFAULT_MAX_FRAME) + s(text)


def out(endpoint: ServerConnection | ClientConnection) -> bytes:
    return b"".join(bytes(p) for p in endpoint.data_to_send())


def pump(src: ServerConnection | ClientConnection, dst: Any) -> list[Any]:
    events: list[Any] = dst.receive_data(out(src))
    return events


def opened(session_id: int = 7) -> tuple[ServerConnection, ClientConnection]:
    server, client = ServerConnection(session_id), ClientConnection()
    client.send_hello(4242, "test")
    assert pump(client, server) == [HelloReceived(1, 4242, "test")]
    server.send_welcome("9.9")
    assert pump(server, client) == [WelcomeReceived(1, session_id, DEFAULT_MAX_FRAME, "9.9")]
    return server, client


def rejects(endpoint: Any, data: bytes, match: str | None = None) -> None:
    with pytest.raises(ProtocolError, match=match):
        endpoint.receive_data(data)
    assert endpoint.state is ConnectionState.CLOSED
    with pytest.raises(ProtocolError, match="closed"):
        endpoint.receive_data(b"")


# --- handshake ------------------------------------------------------------------


def test_handshake_opens_both_sides() -> None:
    server, client = ServerConnection(7), ClientConnection()
    assert server.state is ConnectionState.AWAITING_HELLO
    assert client.state is ConnectionState.AWAITING_WELCOME
    server, client = opened(7)
    assert server.state is client.state is ConnectionState.OPEN
    assert client.session_id == 7


def test_hello_and_welcome_bytes() -> None:
    client = ClientConnection()
    client.send_hello(4242, "demo")
    assert out(client).hex() == "130000000148414d430100010092100000040064656d6f"
    server = ServerConnection(1)
    server.send_welcome("0.1.0")
    assert out(server).hex() == "160000000248414d44010001000000000410000500302e312e30"


def test_hello_accepts_any_range_containing_version_1() -> None:
    server = ServerConnection(1)
    assert server.receive_data(frame(HELLO, hello_body(0, 9))) == [HelloReceived(1, 4242, "test")]
    assert server.state is ConnectionState.OPEN


@pytest.mark.parametrize(("low", "high"), [(2, 3), (0, 0), (3, 2)])
def test_server_refuses_versions_without_1(low: int, high: int) -> None:
    server = ServerConnection(1)
    rejects(server, frame(HELLO, hello_body(low, high)), match="versions")
    refusal = out(server)
    length, ftype, magic, version, session = struct.unpack_from("<IB4sHI", refusal)
    assert (ftype, magic, version, session) == (WELCOME, b"HAMD", 0, 0)
    assert length >= 15


def test_refusal_welcome_is_one_frame_the_client_understands() -> None:
    server = ServerConnection(1)
    with pytest.raises(ProtocolError):
        server.receive_data(frame(HELLO, hello_body(2, 3)))
    refusal = out(server)
    [(ftype, body)] = FrameReader().feed(refusal)
    assert ftype == WELCOME
    assert decode_values("S", body[14:]) == ["daemon speaks IPC version 1 only"]
    rejects(ClientConnection(), refusal, match="refused")


def test_client_reports_a_refusal_with_its_text() -> None:
    client = ClientConnection()
    rejects(client, frame(WELCOME, welcome_body(0, 0, "too old")), match=r"refused.*too old")


@pytest.mark.parametrize(
    "body",
    [
        b"HAMX" + hello_body()[4:],
        hello_body()[:11],
        hello_body() + b"\x00",
        hello_body()[:-1],
        b"HAMC" + struct.pack("<HHI", 1, 1, 1) + b"\x01\x00\xff",
    ],
    ids=["magic", "short", "trailing", "truncated-name", "name-not-utf8"],
)
def test_server_rejects_a_bad_hello(body: bytes) -> None:
    rejects(ServerConnection(1), frame(HELLO, body))


@pytest.mark.parametrize(
    "body",
    [b"HAMX" + welcome_body()[4:], welcome_body()[:13], welcome_body() + b"\x00"],
    ids=["magic", "short", "trailing"],
)
def test_client_rejects_a_bad_welcome(body: bytes) -> None:
    rejects(ClientConnection(), frame(WELCOME, body))


def test_requests_may_follow_hello_in_the_same_read() -> None:
    client = ClientConnection()
    client.send_hello(1, "x")
    rid = client.send_request(Op.DAEMON_INFO, [])
    events = ServerConnection(1).receive_data(out(client))
    assert events == [HelloReceived(1, 1, "x"), RequestReceived(rid, Op.DAEMON_INFO, [])]


def test_frames_may_follow_welcome_in_the_same_read() -> None:
    server, client = ServerConnection(3), ClientConnection()
    client.send_hello(1, "x")
    pump(client, server)
    server.send_welcome("v")
    server.send_name(1, NameKind.GROUP, "ham:opaque:a")
    server.send_data(1, 1, 1, 1, b"m")
    events = pump(server, client)
    assert [type(e) for e in events] == [WelcomeReceived, NameDefined, DataReceived]


# --- requests and responses --------------------------------------------------------

OP_CASES: dict[Op, tuple[list[Any], list[Any]]] = {
    Op.CREATE_SOCKET: ([[1, 2]], [5]),
    Op.DELETE_SOCKET: ([5], []),
    Op.JOIN: ([5, "ham:opaque:news"], []),
    Op.LEAVE: ([5, "ham:opaque:news"], []),
    Op.SRC_REGISTER: ([5, "ham:ip:239.1.2.3:5000"], [[2]]),
    Op.SRC_DEREGISTER: ([5, "ham:ip:239.1.2.3:5000"], [[]]),
    Op.GET_INTERFACES: ([5], [[1, 2]]),
    Op.ADD_INTERFACE: ([5, 3], []),
    Op.DEL_INTERFACE: ([5, 3], []),
    Op.SET_TTL: ([5, 16, [1]], []),
    Op.GET_TTL: ([5, 0], [16]),
    Op.ATOMIC_MSG_SIZE: ([5], [1472]),
    Op.MAX_MSG_SIZE: ([5], [65507]),
    Op.GROUP_SET: ([1], [[("ham:opaque:news", 3), ("ham:opaque:x", 1)]]),
    Op.NEIGHBOR_SET: ([1], [["10.0.0.1"]]),
    Op.CHILDREN_SET: ([1, "ham:opaque:news"], [["a", "b"]]),
    Op.PARENT_SET: ([1, "ham:opaque:news"], [["p"]]),
    Op.DESIGNATED_HOST: ([1, "ham:opaque:news"], [1]),
    Op.ENABLE_EVENTS: ([5], []),
    Op.DISABLE_EVENTS: ([5], []),
    Op.LIST_INTERFACES: ([], [[(1, "local", "localhost", "local")]]),
    Op.PREPARE_SEND: ([5, "ham:opaque:news"], [1, 65507]),
    Op.STATS: ([5], [1, 2, 3, 2**64 - 1]),
    Op.DAEMON_INFO: ([], ["0.1.0", ["local", "ip"]]),
    Op.GROUPS: ([], [[("ham:opaque:news", "local", 1, 2, 0)]]),
    Op.INTERFACE_STATUS: ([1], ['{"verdict": "routed"}']),
    Op.GROUP_TABLE: ([], ['{"groups": [], "gateway": {"candidate": false}}']),
    Op.PREPARE_DIRECT: ([5, "ham:ip:239.1.2.3:5000"], [1, 65507, 1, "239.1.2.3", 5000, 0]),
    Op.RECEIVE_DIRECT: ([5, "ham:ip:239.1.2.3:5000"], [1, 1, 2]),
}


def test_every_op_has_a_case_and_a_spec() -> None:
    assert set(OP_CASES) == set(Op) == set(OPS)


@pytest.mark.parametrize("op", list(OP_CASES), ids=lambda op: op.name)
def test_request_and_response_round_trip(op: Op) -> None:
    args, results = OP_CASES[op]
    server, client = opened()
    rid = client.send_request(op, args)
    assert pump(client, server) == [RequestReceived(rid, op, args)]
    server.send_response(rid, op, results)
    assert pump(server, client) == [ResponseReceived(rid, op, results, None)]


def test_request_and_response_bytes() -> None:
    server, client = opened()
    rid = client.send_request(Op.JOIN, [1, "ham:opaque:news"])
    assert rid == 1
    body = struct.pack("<IBI", 1, Op.JOIN, 1) + s("ham:opaque:news")
    assert out(client) == frame(REQUEST, body)
    server.send_response(1, Op.PREPARE_SEND, [1, 65507])
    assert out(server) == frame(RESPONSE, struct.pack("<IHII", 1, 0, 1, 65507))


def test_request_ids_count_up_and_skip_zero_on_wrap() -> None:
    _, client = opened()
    assert [client.send_request(Op.DAEMON_INFO, []) for _ in range(3)] == [1, 2, 3]
    client._next_request = 0xFFFFFFFF
    assert client.send_request(Op.DAEMON_INFO, []) == 0xFFFFFFFF
    assert client.send_request(Op.DAEMON_INFO, []) == 1


def test_responses_are_matched_by_id_in_any_order() -> None:
    server, client = opened()
    first = client.send_request(Op.GET_TTL, [1, 0])
    second = client.send_request(Op.DAEMON_INFO, [])
    pump(client, server)
    server.send_response(second, Op.DAEMON_INFO, ["v", []])
    server.send_response(first, Op.GET_TTL, [4])
    events = pump(server, client)
    assert events == [
        ResponseReceived(second, Op.DAEMON_INFO, ["v", []], None),
        ResponseReceived(first, Op.GET_TTL, [4], None),
    ]


def test_a_second_response_to_one_request_is_rejected() -> None:
    server, client = opened()
    rid = client.send_request(Op.ENABLE_EVENTS, [1])
    server.send_response(rid, Op.ENABLE_EVENTS, [])
    pump(server, client)
    server.send_response(rid, Op.ENABLE_EVENTS, [])
    rejects(client, out(server), match="unknown request")


def test_results_not_matching_the_signature_are_rejected() -> None:
    _, client = opened()
    rid = client.send_request(Op.GET_TTL, [1, 0])
    rejects(client, frame(RESPONSE, struct.pack("<IHI", rid, 0, 16)), match="GET_TTL")


def test_unknown_op_and_bad_arguments_are_rejected() -> None:
    server, _ = opened()
    for op_code in (0, 200):
        assert server.receive_data(frame(REQUEST, struct.pack("<IB", 7, op_code))) == []
    answer = ServerConnection().data_to_send()
    assert answer == []
    raw = b"".join(bytes(part) for part in server.data_to_send())
    assert raw.count(struct.pack("<IH", 7, UnsupportedOperationError.code)) == 2
    assert server.state is ConnectionState.OPEN, "an unknown op keeps the session"
    server, _ = opened()
    rejects(server, frame(REQUEST, struct.pack("<IBI", 1, Op.JOIN, 1)), match="JOIN")
    server, _ = opened()
    rejects(server, frame(REQUEST, b"\x01\x00\x00\x00"), match="shorter")


# --- errors --------------------------------------------------------------------------


def _instance(cls: type[HamcastError]) -> HamcastError:
    if cls is InvalidURIError:
        return InvalidURIError("missing namespace", "ham:", 4)
    if cls is MessageTooLongError:
        return MessageTooLongError(70000, 65507)
    return cls(f"something about {cls.__name__}")


ERROR_CLASSES = [
    obj
    for name in errors_module.__all__
    if isinstance(obj := getattr(errors_module, name), type) and issubclass(obj, HamcastError)
]


def test_error_codes_are_unique_and_stable() -> None:
    codes = {cls.__name__: cls.code for cls in ERROR_CLASSES}
    assert codes == {
        "HamcastError": 1,
        "UsageError": 100,
        "InvalidURIError": 101,
        "MessageTooLongError": 102,
        "UnknownInterfaceError": 103,
        "UnknownSocketError": 104,
        "NotJoinedError": 105,
        "UnsupportedGroupError": 106,
        "UnsupportedOperationError": 107,
        "RemoteError": 200,
        "ProtocolError": 201,
        "ResourceError": 300,
        "DaemonUnavailableError": 301,
        "ClosedError": 302,
        "ReceiveTimeoutError": 303,
        "WouldBlockError": 304,
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_response_is_reraised_as_the_same_class(cls: type[HamcastError]) -> None:
    server, client = opened()
    rid = client.send_request(Op.LEAVE, [1, "ham:opaque:x"])
    pump(client, server)
    error = _instance(cls)
    server.send_error(rid, error)
    [response] = pump(server, client)
    assert response.request_id == rid
    assert response.results == []
    assert type(response.error) is cls
    assert str(response.error) == str(error)
    assert response.error.code == cls.code
    assert response.error.errno == error.errno


def test_error_response_bytes() -> None:
    server, client = opened()
    rid = client.send_request(Op.LEAVE, [1, "ham:opaque:x"])
    pump(client, server)
    server.send_error(rid, NotJoinedError("nope"))
    assert out(server) == frame(RESPONSE, struct.pack("<IH", rid, 105) + s("nope"))


def test_long_error_texts_are_clipped() -> None:
    server, client = opened()
    rid = client.send_request(Op.DAEMON_INFO, [])
    server.send_error(rid, UsageError("x" * 70000))
    [response] = pump(server, client)
    assert type(response.error) is UsageError
    assert len(str(response.error)) == 4000


@pytest.mark.parametrize(
    ("code", "cls"),
    [(150, UsageError), (299, RemoteError), (399, ResourceError), (0, HamcastError)],
)
def test_unknown_codes_map_to_their_family(code: int, cls: type[HamcastError]) -> None:
    error = error_from_wire(code, "text")
    assert type(error) is cls
    assert str(error) == "text"


def test_unknown_family_maps_to_the_root() -> None:
    assert type(error_from_wire(999, "t")) is HamcastError
    assert type(error_from_wire(0xFFFF, "t")) is HamcastError


# --- NAME, SEND, DATA, EVENT, SEND_FAILED ----------------------------------------------


def test_name_frames_define_ids() -> None:
    server, client = opened()
    server.send_name(7, NameKind.GROUP, "ham:opaque:ö")
    server.send_name(8, NameKind.SOURCE, "")
    raw = out(server)
    first = frame(NAME, struct.pack("<IB", 7, 1) + "ham:opaque:ö".encode())
    assert raw.startswith(first)
    assert client.receive_data(raw) == [
        NameDefined(7, NameKind.GROUP, "ham:opaque:ö"),
        NameDefined(8, NameKind.SOURCE, ""),
    ]


def test_name_text_must_be_utf8() -> None:
    _, client = opened()
    rejects(client, frame(NAME, struct.pack("<IB", 1, 1) + b"\xff"), match="UTF-8")
    _, client = opened()
    rejects(client, frame(NAME, b"\x01\x00\x00\x00"), match="shorter")


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(256)) * 4])
def test_send_frames_reach_the_server(payload: bytes) -> None:
    server, client = opened()
    header = client.send_header(3, 9, len(payload))
    assert header == struct.pack("<IBII", len(payload) + 9, SEND, 3, 9)
    [event] = server.receive_data(header + payload)
    assert type(event) is SendReceived
    assert (event.sock, event.group, bytes(event.payload)) == (3, 9, payload)


def test_short_send_is_rejected() -> None:
    server, _ = opened()
    rejects(server, frame(SEND, bytes(7)), match="SEND")


@pytest.mark.parametrize("payload", [b"", b"hello"])
def test_data_frames_reach_the_client(payload: bytes) -> None:
    server, client = opened()
    server.send_data(1, 2, 3, 4, payload)
    raw = out(server)
    assert raw == frame(DATA, struct.pack("<IIII", 1, 2, 3, 4) + payload)
    [event] = client.receive_data(raw)
    assert type(event) is DataReceived
    assert event[:4] == (1, 2, 3, 4)
    assert bytes(event.payload) == payload


def test_short_data_is_rejected() -> None:
    _, client = opened()
    rejects(client, frame(DATA, bytes(15)), match="DATA")


def test_event_frames_reach_the_client() -> None:
    server, client = opened()
    server.send_event(1, EventKind.NEW_SOURCE, 2, 3, 4)
    raw = out(server)
    # Note the order on the wire: sock, kind, group, interface, source.
    assert raw == frame(EVENT, struct.pack("<IBIII", 1, 3, 2, 3, 4))
    assert client.receive_data(raw) == [EventReceived(1, EventKind.NEW_SOURCE, 2, 3, 4)]


@pytest.mark.parametrize("size", [16, 18, 0])
def test_event_of_the_wrong_size_is_rejected(size: int) -> None:
    _, client = opened()
    rejects(client, frame(EVENT, bytes(size)), match="EVENT")


def test_send_failed_reaches_the_client() -> None:
    server, client = opened()
    server.send_failed(2, 9, MessageTooLongError(70000, 65507))
    raw = out(server)
    text = "message of 70000 bytes is longer than the maximum of 65507 bytes (EMSGSIZE)"
    assert raw == frame(SEND_FAILED, struct.pack("<IIH", 2, 9, 102) + s(text))
    [event] = client.receive_data(raw)
    assert type(event) is SendFailed
    assert (event.sock, event.group) == (2, 9)
    assert type(event.error) is MessageTooLongError
    assert str(event.error) == text


@pytest.mark.parametrize(
    "body",
    [bytes(9), struct.pack("<IIH", 1, 1, 100) + s("x") + b"!", struct.pack("<IIH", 1, 1, 100)],
    ids=["short", "trailing", "no-text"],
)
def test_bad_send_failed_is_rejected(body: bytes) -> None:
    _, client = opened()
    rejects(client, frame(SEND_FAILED, body), match="SEND_FAILED")


def test_many_frames_in_one_read_keep_their_order() -> None:
    server, client = opened()
    rid = client.send_request(Op.PREPARE_SEND, [1, "ham:opaque:a"])
    for i in range(50):
        client.send_request(Op.STATS, [i])
    batch = out(client) + b"".join(client.send_header(1, 1, 1) + bytes([i]) for i in range(50))
    events = server.receive_data(batch)
    assert len(events) == 101
    assert events[0] == RequestReceived(rid, Op.PREPARE_SEND, [1, "ham:opaque:a"])
    requests = [e for e in events if isinstance(e, RequestReceived)]
    sends = [e for e in events if isinstance(e, SendReceived)]
    assert events == [*requests, *sends]
    assert [e.args[0] for e in requests[1:]] == list(range(50))
    assert [bytes(e.payload)[0] for e in sends] == list(range(50))


def test_example_session_bytes_from_the_docs() -> None:
    # The daemon's answer to JOIN in the example of docs/ipc.md §13.
    server, client = opened()
    for _ in range(3):
        client.send_request(Op.ENABLE_EVENTS, [1])
    server.send_name(1, NameKind.GROUP, "ham:opaque:news")
    server.send_event(1, EventKind.JOIN, 1, 1, 0)
    server.send_response(3, Op.JOIN, [])
    assert out(server).hex() == (
        "1500000020010000000168616d3a6f70617175653a6e657773"
        "12000000400100000001010000000100000000000000"
        "0700000011030000000000"
    )


# --- frames in the wrong state --------------------------------------------------------

VALID_BODIES = {
    HELLO: hello_body(),
    WELCOME: welcome_body(),
    REQUEST: struct.pack("<IB", 1, Op.DAEMON_INFO),
    RESPONSE: struct.pack("<IH", 1, 0) + s("v") + b"\x00\x00",
    NAME: struct.pack("<IB", 1, 1) + b"ham:opaque:a",
    SEND: struct.pack("<II", 1, 1) + b"m",
    DATA: struct.pack("<IIII", 1, 1, 1, 1) + b"m",
    SEND_FAILED: struct.pack("<IIH", 1, 1, 100) + s("x"),
    EVENT: struct.pack("<IBIII", 1, 1, 1, 1, 0),
    DIRECT_REPORT: struct.pack("<IIIQIQ", 1, 1, 3, 300, 2, 20),
}


#: Every defined type, plus undefined ones at the edges and between the groups.
ALL_TYPES = [*VALID_BODIES, 0x00, 0x03, 0x0F, 0x12, 0x21, 0x34, 0x41, 0x7F, 0x80, 0xFF]


def _body(ftype: int) -> bytes:
    return VALID_BODIES.get(ftype, b"\x00" * 8)


@pytest.mark.parametrize("ftype", [t for t in ALL_TYPES if t != HELLO])
def test_server_awaiting_hello_accepts_only_hello(ftype: int) -> None:
    rejects(ServerConnection(1), frame(ftype, _body(ftype)), match="unexpected frame type")


@pytest.mark.parametrize("ftype", [t for t in ALL_TYPES if t not in (REQUEST, SEND, DIRECT_REPORT)])
def test_open_server_accepts_only_request_send_and_reports(ftype: int) -> None:
    server, _ = opened()
    rejects(server, frame(ftype, _body(ftype)), match="unexpected frame type")


def test_server_decodes_a_direct_send_report_and_rejects_a_short_one() -> None:
    server, _ = opened()
    assert server.receive_data(frame(DIRECT_REPORT, VALID_BODIES[DIRECT_REPORT])) == [
        DirectReported(1, 1, 3, 300, 2, 20)
    ]
    assert ClientConnection.direct_report_frame(1, 1, (3, 300), (2, 20)) == frame(
        DIRECT_REPORT, VALID_BODIES[DIRECT_REPORT]
    )
    rejects(server, frame(DIRECT_REPORT, b"\x00" * 8), match="of 8 bytes, not 32")


@pytest.mark.parametrize("ftype", [t for t in ALL_TYPES if t != WELCOME])
def test_client_awaiting_welcome_accepts_only_welcome(ftype: int) -> None:
    client = ClientConnection()
    client.send_request(Op.DAEMON_INFO, [])
    rejects(client, frame(ftype, _body(ftype)), match="unexpected frame type")


@pytest.mark.parametrize(
    "ftype", [t for t in ALL_TYPES if t not in (RESPONSE, NAME, DATA, SEND_FAILED, EVENT)]
)
def test_open_client_accepts_only_daemon_frames(ftype: int) -> None:
    _, client = opened()
    client.send_request(Op.DAEMON_INFO, [])
    rejects(client, frame(ftype, _body(ftype)), match="unexpected frame type")


def test_valid_bodies_are_valid() -> None:
    # Guards the two tests above: their rejections come from the state, not the body.
    server, client = opened()
    assert len(server.receive_data(frame(REQUEST, VALID_BODIES[REQUEST]))) == 1
    assert len(server.receive_data(frame(SEND, VALID_BODIES[SEND]))) == 1
    client.send_request(Op.DAEMON_INFO, [])
    for ftype in (RESPONSE, NAME, DATA, SEND_FAILED, EVENT):
        assert len(client.receive_data(frame(ftype, VALID_BODIES[ftype]))) == 1
    assert len(ServerConnection(1).receive_data(frame(HELLO, VALID_BODIES[HELLO]))) == 1
    assert len(ClientConnection().receive_data(frame(WELCOME, VALID_BODIES[WELCOME]))) == 1


def test_oversize_frame_closes_the_connection() -> None:
    server = ServerConnection(1, max_frame=100)
    rejects(server, struct.pack("<IB", 101, HELLO), match=r"outside 1\.\.100")


# --- fuzzing ------------------------------------------------------------------------------

_INT = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 2**64 - 1}


def _field_st(field: str | list[Any]) -> st.SearchStrategy[Any]:
    if isinstance(field, list):
        inner = [_field_st(f) for f in field]
        return st.lists(inner[0] if len(inner) == 1 else st.tuples(*inner), max_size=3)
    if field == "S":
        return st.text(max_size=12)
    return st.integers(0, _INT[field])


def _fields(sig: str) -> list[Any]:
    stack: list[list[Any]] = [[]]
    for code in sig:
        if code == "[":
            stack.append([])
        elif code == "]":
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(code)
    return stack[0]


def values_for(sig: str) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*(_field_st(f) for f in _fields(sig))).map(list)


ops_st = st.sampled_from(list(Op))
simple_errors = st.sampled_from([UsageError, NotJoinedError, ProtocolError, ClosedError])


@st.composite
def stream_to_server(draw: st.DrawFn) -> bytes:
    client = ClientConnection()
    client.send_hello(draw(st.integers(0, 2**32 - 1)), draw(st.text(max_size=8)))
    parts = [out(client)]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            op = draw(ops_st)
            client.send_request(op, draw(values_for(OPS[op].args)))
            parts.append(out(client))
        else:
            payload = draw(st.binary(max_size=20))
            parts.append(client.send_header(1, draw(st.integers(0, 9)), len(payload)) + payload)
    return b"".join(parts)


@st.composite
def stream_to_client(draw: st.DrawFn) -> tuple[ClientConnection, bytes]:
    client = ClientConnection()
    client.send_hello(1, "fuzz")
    pending = []
    for _ in range(draw(st.integers(0, 4))):
        op = draw(ops_st)
        pending.append((client.send_request(op, draw(values_for(OPS[op].args))), op))
    client.data_to_send()
    server = ServerConnection(draw(st.integers(0, 2**32 - 1)))
    server.send_welcome(draw(st.text(max_size=8)))
    for rid, op in draw(st.permutations(pending)):
        if draw(st.booleans()):
            server.send_response(rid, op, draw(values_for(OPS[op].results)))
        else:
            server.send_error(rid, draw(simple_errors)(draw(st.text(max_size=10))))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["name", "data", "event", "failed"]))
        u32 = st.integers(0, 2**32 - 1)
        a, b, c, d = draw(st.tuples(u32, u32, u32, u32))
        if kind == "name":
            server.send_name(a, draw(st.sampled_from(NameKind)), draw(st.text(max_size=10)))
        elif kind == "data":
            server.send_data(a, b, c, d, draw(st.binary(max_size=20)))
        elif kind == "event":
            server.send_event(a, draw(st.sampled_from(EventKind)), b, c, d)
        else:
            server.send_failed(a, b, draw(simple_errors)("failed"))
    return client, out(server)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if how == "flip" and pos < len(data):
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
        elif how == "cut":
            data = data[:pos]
        elif how == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
        else:
            data = data[:pos] + data[pos + draw(st.integers(1, 8)) :]
    return data


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def feed_in_chunks(endpoint: Any, data: bytes, cuts: list[int]) -> None:
    """Feed ``data``; only ProtocolError may escape, and it must leave the endpoint CLOSED."""
    try:
        for piece in split(data, cuts):
            endpoint.receive_data(piece)
    except ProtocolError:
        assert endpoint.state is ConnectionState.CLOSED
        with pytest.raises(ProtocolError):
            endpoint.receive_data(b"\x01\x00\x00\x00\x01")
    else:
        assert endpoint.state is not ConnectionState.CLOSED


cuts_st = st.lists(st.integers(0, 5000), max_size=8)


@FUZZ
@given(data=stream_to_server(), cuts=cuts_st)
def test_valid_stream_to_server_decodes_fully(data: bytes, cuts: list[int]) -> None:
    server = ServerConnection(1)
    events = []
    for piece in split(data, cuts):
        events.extend(server.receive_data(piece))
    assert server.state is ConnectionState.OPEN
    assert type(events[0]) is HelloReceived
    assert len(events) == len(FrameReader().feed(data))


@FUZZ
@given(case=stream_to_client(), cuts=cuts_st)
def test_valid_stream_to_client_decodes_fully(
    case: tuple[ClientConnection, bytes], cuts: list[int]
) -> None:
    client, data = case
    events = []
    for piece in split(data, cuts):
        events.extend(client.receive_data(piece))
    assert client.state is ConnectionState.OPEN
    assert type(events[0]) is WelcomeReceived
    assert len(events) == len(FrameReader().feed(data))


@FUZZ
@given(data=st.data(), cuts=cuts_st)
def test_mutated_stream_to_server_only_raises_protocol_error(data: Any, cuts: list[int]) -> None:
    stream = data.draw(mutated(data.draw(stream_to_server())))
    feed_in_chunks(ServerConnection(1), stream, cuts)


@FUZZ
@given(data=st.data(), cuts=cuts_st)
def test_mutated_stream_to_client_only_raises_protocol_error(data: Any, cuts: list[int]) -> None:
    client, stream = data.draw(stream_to_client())
    feed_in_chunks(client, data.draw(mutated(stream)), cuts)


@FUZZ
@given(
    side=st.sampled_from(["server", "client"]),
    handshake=st.booleans(),
    garbage=st.binary(max_size=200),
    cuts=cuts_st,
)
def test_random_bytes_only_raise_protocol_error(
    side: str, handshake: bool, garbage: bytes, cuts: list[int]
) -> None:
    if handshake:
        server, client = opened()
    else:
        server, client = ServerConnection(1), ClientConnection()
    feed_in_chunks(server if side == "server" else client, garbage, cuts)


@FUZZ
@given(
    side=st.sampled_from(["server", "client"]),
    frames=st.lists(
        st.tuples(
            st.sampled_from(
                [HELLO, WELCOME, REQUEST, RESPONSE, NAME, SEND, DATA, SEND_FAILED, EVENT]
            ),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    cuts=cuts_st,
)
def test_well_framed_random_bodies_only_raise_protocol_error(
    side: str, frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    server, client = opened()
    client.send_request(Op.DAEMON_INFO, [])
    client.send_request(Op.GROUPS, [])
    stream = b"".join(frame(t, b) for t, b in frames)
    feed_in_chunks(server if side == "server" else client, stream, cuts)


def test_frame_type_values() -> None:
    assert {t.name: t.value for t in FrameType} == {
        "HELLO": HELLO,
        "WELCOME": WELCOME,
        "REQUEST": REQUEST,
        "RESPONSE": RESPONSE,
        "NAME": NAME,
        "SEND": SEND,
        "DATA": DATA,
        "SEND_FAILED": SEND_FAILED,
        "DIRECT_REPORT": DIRECT_REPORT,
        "EVENT": EVENT,
    }
