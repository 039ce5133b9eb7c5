"""A real daemon process and real client processes on one host."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hamcast
from hamcast.errors import DaemonUnavailableError
from tests.conftest import DaemonProcess, wait_until

pytestmark = pytest.mark.integration

GROUP = "ham:opaque:integration"


def run_python(code: str, sock: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "HAMCAST_SOCKET": sock},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_two_client_processes_exchange_messages(daemon: DaemonProcess) -> None:
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import json, hamcast
                with hamcast.MulticastSocket(embedded=False) as s:
                    s.join({GROUP!r})
                    print("ready", flush=True)
                    got = [s.receive(timeout=10) for _ in range(50)]
                    print(json.dumps([[str(m.group), m.source, m.payload.decode()] for m in got]))
                """
            ),
        ],
        env={**os.environ, "HAMCAST_SOCKET": daemon.socket},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    sender = run_python(
        f"""
        import hamcast
        with hamcast.MulticastSocket(embedded=False) as s:
            for i in range(50):
                s.send({GROUP!r}, f"msg {{i}}".encode())
            print(s.id)
        """,
        daemon.socket,
    )
    assert sender.returncode == 0, sender.stderr
    out, _ = receiver.communicate(timeout=20)
    assert receiver.returncode == 0
    got = json.loads(out)
    assert [payload for _, _, payload in got] == [f"msg {i}" for i in range(50)]
    assert {group for group, _, _ in got} == {GROUP}
    assert {source.split("/")[1] for _, source, _ in got} == {sender.stdout.strip()}


def test_socket_file_is_group_only_and_sigterm_cleans_up(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660
    with hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as s:
        s.join(GROUP)
        assert daemon.stop(signal.SIGTERM) == 0
        with pytest.raises(DaemonUnavailableError, match="closed the connection"):
            s.receive(timeout=5)
    assert not os.path.exists(daemon.socket)


def test_killed_daemon_gives_clients_a_clear_error(daemon: DaemonProcess) -> None:
    with hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as s:
        s.join(GROUP)
        daemon.stop(signal.SIGKILL)
        with pytest.raises(DaemonUnavailableError, match="was the daemon stopped"):
            s.receive(timeout=5)
        with pytest.raises(DaemonUnavailableError):
            s.join("ham:opaque:other")
    with pytest.raises(DaemonUnavailableError, match="no hamcast daemon answers"):
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False)


def test_garbage_closes_only_that_session(daemon: DaemonProcess) -> None:
    with (
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as rx,
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as tx,
    ):
        rx.join(GROUP)
        for garbage in [b"\xff" * 64, b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00\x00\x00\x01"]:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(daemon.socket)
            raw.sendall(garbage)
            raw.settimeout(5)
            assert raw.recv(100) == b"", "the daemon closes a session that sends garbage"
            raw.close()
        tx.send(GROUP, b"still working")
        assert rx.receive(timeout=5).payload == b"still working"
    assert daemon.process.poll() is None


def test_vanished_client_has_its_state_released(daemon: DaemonProcess) -> None:
    member = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import hamcast, time\ns = hamcast.MulticastSocket(embedded=False)\n"
            f"s.join({GROUP!r})\nprint('joined', flush=True)\ntime.sleep(60)\n",
        ],
        env={**os.environ, "HAMCAST_SOCKET": daemon.socket},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert member.stdout is not None
    assert member.stdout.readline().strip() == "joined"
    with hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as s:
        assert [(str(g.group), g.listeners) for g in s.groups()] == [(GROUP, 1)]
        member.kill()
        member.wait()
        member.stdout.close()
        wait_until(lambda: s.groups() == [], 10, "the daemon to forget the dead client")


def test_slow_receiver_loses_counted_messages_and_daemon_stays_bounded(
    daemon: DaemonProcess,
) -> None:
    total = 30000
    with (
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as rx,
        hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as tx,
    ):
        rx.join(GROUP)
        payload = b"x" * 1024
        for _ in range(total):
            tx.send(GROUP, payload)
        assert tx.stats().sent == total
        received = 0
        while True:
            try:
                rx.receive(timeout=1.0)
            except hamcast.ReceiveTimeoutError:
                break
            received += 1
        stats = rx.stats()
        assert stats.dropped > 0, "30 MB cannot all wait in bounded queues"
        assert stats.received + stats.dropped == total
        assert received == stats.received
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    assert rss_kib < 200 * 1024, f"daemon peak RSS {rss_kib} KiB"


def test_service_calls_through_the_daemon(daemon: DaemonProcess) -> None:
    with hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False) as s:
        assert s.mode == "daemon"
        (local,) = s.interfaces()
        assert (local.index, local.technology) == (1, "local")
        s.join(GROUP)
        s.src_register(GROUP)
        assert [(str(e.group), e.role) for e in s.group_set(local)] == [
            (GROUP, hamcast.GroupRole.BOTH)
        ]
        assert s.neighbor_set(local) == []
        assert s.children_set(local, GROUP) == []
        assert s.parent_set(local, GROUP) == []
        assert s.designated_host(local, GROUP) is True
        assert s.daemon_info()[1] == ["local"]
        with pytest.raises(hamcast.UnknownInterfaceError):
            s.neighbor_set(42)
        with pytest.raises(hamcast.InvalidURIError):
            s.join("ham:")
