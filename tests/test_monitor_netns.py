"""The monitor on the network test-bed: native links, a router, the overlay, discovery.

Topology (namespaces, built and removed by the test)::

    island 10.71.0.0/24 (multicast)        dark 10.72.0.0/24 (no multicast)
    h1 .1  h2 .2  h3 .3 ──── r1 (pimd) ──── d1 .1  d2 .2

On a kernel without multicast routing r1 forwards unicast only and the
island's bridge is its querier: the island's link is then link-local.

h1-h3 run ``ip``, ``overlay`` and ``local``; d1 and d2 ``overlay`` and
``local``, bootstrapped through h1 (r1 routes unicast between the LANs).
Every daemon serves its monitoring endpoint on its own address. The collector
runs in h1's namespace and is told only h1, d1 and d2: it must find h2 and h3
itself — from the peers h1 heard on the island, and from the announcements it
hears there (``--announcements eth0``). The test talks to the collector from
h1's namespace too (``net.call``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hamcast
from hamcast.testbed import Network, Topology
from tests.conftest import answers, wait_until
from tests.test_monitor_live import capture, require_chromium
from tests.testbed_fixtures import ROUTED, testbed

__all__ = ["testbed"]

pytestmark = pytest.mark.integration

ISLAND = ("h1", "h2", "h3")
DARK = ("d1", "d2")
NATIVE = "ham:ip:239.71.0.1:5000"
HYBRID = "ham:opaque:monitor-hybrid"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "monitor"

CONFIG = """
technologies = {technologies}

[technology.ip]
announce_interval = 2
rescan_interval = 1

[technology.ip.discovery]
settle_time = 2.0

[technology.overlay.kbr]
keepalive_interval = 1.0

[monitor]
listen = "{address}:7048"
name = "{name}"
"""


def _fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Hybrid:
    def __init__(self, net: Network, folder: Path) -> None:
        self.net = net
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.sockets: list[hamcast.MulticastSocket] = []

    def path(self, host: str) -> str:
        return str(self.folder / f"{host}.sock")

    def start_daemon(self, host: str) -> None:
        address = self.net.address(host, 4)
        techs = ["ip", "overlay", "local"] if host in ISLAND else ["overlay", "local"]
        config = self.folder / f"{host}.toml"
        config.write_text(CONFIG.format(technologies=json.dumps(techs), address=address, name=host))
        argv = [
            sys.executable, "-m", "hamcast.cli", "daemon", "--socket", self.path(host),
            "--config", str(config), "--overlay-listen", f"{address}:7047",
        ]  # fmt: skip
        if host in DARK:
            argv += ["--overlay-bootstrap", f"{self.net.address('h1', 4)}:7047"]
        with (self.folder / f"{host}.log").open("wb") as log:
            self.processes[host] = self.net.popen(host, argv, stdout=subprocess.DEVNULL, stderr=log)
        wait_until(lambda: answers(self.path(host)), 20, f"the daemon on {host}")

    def join(self, host: str, group: str) -> None:
        sock = hamcast.MulticastSocket(socket_path=self.path(host), embedded=False)
        self.sockets.append(sock)
        sock.join(group)

    def start_collector(self) -> None:
        argv = [
            sys.executable, "-m", "hamcast.cli", "monitor",
            "--listen", f"{self.net.address('h1', 4)}:7049", "--interval", "0.5",
            "--announcements", self.net.interface("h1"),
            "--daemon", f"{self.net.address('h1', 4)}:7048",
        ]  # fmt: skip
        for host in DARK:
            argv += ["--daemon", f"{self.net.address(host, 4)}:7048"]
        with (self.folder / "monitor.log").open("wb") as log:
            self.processes["monitor"] = self.net.popen(
                "h1", argv, stdout=subprocess.DEVNULL, stderr=log
            )

    def chromium(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return self.net.popen("h1", argv, **kwargs)

    def state(self) -> dict[str, Any]:
        url = f"http://{self.net.address('h1', 4)}:7049/api/"
        try:
            result: dict[str, Any] = self.net.call("h1", _fetch, url)
        except OSError:
            return {"groups": [], "graphs": {}, "daemons": []}
        return result

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """:func:`wait_until`, leaving the collector's last answer in artifacts/ on failure."""
        try:
            wait_until(condition, timeout, what)
        except AssertionError:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            dump = ARTIFACTS / "netns-failed-state.json"
            dump.write_text(json.dumps(self.state(), indent=1))
            raise AssertionError(
                f"timed out waiting for {what}; the collector's view: {dump}"
            ) from None

    def stop(self) -> None:
        for sock in self.sockets:
            sock.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(timeout=15)


@pytest.fixture
def hybrid(testbed: Callable[[Topology], Network], tmp_path: Path) -> Iterator[Hybrid]:
    topo = Topology()
    island = topo.lan("island", v4="10.71.0.0/24", querier=not ROUTED)
    dark = topo.lan("dark", v4="10.72.0.0/24", multicast=False)
    for host in ISLAND:
        topo.host(host, island)
    for host in DARK:
        topo.host(host, dark)
    topo.router("r1", [island, dark], kind="pimd" if ROUTED else "unicast")
    setup = Hybrid(testbed(topo), tmp_path)
    try:
        for host in ISLAND + DARK:
            setup.start_daemon(host)
        yield setup
    finally:
        setup.stop()


def _labelled(graph: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str, str]]]:
    nodes = {n["data"]["id"]: n["data"] for n in graph["nodes"]}
    edges = {
        (
            nodes[e["data"]["source"]]["label"],
            nodes[e["data"]["target"]]["label"],
            e["data"]["kind"],
        )
        for e in graph["edges"]
    }
    return {d["label"]: d for d in nodes.values()}, edges


def test_collector_finds_daemons_and_draws_native_links_and_the_overlay(
    hybrid: Hybrid,
) -> None:
    for host in ISLAND:
        hybrid.join(host, NATIVE)
    for host in ISLAND + DARK:
        hybrid.join(host, HYBRID)
    hybrid.start_collector()
    # Traffic for the counters (and the charts of the screenshot): d1 sends, 20 a second.
    hybrid.processes["sender"] = subprocess.Popen(
        [
            sys.executable, "-m", "hamcast.cli", "--socket", hybrid.path("d1"), "--daemon-only",
            "send", HYBRID, "tick", "--rate", "20", "--count", "100000",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def everyone_found() -> bool:
        names = {d.get("name") for d in hybrid.state()["daemons"] if d["reachable"]}
        return names >= set(ISLAND + DARK)

    hybrid.wait(everyone_found, 30, "the collector to find h2 and h3 by itself")

    # The native group: the three island hosts on one link, with its PIM router
    # (where the kernel routes multicast).
    def native_drawn() -> bool:
        graph = hybrid.state()["graphs"].get(NATIVE)
        if graph is None:
            return False
        nodes, edges = _labelled(graph)
        link = "link " + hybrid.net.address("h1", 4)
        # A host that also bridges the group to the overlay is tied to the link by a
        # gateway edge rather than a native one.
        on_link = {(a, b) for a, b, kind in edges if kind in ("native", "gateway")}
        return (
            link in nodes
            and nodes[link]["verdict"] == ("routed" if ROUTED else "link-local")
            and {(link, h) for h in ISLAND} <= on_link
            and (("router 10.71.0.254", link) in on_link) == ROUTED
        )

    hybrid.wait(native_drawn, 30, f"{NATIVE}: three hosts on the island's link and its router")

    # The group on two technologies: all five hosts; every overlay edge the
    # collector draws is one the daemons report themselves.
    def hybrid_drawn() -> bool:
        graph = hybrid.state()["graphs"].get(HYBRID)
        if graph is None:
            return False
        nodes, edges = _labelled(graph)
        hosts = {n for n, d in nodes.items() if d["kind"] == "host"}
        overlay_edges = {(a, b) for a, b, kind in edges if kind == "overlay"}
        dark_attached = all(any(h in edge for edge in overlay_edges) for h in DARK)
        return hosts == set(ISLAND + DARK) and dark_attached

    hybrid.wait(hybrid_drawn, 40, f"{HYBRID}: five hosts, the dark ones in the overlay tree")
    state = hybrid.state()
    snapshots = {
        d["name"]: d for d in state["daemons"] if d.get("name") in ISLAND + DARK and d["reachable"]
    }
    sent = {d["name"]: d["counters"]["messages_out"] for d in state["daemons"] if d["reachable"]}
    assert sent["d1"] > 0, sent
    graph = state["graphs"][HYBRID]
    nodes, _ = _labelled(graph)
    for host, daemon in snapshots.items():
        entries = [g for g in daemon["groups"] if g["group"] == HYBRID]
        if any(e["gateway"] is not None for e in entries):
            # The core reports the gateway role: the graph shows exactly that.
            assert nodes[host]["gateway"] == any(e["gateway"] for e in entries), host
        else:
            # Else a host on the group's link and in its overlay tree bridges: a gateway.
            techs = {e["technology"] for e in entries}
            assert nodes[host]["gateway"] == ({"ip", "overlay"} <= techs), host

    # The page, in Chromium inside h1's namespace (where the collector is).
    require_chromium()
    url = f"http://{hybrid.net.address('h1', 4)}:7049"
    # No node clicked: the side panel shows the group, the traffic charts and the daemons.
    result = hybrid.net.call(
        "h1",
        asyncio.run,
        capture(url, graph, "", profile=hybrid.folder / "profile", popen=hybrid.chromium),
    )
    assert set(result["drawn"]["edges"]) >= {e["data"]["id"] for e in graph["edges"]}
    png = ARTIFACTS / "hybrid.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(result["png"])
