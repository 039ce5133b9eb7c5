"""The client library, blocking and asyncio, against the embedded middleware and a daemon."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import hamcast
import hamcast.aio
from hamcast.events import MemberJoined, MembershipEvent, SourceAppeared
from tests.conftest import DaemonProcess

GROUP = "ham:opaque:client-tests"


def test_missing_daemon_falls_back_to_embedded(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "none.sock")
    with hamcast.MulticastSocket(socket_path=nowhere) as s:
        assert s.mode == "embedded"
        s.join(GROUP)
        s.send(GROUP, b"self")
        assert s.receive(timeout=5).payload == b"self"
    with pytest.raises(hamcast.DaemonUnavailableError, match="hamcast daemon"):
        hamcast.MulticastSocket(socket_path=nowhere, embedded=False)


def test_receive_variants() -> None:
    with hamcast.MulticastSocket(embedded=True) as s:
        s.join(GROUP)
        with pytest.raises(hamcast.WouldBlockError):
            s.receive_nowait()
        with pytest.raises(hamcast.ReceiveTimeoutError):
            s.receive(timeout=0.05)
        s.send(GROUP, b"one")
        s.send(GROUP, bytearray(b"two"))
        s.send(GROUP, memoryview(b"three"))
        first = s.receive(timeout=5)
        assert (first.group, first.payload, first.interface) == (
            hamcast.URI.parse(GROUP),
            b"one",
            1,
        )
        got = [s.receive(timeout=5).payload for _ in range(2)]
        assert got == [b"two", b"three"]


def test_iteration_stops_when_closed_from_another_thread() -> None:
    s = hamcast.MulticastSocket(embedded=True)
    s.join(GROUP)
    for i in range(3):
        s.send(GROUP, bytes([i]))
    seen: list[bytes] = []

    def consume() -> None:
        for message in s:
            seen.append(message.payload)
            if len(seen) == 3:
                s.close()

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert seen == [b"\x00", b"\x01", b"\x02"]
    with pytest.raises(hamcast.ClosedError):
        s.join(GROUP)


def test_threads_share_a_socket() -> None:
    with hamcast.MulticastSocket(embedded=True) as rx, hamcast.MulticastSocket(embedded=True) as tx:
        rx.join(GROUP)
        received: list[bytes] = []

        def consume() -> None:
            received.extend(rx.receive(timeout=10).payload for _ in range(200))

        worker = threading.Thread(target=consume)
        worker.start()
        # Requests from this thread are answered while the worker blocks in receive.
        for i in range(200):
            tx.send(GROUP, i.to_bytes(2, "big"))
            if i % 50 == 0:
                assert rx.get_ttl() == 1
        worker.join(timeout=10)
        assert received == [i.to_bytes(2, "big") for i in range(200)]


def test_event_callback_runs_on_its_own_thread() -> None:
    events: list[MembershipEvent] = []
    done = threading.Event()

    def on_event(event: MembershipEvent) -> None:
        events.append(event)
        if len(events) == 2:
            done.set()

    with (
        hamcast.MulticastSocket(embedded=True) as watcher,
        hamcast.MulticastSocket(embedded=True) as member,
    ):
        watcher.enable_events(on_event)
        member.join(GROUP)
        member.send(GROUP, b"x")
        assert done.wait(10)
    group = hamcast.URI.parse(GROUP)
    assert events[0] == MemberJoined(group, 1)
    assert isinstance(events[1], SourceAppeared)
    assert events[1].source.endswith(f"/{member.id}")


def test_oversize_and_bad_uri_errors_are_clear() -> None:
    with hamcast.MulticastSocket(embedded=True) as s:
        limit = s.max_msg_size()
        with pytest.raises(hamcast.MessageTooLongError, match="EMSGSIZE") as info:
            s.send(GROUP, b"x" * (limit + 1))
        assert info.value.errno == 90
        with pytest.raises(hamcast.InvalidURIError, match="position"):
            s.send("ham:opaque:bad group", b"x")
        with pytest.raises(hamcast.NotJoinedError):
            s.leave(GROUP)
        s.send(GROUP, b"x" * limit)


def test_socket_options_round_trip() -> None:
    with hamcast.MulticastSocket(embedded=True) as s:
        (local,) = s.interfaces()
        assert s.get_interfaces() == [local.index]
        s.set_ttl(7, [local])
        assert s.get_ttl(local) == 7
        assert s.atomic_msg_size() == s.max_msg_size() == 65507
        s.del_interface(local)
        assert s.get_interfaces() == []
        with pytest.raises(hamcast.UnsupportedGroupError):
            s.send(GROUP, b"x")
        s.add_interface(local.index)
        s.send(GROUP, b"x")


def test_async_client_against_a_daemon(daemon: DaemonProcess) -> None:
    async def main() -> None:
        async with (
            hamcast.aio.MulticastSocket(socket_path=daemon.socket, embedded=False) as rx,
            hamcast.aio.MulticastSocket(socket_path=daemon.socket, embedded=False) as tx,
        ):
            assert rx.mode == "daemon"
            await rx.enable_events()
            await rx.join(GROUP)
            with pytest.raises(hamcast.WouldBlockError):
                rx.receive_nowait()
            for i in range(100):
                await tx.send(GROUP, str(i).encode())
            got = []
            async for message in rx:
                got.append(message.payload)
                if len(got) == 100:
                    break
            assert got == [str(i).encode() for i in range(100)]
            first = await rx.next_event(timeout=5)
            assert first == MemberJoined(hamcast.URI.parse(GROUP), 1)
            with pytest.raises(hamcast.ReceiveTimeoutError):
                await rx.receive(timeout=0.05)
            assert (await rx.stats()).received == 100
            assert [str(g.group) for g in await tx.groups()] == [GROUP]

    asyncio.run(main())


def test_async_client_embedded_and_closed_errors() -> None:
    async def main() -> None:
        s = hamcast.aio.MulticastSocket(embedded=True)
        with pytest.raises(hamcast.ClosedError, match="not open"):
            await s.join(GROUP)
        async with s:
            await s.join(GROUP)
            await s.send(GROUP, b"hi")
            assert (await s.receive(timeout=5)).payload == b"hi"
            with pytest.raises(hamcast.MessageTooLongError):
                await s.send(GROUP, b"x" * 70000)
        with pytest.raises(hamcast.ClosedError):
            await s.send(GROUP, b"x")

    asyncio.run(main())
