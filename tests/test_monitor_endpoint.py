"""The daemon's side of monitoring: the snapshot, the ``[monitor]`` config, the endpoint.

The snapshot is built from a real :class:`Middleware` with the ``local``
technology and an in-memory sink; the endpoint is served by a real
:class:`Daemon` (no IPC socket) on an ephemeral loopback port.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hamcast.cli.daemon import build_config
from hamcast.cli.monitor import _daemon_url
from hamcast.cli.parser import build_parser
from hamcast.config import DaemonConfig, MonitorConfig, load_config, parse_monitor_listen
from hamcast.core.middleware import Middleware
from hamcast.daemon.server import Daemon
from hamcast.errors import ResourceError, UsageError
from hamcast.monitor.collector import Collector, CollectorConfig
from hamcast.monitor.snapshot import SCHEMA, take_snapshot
from hamcast.technologies.local import LocalTechnology
from hamcast.uri import URI

NEWS = URI.parse("ham:opaque:news")


class Sink:
    def deliver(self, sock: int, group: URI, source: str, iface: int, payload: Any) -> bool:
        return True

    def event(self, sock: int, event: Any) -> None:
        pass


class Host:
    instance = "00aa"
    name = "test-host"
    pid = 42
    version = "0.1.0"
    started = 1000.0


def middleware_with_a_listener() -> Middleware:
    core = Middleware([LocalTechnology()])
    asyncio.run(core.start())
    session = core.open_session(Sink(), pid=1, name="t")
    sock = core.create_socket(session)
    core.join(session, sock, NEWS)
    sender = core.create_socket(session)
    core.send(session, sender, NEWS, b"hello")
    return core


def test_snapshot_of_a_middleware() -> None:
    snap = take_snapshot(middleware_with_a_listener(), Host(), now=1012.5)
    assert snap["schema"] == SCHEMA
    assert snap["host"] == {
        "instance": "00aa",
        "name": "test-host",
        "pid": 42,
        "version": "0.1.0",
        "technologies": ["local"],
        "uptime_s": 12.5,
    }
    assert [i["technology"] for i in snap["interfaces"]] == ["local"]
    [entry] = [g for g in snap["groups"] if g["group"] == "ham:opaque:news"]
    assert entry["technology"] == "local"
    assert entry["listeners"] == 1
    assert entry["role"] in {"listener", "both"}
    assert entry["selected"]
    assert entry["senders"] == 1, "a socket that sent is a sender"
    assert entry["gateway"] is False
    assert entry["reason"] == "local: this host only (no other technology is usable)"
    assert entry["counters"] == {
        "messages_in": 1,  # the local technology loops it back
        "messages_out": 1,
        "bytes_in": 5,
        "bytes_out": 5,
        "drops": 0,
    }
    assert snap["missing"] == []
    assert snap["gateway"] == {"candidate": False}
    assert snap["counters"] == {
        "sockets": 2,
        "messages_in": 1,
        "messages_out": 1,
        "drops": 0,
        "send_failures": 0,
        "bytes_in": 5,
        "bytes_out": 5,
    }
    json.dumps(snap)  # JSON-ready


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7048", ("127.0.0.1", 7048)),
        (":7048", ("127.0.0.1", 7048)),
        ("10.1.0.1:80", ("10.1.0.1", 80)),
        ("[::1]:7048", ("::1", 7048)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_monitor_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_monitor_listen(text) == expected


@pytest.mark.parametrize("text", ["host:80", "::1:80", "10.0.0.1:99999", "10.0.0.1:x", ""])
def test_bad_monitor_addresses_say_what_is_wrong(text: str) -> None:
    with pytest.raises(UsageError, match="monitor address"):
        parse_monitor_listen(text)


def test_monitor_section_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "hamcastd.toml"
    path.write_text('[monitor]\nlisten = "127.0.0.1:7048"\nname = "h1"\n')
    assert load_config(path).monitor == MonitorConfig("127.0.0.1:7048", "h1")
    assert DaemonConfig().monitor.listen == ""  # off by default
    path.write_text('[monitor]\nlisten = "nowhere"\n')
    with pytest.raises(UsageError, match="nowhere"):
        load_config(path)
    path.write_text("[monitor]\nport = 1\n")
    with pytest.raises(UsageError, match=r"\[monitor\]"):
        load_config(path)


def test_daemon_monitor_flag() -> None:
    args = build_parser().parse_args(["daemon", "--monitor", "7050"])
    assert build_config(args).monitor.listen == "7050"
    args = build_parser().parse_args(["daemon", "--monitor", "unix:/run/x.sock"])
    assert build_config(args).monitor.listen == "unix:/run/x.sock"
    args = build_parser().parse_args(["daemon", "--monitor", "somewhere:1"])
    with pytest.raises(UsageError):
        build_config(args)
    assert build_config(build_parser().parse_args(["daemon"])).monitor.listen == ""


def _daemon_config(tmp_path: Path, listen: str) -> DaemonConfig:
    return DaemonConfig(
        socket=str(tmp_path / "d.sock"), monitor=MonitorConfig(listen=listen, name="unit")
    )


def test_daemon_serves_its_snapshot_read_only(tmp_path: Path) -> None:
    async def run() -> tuple[int, dict[str, Any], int, int]:
        daemon = Daemon(_daemon_config(tmp_path, "127.0.0.1:0"))
        await daemon.start(listen=False)
        try:
            assert daemon.monitor is not None
            url = daemon.monitor.url
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/v1/snapshot") as response:
                    status, body = response.status, await response.json()
                async with http.post(url + "/v1/snapshot") as response:
                    refused = response.status
                async with http.get(url + "/v1/nothing") as response:
                    missing = response.status
        finally:
            await daemon.close()
        assert daemon.monitor is None
        return status, body, refused, missing

    status, body, refused, missing = asyncio.run(run())
    assert status == 200
    assert body["schema"] == SCHEMA and body["host"]["name"] == "unit"
    assert refused == 405
    assert missing == 404


def test_unix_socket_endpoint_and_a_collector_reading_it(tmp_path: Path) -> None:
    """How a collector outside the daemons' network namespaces reaches them (the demo)."""
    path = tmp_path / "monitor.sock"

    async def run() -> tuple[dict[str, Any], int, bool]:
        daemon = Daemon(_daemon_config(tmp_path, f"unix:{path}"))
        await daemon.start(listen=False)
        try:
            assert daemon.monitor is not None and daemon.monitor.url == f"unix:{path}"
            mode = path.stat().st_mode & 0o777
            collector = Collector(CollectorConfig(daemons=[_daemon_url(f"unix:{path}")]))
            await collector.poll_once()
            await collector.close_sessions()
        finally:
            await daemon.close()
        return collector.state, mode, path.exists()

    state, mode, left = asyncio.run(run())
    [daemon] = state["daemons"]
    assert daemon["reachable"] and daemon["name"] == "unit" and daemon["url"] == f"unix:{path}"
    assert mode == 0o660
    assert not left  # removed at close


def test_no_endpoint_unless_configured(tmp_path: Path) -> None:
    async def run() -> object:
        daemon = Daemon(_daemon_config(tmp_path, ""))
        await daemon.start(listen=False)
        await daemon.close()
        return daemon.monitor

    assert asyncio.run(run()) is None


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    async def run() -> None:
        first = Daemon(_daemon_config(tmp_path, "127.0.0.1:0"))
        await first.start(listen=False)
        try:
            assert first.monitor is not None
            taken = first.monitor.url.removeprefix("http://")
            second = Daemon(_daemon_config(tmp_path, taken))
            with pytest.raises(ResourceError, match="monitor endpoint: cannot listen"):
                await second.start(listen=False)
        finally:
            await first.close()

    asyncio.run(run())
