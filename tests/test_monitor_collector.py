"""The collector in-process against stub endpoints on loopback, its web API, and
the reading of announcements.

Stub endpoints serve recorded answers (tests/test_monitor_graph.py) whose ip
peers are rewritten to 127.0.0.1, so following peers stays on loopback.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import hamcast.monitor.collector as collector_module
from hamcast.cli.monitor import _daemon_url
from hamcast.cli.parser import build_parser
from hamcast.monitor.announcements import monitor_url
from hamcast.monitor.collector import Collector, CollectorConfig
from hamcast.technologies.ip.peers import Announcement, encode_announcement
from tests.test_monitor_graph import HYBRID, RECORDED


@asynccontextmanager
async def endpoint(answer: Any, status: int = 200) -> AsyncIterator[str]:
    """A stub monitoring endpoint on an ephemeral loopback port; yields its URL."""

    async def snapshot(request: web.Request) -> web.Response:
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_get("/v1/snapshot", snapshot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def recorded(name: str) -> dict[str, Any]:
    snap = copy.deepcopy(RECORDED[name])
    for iface in snap["interfaces"]:
        for peer in (iface.get("status") or {}).get("peers", []):
            peer["address"] = "127.0.0.1"
    return snap


def test_poll_merge_and_follow_peers() -> None:
    async def run() -> dict[str, Any]:
        async with (
            endpoint(recorded("h2")) as h2,
            endpoint(recorded("h3")) as h3,
            endpoint(recorded("d1")) as d1,
            endpoint({"hello": "world"}) as stranger,
            endpoint({}, status=500) as broken,
        ):
            port = int(h2.rsplit(":", 1)[1])
            config = CollectorConfig(
                daemons=[h3, d1, stranger, broken], interval_s=0.1, peer_port=port
            )
            collector = Collector(config)
            await collector.poll_once()  # h3 names its peers: 127.0.0.1 → h2's port
            await collector.poll_once()
            await collector.poll_once()
            state = collector.state
            await collector.close_sessions()
            return {"state": state, "h2": h2, "stranger": stranger, "broken": broken}

    result = asyncio.run(run())
    state = result["state"]
    daemons = {d["url"]: d for d in state["daemons"]}
    assert daemons[result["h2"]]["reachable"] and daemons[result["h2"]]["name"] == "h2"
    assert daemons[result["stranger"]]["error"] == "not a hamcast monitoring endpoint"
    assert daemons[result["broken"]]["error"] == "HTTP 500"
    graph = state["graphs"][HYBRID]
    labels = {n["data"]["label"] for n in graph["nodes"] if n["data"]["kind"] == "host"}
    assert labels == {"h2", "h3", "d1"}
    assert state["history"][result["h2"]][-1][0] == RECORDED["h2"]["time"]
    assert len(state["history"][result["h2"]]) == 2  # found after the first round


def test_web_api_page_and_live_events(tmp_path: Path) -> None:
    (tmp_path / "cytoscape.min.js").write_text("/* stand-in */")

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with endpoint(recorded("d1")) as d1:
            collector = Collector(
                CollectorConfig(listen="127.0.0.1:0", daemons=[d1], assets=tmp_path)
            )
            await collector.start()
            try:
                base = collector.url
                async with aiohttp.ClientSession() as http:
                    async with http.get(base + "/api/events") as events:
                        assert events.headers["Content-Type"] == "text/event-stream"
                        lines: list[str] = []
                        while not lines or lines[-1] != "":
                            lines.append((await events.content.readline()).decode().rstrip("\n"))
                        out["event"] = lines
                    for path in (
                        "/",
                        "/static/app.js",
                        "/static/style.css",
                        "/static/..%2Fcollector.py",
                        "/vendor/cytoscape.min.js",
                        "/api/graph?group=ham:opaque:none",
                    ):
                        async with http.get(base + path) as response:
                            out[path] = (response.status, await response.text())
                    await collector.poll_once()
                    async with http.get(base + "/api/") as response:
                        out["api"] = await response.json()
                    async with http.get(base + "/api/graph", params={"group": HYBRID}) as response:
                        out["graph"] = await response.json()
                    async with http.get(base + "/api/daemons") as response:
                        out["daemons"] = await response.json()
            finally:
                await collector.stop()
        return out

    out = asyncio.run(run())
    event = out["event"]
    assert event[0] == "event: state"
    assert json.loads(event[1].removeprefix("data: "))["schema"] == "hamcast.monitor.graph/1"
    assert out["/"][0] == 200 and "cytoscape.min.js" in out["/"][1]
    assert out["/static/app.js"][0] == 200 and "hamcastMonitor" in out["/static/app.js"][1]
    assert out["/static/style.css"][0] == 200
    assert out["/static/..%2Fcollector.py"][0] == 404
    assert out["/vendor/cytoscape.min.js"] == (200, "/* stand-in */")
    assert out["/api/graph?group=ham:opaque:none"][0] == 404
    assert out["api"]["groups"] == [HYBRID]
    assert out["graph"] == out["api"]["graphs"][HYBRID]
    assert out["daemons"][0]["name"] == "d1"


def test_missing_graph_library_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_module, "CYTOSCAPE_CANDIDATES", ())

    async def run() -> tuple[int, str]:
        collector = Collector(CollectorConfig(listen="127.0.0.1:0", assets=tmp_path))
        await collector.start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(collector.url + "/vendor/cytoscape.min.js") as response,
            ):
                return response.status, await response.text()
        finally:
            await collector.stop()

    status, text = asyncio.run(run())
    assert status == 404 and "make setup" in text


def announcement(**fields: Any) -> bytes:
    base = {
        "daemon_id": b"\x01" * 16,
        "sequence": 1,
        "interval": 10,
        "name": "h1",
        "technologies": ("ip", "overlay"),
        "overlay": "10.1.0.1:7047",
    }
    return encode_announcement(Announcement(**{**base, **fields}))


def test_announcements_lead_to_monitoring_urls() -> None:
    plain = announcement()
    found = monitor_url(plain, "10.1.0.1", 7048)
    assert found is not None and found[1] == "http://10.1.0.1:7048"
    assert found[0].name == "h1"
    assert monitor_url(announcement(overlay=""), "fe80::1", 7048)[1] == "http://[fe80::1]:7048"  # type: ignore[index]
    # A daemon names its endpoint in the announcement's monitor field.
    named = announcement(monitor="10.1.0.1:9000")
    assert monitor_url(named, "10.1.0.1", 7048)[1] == "http://10.1.0.1:9000"  # type: ignore[index]
    # A wildcard listener: the announcing address, with the named port.
    wildcard = announcement(monitor="0.0.0.0:9000")
    assert monitor_url(wildcard, "10.1.0.9", 7048)[1] == "http://10.1.0.9:9000"  # type: ignore[index]
    # An older daemon's announcement ends after the overlay field: the default port.
    older = plain[:-1]
    assert monitor_url(older, "10.1.0.1", 7048)[1] == "http://10.1.0.1:7048"  # type: ignore[index]
    assert monitor_url(older + b"\x20short", "10.1.0.1", 7048) is None  # runs past the end
    assert monitor_url(b"HCPA garbage", "10.1.0.1", 7048) is None


def test_monitor_command_line() -> None:
    args = build_parser().parse_args(
        ["monitor", "--daemon", "7048", "--daemon", "http://10.0.0.1:7048/", "--interval", "0.5"]
    )
    assert args.run.__name__ == "monitor_command"
    assert args.listen == "127.0.0.1:7049"
    assert [_daemon_url(d) for d in args.daemon] == [
        "http://127.0.0.1:7048",
        "http://10.0.0.1:7048",
    ]
    assert args.interval == 0.5 and not args.no_follow_peers and args.announcements is None
