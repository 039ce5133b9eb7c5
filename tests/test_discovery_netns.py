"""The discovery driver: its BPF filter, its plumbing, and real packets in network namespaces.

Three layers:

* the classic BPF filters, run on real captured packets by a small
  interpreter here (no privileges needed);
* the driver on a fake capture socket (a socketpair): events, timers,
  failures (no privileges needed);
* the driver on real packet sockets inside network namespaces built here with
  plain ``ip`` commands (root only; skipped with the reason otherwise). The
  driver runs as ``python -m hamcast.discovery --json`` started with
  ``ip netns exec``: a whole process is in the namespace, which keeps the
  pytest process (and its threads) out of it, and it is how the daemon runs
  too. Namespaces are named ``hcd-<pid>-<n>-<role>`` and always deleted,
  with every process started in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hamcast.discovery import (
    DiscoveryConfig,
    DiscoveryDriver,
    MemberReported,
    RouterAppeared,
    Verdict,
    VerdictChanged,
)
from hamcast.discovery import packets as p
from hamcast.discovery.capture import CaptureError, bpf_program
from hamcast.discovery.events import DiscoveryEvent
from hamcast.errors import UnknownInterfaceError
from tests.testbed_fixtures import require_multicast_routing

from .test_discovery_packets import (
    BRIDGE_MLDV2_QUERY,
    LINUX_MLDV1_DONE,
    LINUX_MLDV1_REPORT,
    LINUX_MLDV2_JOIN,
    LINUX_V1_REPORT,
    LINUX_V2_LEAVE,
    LINUX_V2_REPORT,
    LINUX_V3_JOIN,
    PIMD_HELLO,
    PIMD_V3_GENERAL_QUERY,
)

# --- the BPF filters, interpreted ------------------------------------------------------

PACKET_MULTICAST = 2
PACKET_LOOPBACK = 5


def run_bpf(program: list[tuple[int, int, int, int]], packet: bytes, pkttype: int) -> int:
    """Run a classic BPF program the way the kernel does for the opcodes capture uses."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code in (0x20, 0x30, 0x50):  # ld W abs (ancillary), ldb abs, ldb ind
            if k == 0xFFFFF004:
                a = pkttype
                continue
            offset = k + (x if code == 0x50 else 0)
            if offset >= len(packet):
                return 0  # the kernel drops on an out-of-bounds load
            a = packet[offset]
        elif code == 0x04:
            a = (a + k) & 0xFFFFFFFF
        elif code == 0x64:
            a = (a << k) & 0xFFFFFFFF
        elif code == 0x07:
            x = a
        elif code in (0x15, 0x25, 0x35):
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")


@pytest.mark.parametrize(
    "hexdata",
    [
        PIMD_HELLO,
        PIMD_V3_GENERAL_QUERY,
        LINUX_V3_JOIN,
        LINUX_V2_REPORT,
        LINUX_V1_REPORT,
        LINUX_V2_LEAVE,
    ],
)
def test_ipv4_filter_accepts_igmp_and_pim(hexdata: str) -> None:
    assert run_bpf(bpf_program(4), bytes.fromhex(hexdata), PACKET_MULTICAST) > 1500
    assert run_bpf(bpf_program(4), bytes.fromhex(hexdata), PACKET_LOOPBACK) == 0


@pytest.mark.parametrize(
    "hexdata", [BRIDGE_MLDV2_QUERY, LINUX_MLDV2_JOIN, LINUX_MLDV1_REPORT, LINUX_MLDV1_DONE]
)
def test_ipv6_filter_accepts_mld(hexdata: str) -> None:
    assert run_bpf(bpf_program(6), bytes.fromhex(hexdata), PACKET_MULTICAST) > 1500
    assert run_bpf(bpf_program(6), bytes.fromhex(hexdata), PACKET_LOOPBACK) == 0


def test_filters_reject_the_data_path() -> None:
    udp4 = p.build_ipv4_packet("10.0.0.1", "239.1.1.1", 17, b"x" * 64, ttl=8, router_alert=False)
    assert run_bpf(bpf_program(4), udp4, PACKET_MULTICAST) == 0
    udp6 = p.build_ipv6_packet("fe80::1", "ff3e::1", 17, b"x" * 64, router_alert=False)
    assert run_bpf(bpf_program(6), udp6, PACKET_MULTICAST) == 0
    # Other ICMPv6 behind a hop-by-hop header (here: an echo request) is not MLD.
    echo = struct.pack("!BBHHH", 128, 0, 0, 1, 1)
    assert run_bpf(bpf_program(6), p.build_ipv6_packet("fe80::1", "ff02::1", 58, echo), 2) == 0
    # Neighbour discovery (type 135) without a hop-by-hop header.
    ns = struct.pack("!BBH4x16s", 135, 0, 0, bytes(16))
    plain = p.build_ipv6_packet("fe80::1", "ff02::1:ff00:1", 58, ns, router_alert=False)
    assert run_bpf(bpf_program(6), plain, PACKET_MULTICAST) == 0
    hello6 = p.build_pim_hello(105, source="fe80::1")
    pim6 = p.build_ipv6_packet("fe80::1", "ff02::d", 103, hello6, router_alert=False)
    assert run_bpf(bpf_program(6), pim6, PACKET_MULTICAST) > 0
    # A truncated packet makes a load fail: dropped, as the kernel does.
    assert run_bpf(bpf_program(6), p.build_ipv6_packet("fe80::1", "ff02::1", 0, b"")[:41], 2) == 0


# --- the driver on a fake socket ----------------------------------------------------------

FAST = DiscoveryConfig(
    settle_time=0.05,
    query_interval=0.1,
    query_response_interval=0.1,
    robustness=1,
    learn_query_parameters=False,
)


class BreakableSocket(socket.socket):
    """A socketpair end whose reads can be made to fail like a dead capture socket."""

    broken = False

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.broken:
            raise OSError(errno.EIO, "Input/output error")
        return super().recv(size, flags)


class FakeCaptures:
    """An opener handing out socketpairs; ``send`` plays the network."""

    def __init__(self, fail: dict[tuple[str, int], OSError] | None = None) -> None:
        self.peers: dict[tuple[str, int], socket.socket] = {}
        self.ours: dict[tuple[str, int], BreakableSocket] = {}
        self.fail = fail or {}

    def __call__(
        self, name: str, ifindex: int, family: int, config: DiscoveryConfig
    ) -> socket.socket:
        if (name, family) in self.fail:
            raise self.fail[(name, family)]
        pair, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours = BreakableSocket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=pair.detach())
        ours.setblocking(False)
        self.ours[(name, family)] = ours
        self.peers[(name, family)] = peer
        return ours

    def send(self, name: str, family: int, data: bytes) -> None:
        self.peers[(name, family)].send(data)

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()


async def _until(
    events: list[DiscoveryEvent], check: Callable[[DiscoveryEvent], bool]
) -> DiscoveryEvent:
    async def poll() -> DiscoveryEvent:
        while True:
            for event in events:
                if check(event):
                    return event
            await asyncio.sleep(0.005)

    return await asyncio.wait_for(poll(), 5.0)


def _changed_to(verdict: Verdict, family: int = 4) -> Callable[[DiscoveryEvent], bool]:
    return lambda e: isinstance(e, VerdictChanged) and e.new is verdict and e.family == family


def test_driver_feeds_cores_and_arms_timers() -> None:
    fake = FakeCaptures()
    events: list[DiscoveryEvent] = []

    async def main() -> None:
        driver = DiscoveryDriver([(3, "eth9")], events.append, FAST, opener=fake)
        assert driver.snapshot(3, 4)[1].unavailable == "discovery not started"
        await driver.start()
        assert driver.links() == [(3, 4), (3, 6)]
        # Silence: the settle timer fires and the verdict becomes NONE.
        await _until(events, _changed_to(Verdict.NONE))
        hello = p.build_ipv4_packet("10.0.0.1", "224.0.0.13", 103, p.build_pim_hello(1))
        fake.send("eth9", 4, hello)
        await _until(events, _changed_to(Verdict.ROUTED))
        assert driver.snapshot(3, socket.AF_INET)[0] is Verdict.ROUTED
        # Its one-second holdtime runs out: the driver's timer brings NONE back.
        await _until(events, lambda e: isinstance(e, VerdictChanged) and e.old is Verdict.ROUTED)
        report = p.build_mldv2_report("fe80::5", [p.GroupRecord(2, "ff3e::1")])
        fake.send("eth9", 6, p.build_ipv6_packet("fe80::5", "ff02::16", 58, report))
        await _until(events, lambda e: isinstance(e, MemberReported))
        await driver.stop()

    try:
        asyncio.run(main())
    finally:
        fake.close()
    assert RouterAppeared(3, "10.0.0.1", 1.0) in events
    assert MemberReported(3, "ff3e::1", "fe80::5") in events


def test_driver_degrades_to_unknown_when_capture_fails() -> None:
    denied = CaptureError(1, "no permission for packet sockets: ... CAP_NET_RAW ...")
    fake = FakeCaptures(fail={("eth9", 4): denied, ("eth9", 6): PermissionError(1, "denied")})
    events: list[DiscoveryEvent] = []

    async def main() -> None:
        driver = DiscoveryDriver([(3, "eth9")], events.append, FAST, opener=fake)
        await driver.start()
        verdict, evidence = driver.snapshot(3, 4)
        assert verdict is Verdict.UNKNOWN
        assert evidence.unavailable is not None
        assert "CAP_NET_RAW" in evidence.unavailable
        assert driver.snapshot(3, 6)[1].unavailable == "[Errno 1] denied"
        with pytest.raises(UnknownInterfaceError):
            driver.snapshot(4, 4)
        await driver.stop()

    asyncio.run(main())
    assert events == []  # no settle timer runs without a socket


def test_driver_survives_a_failing_handler_and_a_broken_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeCaptures()
    events: list[DiscoveryEvent] = []

    def handler(event: DiscoveryEvent) -> None:
        events.append(event)
        raise RuntimeError("consumer bug")

    async def main() -> None:
        driver = DiscoveryDriver([(3, "eth9")], handler, FAST, families=[4], opener=fake)
        await driver.start()
        query = p.build_ipv4_packet("0.0.0.0", "224.0.0.1", 2, p.build_igmp_query(3))
        fake.send("eth9", 4, query)
        await _until(events, _changed_to(Verdict.LINK_LOCAL))
        # The socket breaks (as when the kernel reports an error on it).
        fake.ours[("eth9", 4)].broken = True
        fake.send("eth9", 4, query)
        await _until(events, _changed_to(Verdict.UNKNOWN))
        verdict, evidence = driver.snapshot(3, 4)
        assert verdict is Verdict.UNKNOWN
        assert evidence.unavailable is not None
        assert evidence.querier is not None  # the evidence gathered so far stays readable
        await driver.stop()

    try:
        with caplog.at_level("ERROR"):
            asyncio.run(main())
    finally:
        fake.close()
    assert "consumer bug" in caplog.text


def test_driver_set_interfaces() -> None:
    fake = FakeCaptures()

    async def main() -> None:
        driver = DiscoveryDriver([(3, "eth9")], lambda e: None, FAST, families=[6], opener=fake)
        await driver.start()
        driver.set_interfaces([(3, "eth9"), (5, "eth5")])
        assert driver.links() == [(3, 6), (5, 6)]
        assert ("eth5", 6) in fake.ours
        driver.set_interfaces([(5, "eth5")])
        assert driver.links() == [(5, 6)]
        assert fake.ours[("eth9", 6)].fileno() == -1  # closed
        await driver.stop()

    try:
        asyncio.run(main())
    finally:
        fake.close()


# --- real packet sockets in namespaces ---------------------------------------------------

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IP = shutil.which("ip")
needs_netns = pytest.mark.skipif(
    not IS_ROOT or IP is None,
    reason=(
        "network-namespace discovery tests need root and iproute2 (`ip`): run the suite "
        "as root (make test does) to check the driver on real packet sockets"
    ),
)
_counter = itertools.count()

JOINER = """
import socket, struct, sys
index = socket.if_nametoindex("eth0")
held = []
for group in sys.argv[1:]:
    if ":" in group:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                     socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", index))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     struct.pack("=4s4si", socket.inet_aton(group), bytes(4), index))
    held.append(s)
print("joined", flush=True)
sys.stdin.read()  # leave (close) when the test closes our stdin
for s in held:
    s.close()
"""


class Namespaces:
    """Network namespaces and the processes in them; :meth:`close` removes all."""

    def __init__(self) -> None:
        self.prefix = f"hcd-{os.getpid()}-{next(_counter)}"
        self.names: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        self.ip("netns", "add", name)
        self.names.append(name)
        self.ip("-n", name, "link", "set", "lo", "up")
        # No duplicate-address detection: MLD then comes from link-local
        # addresses at once instead of from :: for a second.
        for scope in ("default", "all"):
            self.sysctl(name, f"net.ipv6.conf.{scope}.accept_dad=0")
        return name

    def ip(self, *args: str) -> None:
        assert IP is not None
        done = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def sysctl(self, ns: str, setting: str) -> None:
        self.ip("netns", "exec", ns, "sysctl", "-qw", setting)

    def spawn(self, ns: str, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        assert IP is not None
        process: subprocess.Popen[bytes] = subprocess.Popen(
            [IP, "netns", "exec", ns, *args], **kwargs
        )
        self.processes.append(process)
        return process

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        self.ip(
            "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b
        )
        self.ip("-n", ns_a, "link", "set", name_a, "up")
        self.ip("-n", ns_b, "link", "set", name_b, "up")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for name in self.names:
            with contextlib.suppress(AssertionError):
                self.ip("netns", "del", name)


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()


class Watcher:
    """``python -m hamcast.discovery --json`` in a namespace, its output as dicts."""

    def __init__(self, spaces: Namespaces, ns: str, log: Path, *options: str) -> None:
        self.log = log
        self.seen: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        command = [
            sys.executable,
            "-m",
            "hamcast.discovery",
            "--json",
            "--no-learn",
            *options,
            "eth0",
        ]
        with log.open("wb") as errors:
            self.process = spaces.spawn(ns, command, stdout=subprocess.PIPE, stderr=errors)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.started = self.wait_for(lambda e: e["event"] == "started", 15.0, "watcher start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait_for(
        self,
        check: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first event in ``seen[since:]`` or arriving within ``timeout`` passing ``check``."""
        for old in self.seen[since:]:
            if check(old):
                return old
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            event: dict[str, Any] | None = None
            with contextlib.suppress(queue.Empty):
                if remaining > 0:
                    event = self._lines.get(timeout=remaining)
            if event is None:
                raise AssertionError(
                    f"timed out waiting for {what}; saw {json.dumps(self.seen)[-3000:]}; "
                    f"stderr: {self.log.read_text()[-2000:]}"
                )
            self.seen.append(event)
            if check(event):
                return event

    def snapshot_until(
        self, family: int, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """Ask for snapshots (SIGUSR1) until one of ``family`` passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            mark = len(self.seen)
            self.process.send_signal(signal.SIGUSR1)
            snap = self.wait_for(
                lambda e: e["event"] == "snapshot" and e["family"] == family,
                5.0,
                "a snapshot",
                since=mark,
            )
            if check(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"no snapshot passed the check; last: {json.dumps(snap)}")
            time.sleep(0.25)  # polling a real process; nothing to wait on instead

    def stop(self) -> None:
        """Stop the watcher and collect what it printed last (its final snapshots)."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        while (event := self._lines.get(timeout=1.0)) is not None:
            self.seen.append(event)


def verdict_is(verdict: str, family: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["event"] == "VerdictChanged" and e["new"] == verdict and e["family"] == family
    )


def expired(group: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "MemberExpired" and e["group"] == group


@needs_netns
def test_pimd_router_next_to_host_gives_routed(netns: Namespaces, tmp_path: Path) -> None:
    require_multicast_routing()
    pimd = shutil.which("pimd")
    if pimd is None:
        pytest.skip("pimd is not installed (apt-get install -y pimd)")
    router, host = netns.add("r"), netns.add("h")
    netns.veth(router, "eth0", host, "eth0")
    netns.ip("-n", router, "addr", "add", "10.91.0.1/24", "dev", "eth0")
    netns.ip("-n", host, "addr", "add", "10.91.0.2/24", "dev", "eth0")
    watcher = Watcher(
        netns, host, tmp_path / "watch.log",
        "--family", "4", "--settle", "60", "--query-interval", "2", "--robustness", "2",
        "--response-interval", "1",
    )  # fmt: skip
    conf = tmp_path / "pimd.conf"
    conf.write_text("phyint 10.91.0.1 enable\nigmp-query-interval 2\nspt-threshold infinity\n")
    with (tmp_path / "pimd.log").open("wb") as log:
        pimd_process = netns.spawn(
            router, [pimd, "-f", "-N", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    # pimd says Hello at once ...
    appeared = watcher.wait_for(lambda e: e["event"] == "RouterAppeared", 10.0, "a PIM Hello")
    assert appeared["address"] == "10.91.0.1"
    routed = watcher.wait_for(verdict_is("routed", 4), 5.0, "ROUTED")
    assert [n["address"] for n in routed["evidence"]["neighbours"]] == ["10.91.0.1"]
    # ... and becomes the querier with its first general query a few seconds later.
    snap = watcher.snapshot_until(4, lambda s: s["evidence"]["querier"] is not None, timeout=20.0)
    assert snap["verdict"] == "routed"
    querier = snap["evidence"]["querier"]
    assert (querier["address"], querier["version"], querier["is_router"]) == ("10.91.0.1", 3, True)
    # Stopped, pimd says goodbye (Holdtime 0); its querier times out after
    # 2 * 2 + 1 / 2 s: the link ends with nothing.
    pimd_process.terminate()
    pimd_process.wait(timeout=10)
    watcher.wait_for(lambda e: e["event"] == "RouterLost", 5.0, "pimd's goodbye")
    watcher.wait_for(verdict_is("none", 4), 10.0, "NONE after the querier timed out")
    watcher.stop()


@needs_netns
def test_bridge_querier_gives_link_local_and_members_come_and_go(
    netns: Namespaces, tmp_path: Path
) -> None:
    switch, host, other = netns.add("sw"), netns.add("h"), netns.add("o")
    netns.ip(
        "-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "1",
        "mcast_querier", "1", "mcast_igmp_version", "3", "mcast_mld_version", "2",
        "mcast_query_interval", "200", "mcast_startup_query_interval", "50",
        "mcast_last_member_interval", "50",
    )  # fmt: skip
    netns.ip("-n", switch, "link", "set", "br0", "up")
    for port, ns, address in (("p1", host, "10.92.0.2/24"), ("p2", other, "10.92.0.3/24")):
        netns.veth(switch, port, ns, "eth0")
        netns.ip("-n", switch, "link", "set", port, "master", "br0")
        netns.ip("-n", ns, "addr", "add", address, "dev", "eth0")
    watcher = Watcher(
        netns, host, tmp_path / "watch.log",
        "--settle", "60", "--query-interval", "2", "--robustness", "2", "--response-interval", "1",
        "--last-member-interval", "0.5",
    )  # fmt: skip
    # The bridge queries from 0.0.0.0 (it has no IPv4 address) and from its
    # IPv6 link-local address: a querier, no router.
    v4 = watcher.wait_for(verdict_is("link-local", 4), 10.0, "IPv4 LINK_LOCAL")
    assert v4["evidence"]["querier"]["address"] == "0.0.0.0"
    assert v4["evidence"]["neighbours"] == []
    v6 = watcher.wait_for(verdict_is("link-local", 6), 10.0, "IPv6 LINK_LOCAL")
    assert v6["evidence"]["querier"]["address"].startswith("fe80::")
    assert v6["evidence"]["querier"]["version"] == 2
    # Another host joins (IGMPv3 / MLDv2 reports) and leaves again.
    joiner = netns.spawn(
        other,
        [sys.executable, "-c", JOINER, "239.92.0.1", "ff3e::92:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert joiner.stdout is not None and joiner.stdin is not None
    assert joiner.stdout.readline() == b"joined\n"
    reported4 = watcher.wait_for(
        lambda e: e["event"] == "MemberReported" and e["group"] == "239.92.0.1", 5.0, "v4 report"
    )
    assert reported4["reporter"] == "10.92.0.3"
    reported6 = watcher.wait_for(
        lambda e: e["event"] == "MemberReported" and e["group"] == "ff3e::92:1", 5.0, "v6 report"
    )
    assert reported6["reporter"].startswith("fe80::")
    joiner.stdin.close()
    joiner.wait(timeout=10)
    for group in ("239.92.0.1", "ff3e::92:1"):
        watcher.wait_for(
            expired(group),
            5.0,
            f"{group} expired",
        )
    watcher.stop()


@needs_netns
def test_plain_link_is_none_and_v2_members_come_and_go(netns: Namespaces, tmp_path: Path) -> None:
    host, other = netns.add("h"), netns.add("o")
    netns.veth(host, "eth0", other, "eth0")
    netns.ip("-n", host, "addr", "add", "10.93.0.2/24", "dev", "eth0")
    netns.ip("-n", other, "addr", "add", "10.93.0.3/24", "dev", "eth0")
    # The other host speaks IGMPv2 and MLDv1 (reports to the group, leave/done to all-routers).
    netns.sysctl(other, "net.ipv4.conf.eth0.force_igmp_version=2")
    netns.sysctl(other, "net.ipv6.conf.eth0.force_mld_version=1")
    started = time.monotonic()
    watcher = Watcher(netns, host, tmp_path / "watch.log", "--settle", "1")
    for family in (4, 6):
        watcher.wait_for(verdict_is("none", family), 10.0, f"IPv{family} NONE")
    assert time.monotonic() - started >= 1.0
    joiner = netns.spawn(
        other,
        [sys.executable, "-c", JOINER, "239.93.0.1", "ff3e::93:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert joiner.stdout is not None and joiner.stdin is not None
    assert joiner.stdout.readline() == b"joined\n"
    reported = watcher.wait_for(
        lambda e: e["event"] == "MemberReported" and e["group"] == "239.93.0.1", 5.0, "v2 report"
    )
    assert reported["reporter"] == "10.93.0.3"
    watcher.wait_for(
        lambda e: e["event"] == "MemberReported" and e["group"] == "ff3e::93:1", 5.0, "MLDv1 report"
    )
    # No querier: the leave and the done end the groups at once.
    joiner.stdin.close()
    joiner.wait(timeout=10)
    for group in ("239.93.0.1", "ff3e::93:1"):
        watcher.wait_for(
            expired(group),
            3.0,
            f"{group} expired",
        )
    watcher.stop()
    final = [e for e in watcher.seen if e["event"] == "snapshot"]
    assert {e["verdict"] for e in final} == {"none"}


@needs_netns
def test_without_cap_net_raw_discovery_is_unknown_not_a_crash(netns: Namespaces) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    ns = netns.add("np")
    process = netns.spawn(
        ns,
        [setpriv, "--bounding-set=-net_raw", sys.executable, "-m", "hamcast.discovery",
         "--json", "--duration", "0", "lo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    started = json.loads(out.decode().splitlines()[0])
    assert started["event"] == "started"
    for link in started["links"]:
        assert link["verdict"] == "unknown"
        assert "CAP_NET_RAW" in link["unavailable"]
    assert b"CAP_NET_RAW" in err
