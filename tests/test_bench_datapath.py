"""The batched send call that ``hamcast bench`` measures (``send_many``), blocking and asyncio."""

from __future__ import annotations

import asyncio

import pytest

import hamcast
import hamcast.aio
from hamcast.bench.worker import HEADER, proc_cpu_seconds
from tests.conftest import DaemonProcess

GROUP = "ham:opaque:bench-datapath"


def test_send_many_delivers_every_message_in_order(daemon: DaemonProcess) -> None:
    with (
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as rx,
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as tx,
    ):
        rx.join(GROUP)
        # More than one sendmsg's worth (256 messages), of mixed buffer types.
        messages: list[bytes | bytearray | memoryview] = [str(i).encode() for i in range(600)]
        messages[1] = bytearray(b"1")
        messages[2] = memoryview(b"2")
        assert tx.send_many(GROUP, messages) == 600
        assert tx.send_many(GROUP, []) == 0
        got = [rx.receive(timeout=5).payload for _ in range(600)]
        assert got == [str(i).encode() for i in range(600)]
        assert tx.stats().sent == 600


def test_send_many_checks_every_message_first() -> None:
    with hamcast.MulticastSocket(embedded=True) as s:
        s.join(GROUP)
        too_long = b"x" * (s.max_msg_size() + 1)
        with pytest.raises(hamcast.MessageTooLongError):
            s.send_many(GROUP, [b"fits", too_long])
        with pytest.raises(hamcast.ReceiveTimeoutError):
            s.receive(timeout=0.1)  # not even the first one went out
        s.close()
        with pytest.raises(hamcast.ClosedError):
            s.send_many(GROUP, [b"late"])


def test_async_send_many(daemon: DaemonProcess) -> None:
    async def main() -> None:
        async with (
            hamcast.aio.MulticastSocket(socket_path=daemon.socket, embedded=False) as rx,
            hamcast.aio.MulticastSocket(socket_path=daemon.socket, embedded=False) as tx,
        ):
            await rx.join(GROUP)
            assert await tx.send_many(GROUP, [b"a", b"b", b"c"]) == 3
            got = [(await rx.receive(timeout=5)).payload for _ in range(3)]
            assert got == [b"a", b"b", b"c"]
            with pytest.raises(hamcast.MessageTooLongError):
                await tx.send_many(GROUP, [b"x" * 70000])

    asyncio.run(main())


def test_worker_helpers() -> None:
    assert HEADER.size == 16
    assert proc_cpu_seconds(1) >= 0.0
    assert proc_cpu_seconds(2**31 - 1) == 0.0  # no such process
