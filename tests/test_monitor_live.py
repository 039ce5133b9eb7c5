"""The monitor with real daemons: an overlay of four daemons on loopback, the
collector (``hamcast monitor``) polling their endpoints, and the dashboard in
headless Chromium.

The daemons use the overlay technology only, on 127.0.0.1, so nothing here
multicasts and nothing leaves the host; ``make test`` still runs it inside a
private network namespace. The browser test drives Debian's Chromium over the
DevTools protocol (aiohttp's websocket client; no browser download, no extra
package) and saves its screenshot to ``artifacts/monitor/dashboard.png``
(git-ignored) for people to look at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import hamcast
from tests.conftest import DaemonProcess, start_daemon, wait_until

pytestmark = pytest.mark.integration

GROUP = "ham:opaque:monitor-live"
NAMES = ("alpha", "bravo", "charlie", "delta")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "monitor"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1440,880",
)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Overlay:
    """Four daemons in one overlay, each with a monitoring endpoint, all members of GROUP."""

    folder: Path
    daemons: dict[str, DaemonProcess] = field(default_factory=dict)
    monitors: dict[str, str] = field(default_factory=dict)
    sockets: dict[str, hamcast.MulticastSocket] = field(default_factory=dict)

    def start(self) -> None:
        first = ""
        for name in NAMES:
            monitor = free_port(socket.SOCK_STREAM)
            overlay = free_port(socket.SOCK_DGRAM)
            config = self.folder / f"{name}.toml"
            config.write_text(
                'technologies = ["overlay", "local"]\n'
                f'[monitor]\nlisten = "127.0.0.1:{monitor}"\nname = "{name}"\n'
            )
            extra = ["--config", str(config), "--overlay-listen", f"127.0.0.1:{overlay}"]
            if first:
                extra += ["--overlay-bootstrap", first]
            else:
                first = f"127.0.0.1:{overlay}"
            self.daemons[name] = start_daemon(str(self.folder / f"{name}.sock"), *extra)
            self.monitors[name] = f"http://127.0.0.1:{monitor}"
            wait_until(lambda url=self.monitors[name]: _answers(url), 10, f"{name}'s monitor")
        for name, daemon in self.daemons.items():
            sock = hamcast.MulticastSocket(socket_path=daemon.socket, embedded=False)
            sock.join(GROUP)
            self.sockets[name] = sock
        wait_until(self.tree_formed, 30, "the group's tree")

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {name: fetch(url + "/v1/snapshot") for name, url in self.monitors.items()}

    def tree_formed(self) -> bool:
        """One root, every other member has a parent that lists it as a child."""
        entries = {}
        nodes = {}
        for name, snap in self.snapshots().items():
            overlay = next(i for i in snap["interfaces"] if i["technology"] == "overlay")
            nodes[overlay["status"]["node"]] = name
            entry = [g for g in snap["groups"] if g["group"] == GROUP]
            if not entry:
                return False
            entries[name] = entry[0]
        roots = [n for n, e in entries.items() if e["designated"]]
        if len(roots) != 1:
            return False
        for name, entry in entries.items():
            if name in roots:
                continue
            parents = [nodes.get(p) for p in entry["parents"]]
            if len(parents) != 1 or parents[0] is None:
                return False
            parent_children = {nodes.get(c) for c in entries[parents[0]]["children"]}
            if name not in parent_children:
                return False
        return True

    def expected_edges(self) -> set[tuple[str, str]]:
        """Overlay parent → child edges as the daemons themselves report them, by name."""
        snaps = self.snapshots()
        nodes = {}
        for name, snap in snaps.items():
            for iface in snap["interfaces"]:
                if iface["technology"] == "overlay":
                    nodes[iface["status"]["node"]] = name
        edges = set()
        for name, snap in snaps.items():
            for entry in snap["groups"]:
                if entry["group"] == GROUP:
                    edges |= {(nodes[p], name) for p in entry["parents"]}
                    edges |= {(name, nodes[c]) for c in entry["children"]}
        return edges

    def stop(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        for daemon in self.daemons.values():
            daemon.stop()


def _answers(url: str) -> bool:
    try:
        fetch(url + "/", timeout=1.0)
    except OSError:
        return False
    return True


@dataclass
class Dashboard:
    process: subprocess.Popen[str]
    url: str

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = fetch(self.url + "/api/")
        return result


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overlay]:
    net = Overlay(tmp_path_factory.mktemp("monitor-live"))
    try:
        net.start()
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="module")
def dashboard(overlay: Overlay) -> Iterator[Dashboard]:
    argv = [sys.executable, "-m", "hamcast.cli", "monitor", "--listen", "127.0.0.1:0"]
    argv += ["--interval", "0.3"]
    for url in overlay.monitors.values():
        argv += ["--daemon", url]
    log = (overlay.folder / "monitor.log").open("w")
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=log, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "hamcast monitor: dashboard at URL/"
        assert "dashboard at" in line, f"no dashboard address: {line!r}"
        yield Dashboard(process, line.rsplit(" ", 1)[1].strip().rstrip("/"))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()


def _graph_by_name(state: dict[str, Any]) -> tuple[set[str], set[tuple[str, str, str]]]:
    graph = state["graphs"].get(GROUP)
    if graph is None:
        return set(), set()
    label = {n["data"]["id"]: n["data"]["label"] for n in graph["nodes"]}
    hosts = {n["data"]["label"] for n in graph["nodes"] if n["data"]["kind"] == "host"}
    edges = {
        (label[e["data"]["source"]], label[e["data"]["target"]], e["data"]["kind"])
        for e in graph["edges"]
    }
    return hosts, edges


def wait_merged(overlay: Overlay, dashboard: Dashboard) -> None:
    """Until the collector's graph of GROUP is the tree the daemons themselves report."""

    def merged() -> bool:
        expected = {(a, b, "overlay") for a, b in overlay.expected_edges()}
        assert len(expected) == len(NAMES) - 1  # a tree over the four hosts
        hosts, edges = _graph_by_name(dashboard.state())
        return hosts == set(NAMES) and edges == expected

    wait_until(merged, 15, "the collector's graph to match the daemons' own parent/child sets")


def test_collector_merges_the_daemons_into_the_groups_tree(
    overlay: Overlay, dashboard: Dashboard
) -> None:
    overlay.sockets["bravo"].send(GROUP, b"counted")
    wait_merged(overlay, dashboard)
    state = dashboard.state()
    graph = state["graphs"][GROUP]
    roots = [n["data"]["label"] for n in graph["nodes"] if n["data"].get("root")]
    assert len(roots) == 1
    assert all(s == roots[0] for s, _ in overlay.expected_edges())  # four nodes: a star
    assert GROUP in state["groups"]
    assert {d["name"] for d in state["daemons"] if d["reachable"]} == set(NAMES)
    # The counters of the sender and a receiver moved (host totals from the core's sockets).
    wait_until(
        lambda: (
            {d["name"]: d["counters"] for d in dashboard.state()["daemons"]}["bravo"][
                "messages_out"
            ]
            >= 1
        ),
        10,
        "bravo's sent counter",
    )
    one = fetch(dashboard.url + "/api/graph?group=" + urllib.parse.quote(GROUP))
    assert one["group"] == GROUP
    assert len(one["nodes"]) == len(NAMES)


def test_a_daemon_that_stops_answering_is_marked_unreachable(
    overlay: Overlay, dashboard: Dashboard
) -> None:
    # Read-only endpoint: nothing but GET.
    request = urllib.request.Request(overlay.monitors["alpha"] + "/v1/snapshot", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    refused.value.close()
    assert refused.value.code == 405


# --- the page in headless Chromium ----------------------------------------------------


class DevTools:
    """Just enough of the Chrome DevTools protocol: call a method, get its result."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 30)
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("value")


def require_chromium() -> None:
    """Skip loudly without root (only root installs Chromium); fail if root lacks it."""
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0:
            pytest.skip(
                "*** NOT ROOT: Chromium is missing and only root installs it"
                " (`make test` as root runs scripts/install-system-packages) ***"
            )
        pytest.fail("chromium is not installed: run `make setup` as root")


@contextlib.asynccontextmanager
async def chromium(profile: Path, popen: Callable[..., subprocess.Popen[Any]]) -> Any:
    """Headless Chromium started with ``popen`` (e.g. in a namespace), as a DevTools page."""
    argv = [
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    process = popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(port_file.exists, 30, "Chromium's DevTools port")
        wait_until(lambda: len(port_file.read_text().splitlines()) >= 2, 5, "the port file")
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _coloured_pixels(png: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels of the screenshot within ``tolerance`` of ``rgb`` (per channel, 0-255)."""
    import matplotlib.image
    import numpy

    image = matplotlib.image.imread(str(png))[:, :, :3] * 255
    close = numpy.all(numpy.abs(image - numpy.array(rgb)) <= tolerance, axis=2)
    return int(close.sum())


async def capture(
    url: str,
    graph: dict[str, Any],
    tap: str,
    *,
    profile: Path,
    popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
    change: Callable[[], None] | None = None,
    gone: str = "",
) -> dict[str, Any]:
    """Open the dashboard at ``url`` on ``graph``'s group, wait until its nodes and edges
    are drawn and still, click node ``tap`` (if any), take a screenshot; then, with
    ``change``, make that change and wait until node ``gone`` disappears from the page.

    Returns what the page reports ``drawn`` (and ``after`` the change), the
    ``details`` panel's text and the ``png`` bytes.
    """
    host_ids = {n["data"]["id"] for n in graph["nodes"]}
    edge_ids = {e["data"]["id"] for e in graph["edges"]}
    async with chromium(profile, popen) as page:
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=1440,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.call("Page.enable")
        await page.call("Page.navigate", url=f"{url}/#{urllib.parse.quote(graph['group'])}")
        deadline = time.monotonic() + 20
        drawn: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            found = await page.evaluate(
                "window.hamcastMonitor && JSON.stringify(window.hamcastMonitor.drawn())"
            )
            drawn = json.loads(found) if found else None
            if (
                drawn
                and drawn["connected"]
                and set(drawn["nodes"]) >= host_ids
                and set(drawn["edges"]) >= edge_ids
                and not drawn["moving"]
            ):
                break
            await asyncio.sleep(0.2)
        assert drawn is not None, "the page never set up window.hamcastMonitor"
        if tap:
            await page.evaluate(f"window.hamcastMonitor.tap({json.dumps(tap)})")
        await asyncio.sleep(0.5)  # a few frames for the details panel and the selection
        details = await page.evaluate("document.getElementById('details').innerText")
        shot = await page.call("Page.captureScreenshot", format="png")
        result = {"drawn": drawn, "details": details, "png": base64.b64decode(shot["data"])}
        if change is not None:
            await asyncio.to_thread(change)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                after = json.loads(
                    await page.evaluate("JSON.stringify(window.hamcastMonitor.drawn())")
                )
                if gone not in after["nodes"]:
                    break
                await asyncio.sleep(0.2)
            result["after"] = after
        return result


def test_dashboard_draws_the_group_in_headless_chromium(
    overlay: Overlay, dashboard: Dashboard, tmp_path: Path
) -> None:
    require_chromium()
    wait_merged(overlay, dashboard)
    graph = dashboard.state()["graphs"][GROUP]
    host_ids = {n["data"]["id"] for n in graph["nodes"]}
    edge_ids = {e["data"]["id"] for e in graph["edges"]}
    root = next(n["data"]["id"] for n in graph["nodes"] if n["data"].get("root"))
    # After the screenshot, a leaf leaves the group: the open page must drop it by itself.
    # (A leaf that only listens: a node with children would stay in the tree as a
    # forwarder, one that sent stays as a sender.)
    parents = {e["data"]["source"] for e in graph["edges"]}
    leaf = next(
        n["data"]
        for n in graph["nodes"]
        if n["data"]["id"] not in parents and n["data"]["role"] == "listener"
    )
    leaving = overlay.sockets[leaf["label"]]
    result = asyncio.run(
        capture(
            dashboard.url,
            graph,
            root,
            profile=tmp_path / "profile",
            change=lambda: leaving.leave(GROUP),
            gone=leaf["id"],
        )
    )
    leaving.join(GROUP)
    png = ARTIFACTS / "dashboard.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(result["png"])
    drawn = result["drawn"]
    assert drawn["group"] == GROUP
    assert set(drawn["nodes"]) >= host_ids, f"nodes drawn: {drawn['nodes']}"
    assert set(drawn["edges"]) >= edge_ids, f"edges drawn: {drawn['edges']}"
    assert "overlay root" in result["details"]
    after = result["after"]
    assert leaf["id"] not in after["nodes"], "the page did not follow the leave"
    assert set(after["nodes"]) == host_ids - {leaf["id"]}
    assert not any(leaf["id"] in edge for edge in after["edges"])
    # The overlay edges really are on the canvas: amber (#f59e0b) pixels in the screenshot.
    assert _coloured_pixels(png, (0xF5, 0x9E, 0x0B)) > 500, f"no overlay edges visible in {png}"
