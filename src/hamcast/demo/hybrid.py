"""The hybrid demo: one group across multicast islands and hosts without multicast.

As root it builds the hybrid scenario of :mod:`hamcast.testbed.scenarios` in
network namespaces — two islands joined by pimd, an island reachable by
unicast only, two hosts without multicast — starts a daemon on every host,
lets two senders (one on an island, one without multicast) stream one group,
and shows per receiver how many messages arrived and over which technology,
the designated gateways, and the hybrid tree. On a kernel without multicast
routing no router can join lan1 and lan2: it says so and runs the scenario with
three islands instead. Without root it runs the loopback variant: daemons on
this host joined only by the overlay.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from hamcast.client.sync import MulticastSocket
from hamcast.errors import HamcastError, ReceiveTimeoutError
from hamcast.model import Message
from hamcast.testbed.daemons import DaemonSet
from hamcast.testbed.routers import multicast_routing_missing
from hamcast.testbed.scenarios import (
    HYBRID_CONFIG,
    HYBRID_DARK,
    HYBRID_HOSTS,
    OVERLAY_PORT,
    hybrid_domains,
    hybrid_topology,
)

__all__ = ["DemoError", "run_hybrid", "run_loopback"]

GROUP = "ham:sip:news@hamcast.example"
#: Messages each sender streams.
COUNT = 100
#: Seconds between two rounds of the stream (one message per sender per round).
PACE = 0.005
#: Seconds to wait for bindings and for the first messages to get through.
SETTLE_TIMEOUT = 40.0

LOOPBACK_CONFIG = """
technologies = ["overlay"]

[technology.overlay.kbr]
keepalive_interval = 1.0

[technology.overlay.scribe]
heartbeat_interval = 0.5
"""


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


@dataclass
class _Scene:
    """Who is who in one run of the demo."""

    daemons: DaemonSet
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    #: Native domain label -> hosts (empty in the loopback variant).
    domains: dict[str, tuple[str, ...]]
    #: Overlay endpoint ("ADDRESS:PORT") -> host, to name overlay tree nodes.
    endpoints: dict[str, str]
    sockets: dict[str, MulticastSocket] = field(default_factory=dict)

    def open(self, hosts: Iterable[str]) -> None:
        for host in hosts:
            self.sockets[host] = self.daemons.socket(host)

    def close(self) -> None:
        for sock in self.sockets.values():
            with contextlib.suppress(HamcastError, OSError):
                sock.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _drain(sock: MulticastSocket, quiet: float) -> list[Message]:
    got = []
    with contextlib.suppress(ReceiveTimeoutError):
        while True:
            got.append(sock.receive(timeout=quiet))
    return got


def _technology(sock: MulticastSocket, index: int) -> str:
    return next((i.technology for i in sock.interfaces() if i.index == index), "?")


def _bound(sock: MulticastSocket) -> str:
    for row in sock.groups():
        if str(row.group) == GROUP and row.listeners and not row.gateway:
            return row.technology
    for row in sock.groups():
        if str(row.group) == GROUP and row.listeners:
            return row.technology
    return "-"


def _ip_index(sock: MulticastSocket) -> int | None:
    return next((i.index for i in sock.interfaces() if i.technology == "ip"), None)


def _expected(scene: _Scene, host: str) -> str:
    """The technology a host should end up with: ip in a native domain, else the overlay."""
    return "ip" if any(host in hosts for hosts in scene.domains.values()) else "overlay"


def _stream(console: Console, scene: _Scene) -> dict[str, Counter[tuple[str, str]]]:
    """Join, wait for the bindings to settle and every sender to reach everyone, stream, count."""
    socks = scene.sockets
    for host in scene.receivers:
        socks[host].join(GROUP)

    def settled() -> bool:
        # A host binds the group to the overlay until discovery has seen its link's
        # multicast router or querier (up to pimd's query interval); then it moves to
        # native multicast, and messages on their way during the move can be lost.
        # The demo streams once everything is where it will stay.
        return all(_bound(socks[h]) == _expected(scene, h) for h in scene.receivers)

    _wait(settled, SETTLE_TIMEOUT, "native hosts on ip and the others on the overlay")
    probe = iter(range(1_000_000))

    def everyone_hears(sender: str) -> bool:
        tag = b"probe %d" % next(probe)
        socks[sender].send(GROUP, tag)
        time.sleep(0.2)
        return all(any(m.payload == tag for m in _drain(socks[h], 0.1)) for h in scene.receivers)

    for sender in scene.senders:

        def heard(sender: str = sender) -> bool:
            return everyone_hears(sender)

        _wait(heard, SETTLE_TIMEOUT, f"{sender} to reach everyone")
    for host in scene.receivers:
        _drain(socks[host], 0.5)
    console.print(
        f"streaming {COUNT} messages from each of {', '.join(scene.senders)} to {GROUP} ..."
    )
    for i in range(COUNT):
        for sender in scene.senders:
            socks[sender].send(GROUP, f"{sender} #{i}".encode())
        time.sleep(PACE)
    tally: dict[str, Counter[tuple[str, str]]] = {}
    for host in scene.receivers:
        counts: Counter[tuple[str, str]] = Counter()
        seen: set[bytes] = set()
        for message in _drain(socks[host], 1.5):
            sender = message.payload.split(b" ", 1)[0].decode(errors="replace")
            technology = _technology(socks[host], message.interface)
            counts[(sender, technology)] += 1
            if message.payload in seen:
                counts[("duplicates", "")] += 1
            seen.add(message.payload)
            if str(message.group) != GROUP:
                counts[("other names", "")] += 1
        tally[host] = counts
    return tally


def _show_tally(
    console: Console, scene: _Scene, tally: dict[str, Counter[tuple[str, str]]]
) -> bool:
    table = Table(
        title=f"what each receiver got ({COUNT} sent by each sender)", title_justify="left"
    )
    table.add_column("receiver")
    table.add_column("multicast")
    table.add_column("bound to")
    for sender in scene.senders:
        table.add_column(f"from {sender}", justify="right")
    table.add_column("dups", justify="right")
    table.add_column("", justify="left")
    good = True
    for host in scene.receivers:
        counts = tally[host]
        outside = "none" if scene.domains else "loopback"
        network = next(
            (d.split(" ", 1)[0] for d, hs in scene.domains.items() if host in hs), outside
        )
        cells = []
        complete = counts[("duplicates", "")] == 0 and counts[("other names", "")] == 0
        for sender in scene.senders:
            by_tech = {t: n for (s, t), n in counts.items() if s == sender}
            total = sum(by_tech.values())
            complete = complete and total == COUNT
            via = " + ".join(f"{n} {t}" for t, n in sorted(by_tech.items()))
            cells.append(via or "0")
        good = good and complete
        table.add_row(
            host,
            network,
            _bound(scene.sockets[host]),
            *cells,
            str(counts[("duplicates", "")]),
            Text("✓", style="green") if complete else Text("✗", style="bold red"),
        )
    console.print(table)
    return good


def _overlay_status(sock: MulticastSocket) -> dict[str, Any]:
    for iface in sock.interfaces():
        if iface.technology == "overlay":
            status: dict[str, Any] = sock.interface_status(iface.index)
            group: dict[str, Any] = status.get("groups", {}).get(GROUP, {})
            return group
    return {}


def _host_of(node: str | None, endpoints: dict[str, str]) -> str:
    if not node:
        return "?"
    endpoint = node.rsplit("@", 1)[-1]
    return endpoints.get(endpoint, endpoint)


def _roles(scene: _Scene, host: str) -> str:
    roles = []
    if host in scene.senders:
        roles.append("sender")
    if host in scene.receivers:
        roles.append("receiver")
    return ", ".join(roles) or "-"


def _hybrid_tree(scene: _Scene) -> Tree:
    """The group's distribution as text: native domains with their gateways, the overlay tree."""
    socks = scene.sockets
    tree = Tree(Text(GROUP, style="bold"))
    gateways: dict[str, str] = {}
    for domain, hosts in scene.domains.items():
        gateway = None
        for host in hosts:
            sock = socks.get(host)
            index = _ip_index(sock) if sock else None
            if sock is not None and index is not None and sock.designated_host(index, GROUP):
                gateway = host
        branch = tree.add(
            Text.assemble(
                ("native multicast ", "bold cyan"),
                domain,
                ("  designated gateway: ", "dim"),
                (gateway or "none", "bold"),
            )
        )
        for host in hosts:
            if host not in socks:
                continue
            line = Text.assemble(f"{host:<3} ", (_roles(scene, host), "dim"))
            if host == gateway:
                line.append("  ⇄ bridges to the overlay", style="magenta")
                gateways[host] = domain
            branch.add(line)
    statuses = {host: _overlay_status(sock) for host, sock in socks.items()}
    root = next((h for h, s in statuses.items() if s.get("root")), None)
    branch = tree.add(Text.assemble(("overlay ", "bold magenta"), "Scribe tree (unicast)"))
    if root is None:
        branch.add(Text("no tree seen", style="dim"))
        return tree

    def label(host: str) -> Text:
        status = statuses.get(host, {})
        notes = []
        if host in gateways:
            notes.append("gateway")
        elif host in scene.senders or host in scene.receivers:
            notes.append(_roles(scene, host))
        if not status.get("member", True) and host not in gateways:
            notes.append("forwarder")
        if status.get("root"):
            notes.append("root")
        return Text.assemble(f"{host:<3} ", (", ".join(notes), "dim"))

    seen: set[str] = set()

    def grow(node: Tree, host: str) -> None:
        seen.add(host)
        for child in statuses.get(host, {}).get("children", []):
            name = _host_of(child, scene.endpoints)
            if name not in seen:
                grow(node.add(label(name)), name)

    grow(branch.add(label(root)), root)
    for host in scene.senders:
        if host not in seen and host in socks and _bound(socks[host]) == "overlay":
            branch.add(
                Text.assemble(f"{host:<3} ", ("sender, not in the tree: sends to the root", "dim"))
            )
    return tree


def _present(console: Console, scene: _Scene, tally: dict[str, Counter[tuple[str, str]]]) -> None:
    good = _show_tally(console, scene, tally)
    console.print(_hybrid_tree(scene))
    if not good:
        raise DemoError("a receiver missed messages or got one twice")


def run_hybrid(console: Console) -> None:
    """The demo on the network test-bed (needs root)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hamcast-demo-") as tmp:
        missing = multicast_routing_missing((4,))
        routed = missing is None
        domains = hybrid_domains(routed)
        if not routed:
            console.print(
                f"[bold yellow]{missing}[/]: no multicast router can run here, so lan1 and"
                " lan2 are islands of their own (each with a querier), joined like the"
                " others through the overlay and their gateways"
            )
        console.print("building the test-bed: 4 LANs, 2 routers, 7 hosts in network namespaces")
        with hybrid_topology(routed=routed).up() as net:
            if routed:
                console.print("waiting for pimd to route any-source multicast (about 20 s) ...")
                net.wait_ready()
            h1 = net.address("h1", 4)
            endpoints = {f"{net.address(h, 4)}:{OVERLAY_PORT}": h for h in HYBRID_HOSTS}
            with DaemonSet(net, Path(tmp), HYBRID_CONFIG) as daemons:
                console.print("starting a daemon (ip + overlay) on every host ...")
                for host in HYBRID_HOSTS:
                    daemons.start(
                        host,
                        overlay_listen=f"{net.address(host, 4)}:{OVERLAY_PORT}",
                        bootstrap=None if host == "h1" else f"{h1}:{OVERLAY_PORT}",
                        options=["--monitor", f"unix:{tmp}/{host}.monitor"],
                    )
                scene = _Scene(
                    daemons,
                    senders=("h1", "d1"),
                    receivers=("h2", "h3", "h4", "h5", "d2"),
                    domains=domains,
                    endpoints=endpoints,
                )
                dashboard = _Dashboard(console, Path(tmp), HYBRID_HOSTS)
                try:
                    scene.open(HYBRID_HOSTS)
                    # Native multicast leaves the link only with a TTL above 1.
                    scene.sockets["h1"].set_ttl(16)
                    island = [h for h in HYBRID_HOSTS if h not in HYBRID_DARK]
                    _wait(
                        lambda: all(
                            scene.sockets[h].interface_status(_ip_index(scene.sockets[h]) or 0)[
                                "domain"
                            ]["daemons"]
                            >= next(len(hs) for hs in domains.values() if h in hs)
                            for h in island
                        ),
                        SETTLE_TIMEOUT,
                        "the daemons of each domain to hear each other",
                    )
                    tally = _stream(console, scene)
                    _present(console, scene, tally)
                    dashboard.hold()
                finally:
                    scene.close()
                    dashboard.stop()
            run = net.plan.base
        console.print(f"test-bed {run} torn down; the demo took {time.monotonic() - started:.0f} s")


class _Dashboard:
    """``hamcast monitor`` in this namespace, polling every daemon's Unix-socket endpoint.

    The collector never multicasts (it follows the daemons' own peer lists), and
    talks to the daemons in their namespaces through their socket files.
    """

    def __init__(self, console: Console, folder: Path, hosts: Iterable[str]) -> None:
        self.console = console
        # Every daemon is given; following the peers they heard would make this
        # namespace try the test-bed's addresses, which are not reachable from here.
        argv = [
            sys.executable, "-m", "hamcast.cli", "monitor",
            "--listen", "127.0.0.1:0", "--no-follow-peers",
        ]  # fmt: skip
        for host in hosts:
            argv += ["--daemon", f"unix:{folder}/{host}.monitor"]
        self.url: str | None = None
        self._log = (folder / "monitor.log").open("wb")
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode(errors="replace").strip()
        if "dashboard at " in line:
            self.url = line.split("dashboard at ", 1)[1]
            console.print(f"live dashboard: [bold]{self.url}[/] (hamcast monitor, docs/monitor.md)")
        else:
            console.print("[yellow]the dashboard did not start[/] (see docs/monitor.md)")

    def hold(self) -> None:
        """On a terminal, keep everything up for a look at the dashboard until Enter."""
        if self.url is not None and sys.stdin.isatty():
            self.console.print(f"the dashboard stays at {self.url} — press Enter to tear down")
            with contextlib.suppress(EOFError):
                input()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (UDP), for the loopback daemons' overlay nodes."""
    holders, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            holders.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in holders:
            sock.close()
    return ports


def run_loopback(console: Console) -> None:
    """The demo without root: four daemons on this host, joined only by the overlay."""
    hosts = ("n1", "n2", "n3", "n4")
    ports = dict(zip(hosts, _free_ports(len(hosts)), strict=True))
    endpoints = {f"127.0.0.1:{port}": host for host, port in ports.items()}
    with (
        tempfile.TemporaryDirectory(prefix="hamcast-demo-") as tmp,
        DaemonSet(None, Path(tmp), LOOPBACK_CONFIG) as daemons,
    ):
        console.print("starting four daemons with the overlay on 127.0.0.1 ...")
        for host in hosts:
            daemons.start(
                host,
                overlay_listen=f"127.0.0.1:{ports[host]}",
                bootstrap=None if host == "n1" else f"127.0.0.1:{ports['n1']}",
            )
        scene = _Scene(
            daemons,
            senders=("n1",),
            receivers=("n2", "n3", "n4"),
            domains={},
            endpoints=endpoints,
        )
        try:
            scene.open(hosts)
            tally = _stream(console, scene)
            _present(console, scene, tally)
        finally:
            scene.close()
