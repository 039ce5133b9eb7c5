"""``hamcast monitor``: poll daemons' monitoring endpoints, merge, serve the dashboard.

The :class:`Collector` polls every known endpoint each ``interval_s``
(concurrently, each bounded by ``timeout_s``), merges the answers with
:func:`hamcast.monitor.graph.merge`, and publishes the result to the web page
over server-sent events. Endpoints come from ``--daemon`` URLs, from the
hamcast peers the polled daemons heard on their links (their monitoring port
guessed as ``peer_port``), and, opt-in, from announcements heard on named
interfaces (:mod:`hamcast.monitor.announcements`).

HTTP routes of the dashboard::

    /                   the page (static/index.html)
    /static/NAME        the page's own script and style
    /vendor/cytoscape.min.js   the graph library, from the npm install (docs/monitor.md)
    /api/               everything: groups, one graph per group, daemons, counter history
    /api/graph?group=G  one group's graph
    /api/daemons        the polled endpoints and what they answered
    /api/events         server-sent events: "state" with the /api/ document on every change
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from hamcast.config import MONITOR_PORT, parse_monitor_listen
from hamcast.errors import ResourceError
from hamcast.monitor.announcements import monitor_url, open_listener, peer_monitor_url
from hamcast.monitor.graph import Source, daemon_summaries, group_names, merge

__all__ = ["Collector", "CollectorConfig", "find_cytoscape"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
GRAPH_SCHEMA = "hamcast.monitor.graph/1"
#: Where ``make setup`` (npm ci in web/) puts cytoscape.js, relative to the repository.
_REPO = Path(__file__).resolve().parents[3]
CYTOSCAPE_CANDIDATES = (_REPO / "web" / "node_modules" / "cytoscape" / "dist" / "cytoscape.min.js",)
#: Largest snapshot accepted from a daemon (bytes); bigger answers are errors.
MAX_SNAPSHOT = 8 << 20


def find_cytoscape(assets: Path | None = None) -> Path | None:
    """The cytoscape.js file: ``assets``/cytoscape.min.js if given, else the npm install."""
    candidates = [assets / "cytoscape.min.js"] if assets is not None else []
    candidates += list(CYTOSCAPE_CANDIDATES)
    return next((c for c in candidates if c.is_file()), None)


@dataclass(slots=True)
class CollectorConfig:
    """``hamcast monitor``'s settings."""

    #: ``ADDRESS:PORT`` of the dashboard (``PORT`` alone: loopback).
    listen: str = "127.0.0.1:7049"
    #: Monitoring endpoint URLs to poll (``http://ADDRESS:PORT`` or ``unix:PATH``).
    daemons: list[str] = field(default_factory=list)
    #: Seconds between two polls of every endpoint.
    interval_s: float = 1.0
    #: Seconds one poll may take before it counts as failed.
    timeout_s: float = 2.0
    #: Also poll the hamcast peers the polled daemons heard on their links.
    follow_peers: bool = True
    #: The monitoring port guessed for peers and announcers.
    peer_port: int = MONITOR_PORT
    #: Interfaces to hear announcements on (joins 224.0.0.254 there); none by default.
    announcements: list[str] = field(default_factory=list)
    #: Endpoints polled at most (configured ones always count).
    max_daemons: int = 256
    #: Samples of counter history kept per daemon.
    history: int = 120
    #: Folder holding cytoscape.min.js, instead of the npm install.
    assets: Path | None = None


class Collector:
    """Polls, merges, publishes. :meth:`start` / :meth:`stop`, or :meth:`run` until cancelled."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.sources: dict[str, Source] = {}
        self._discovered: set[str] = set()
        self._history: dict[str, deque[list[float | None]]] = {}
        self._state: dict[str, Any] = self._document()
        self._version = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._unix: dict[str, aiohttp.ClientSession] = {}
        self._listener: asyncio.DatagramTransport | None = None
        self._subscribers = 0
        self.url = ""
        for url in config.daemons:
            self.add(url)

    # --- sources -------------------------------------------------------------------

    def add(self, url: str, *, discovered: bool = False) -> bool:
        """Poll ``url`` from now on; False if known or the bound is reached."""
        url = url.rstrip("/")
        if url in self.sources:
            return False
        if discovered:
            if len(self.sources) >= self.config.max_daemons:
                return False
            self._discovered.add(url)
            logger.info("monitor: found %s", url)
        self.sources[url] = Source(url)
        return True

    def _session(self, url: str) -> tuple[aiohttp.ClientSession, str]:
        """The HTTP session for ``url`` and the URL to ask it (Unix sockets get their own)."""
        if not url.startswith("unix:"):
            assert self._http is not None
            return self._http, url
        path = url.removeprefix("unix:")
        session = self._unix.get(path)
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
            self._unix[path] = session
        return session, "http://localhost"

    async def _poll(self, url: str) -> None:
        source = self.sources[url]
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            http, base = self._session(url)
            async with http.get(base + "/v1/snapshot", timeout=timeout) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await response.content.read(MAX_SNAPSHOT + 1)
                if len(body) > MAX_SNAPSHOT:
                    raise ValueError("snapshot too large")
                snapshot = json.loads(body)
                if not isinstance(snapshot, dict) or not str(snapshot.get("schema", "")).startswith(
                    "hamcast.monitor.snapshot/"
                ):
                    raise ValueError("not a hamcast monitoring endpoint")
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            source.reachable = False
            source.error = str(exc) or type(exc).__name__
            return
        source.snapshot = snapshot
        source.reachable = True
        source.error = None
        counters = snapshot.get("counters") or {}
        history = self._history.setdefault(url, deque(maxlen=self.config.history))
        history.append(
            [
                snapshot.get("time"),
                counters.get("messages_in"),
                counters.get("messages_out"),
                counters.get("drops"),
                counters.get("bytes_in"),
                counters.get("bytes_out"),
            ]
        )

    def _follow_peers(self) -> None:
        for source in list(self.sources.values()):
            if not source.reachable or source.snapshot is None:
                continue
            for iface in source.snapshot.get("interfaces", []):
                if iface.get("technology") != "ip":
                    continue
                for peer in (iface.get("status") or {}).get("peers", []):
                    try:
                        address = ipaddress.ip_address(str(peer.get("address")))
                    except ValueError:
                        continue
                    if address.version == 6 and address.is_link_local:
                        continue  # unreachable without a zone; its IPv4 twin is polled
                    monitor = str(peer.get("monitor") or "")
                    url = peer_monitor_url(monitor, str(address), self.config.peer_port)
                    self.add(url, discovered=True)

    async def poll_once(self) -> None:
        """Poll every endpoint once, then merge and publish."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        await asyncio.gather(*(self._poll(url) for url in list(self.sources)))
        if self.config.follow_peers:
            self._follow_peers()
        await self._publish()

    # --- the merged document --------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        # Endpoints found by discovery that never answered are noise, not news.
        shown = [
            s
            for s in self.sources.values()
            if s.snapshot is not None or s.url not in self._discovered
        ]
        return {
            "schema": GRAPH_SCHEMA,
            "time": time.time(),
            "groups": group_names(shown),
            "graphs": merge(shown),
            "daemons": daemon_summaries(shown),
            "history": {
                url: list(samples) for url, samples in self._history.items() if url in self.sources
            },
            "history_columns": [
                "time",
                "messages_in",
                "messages_out",
                "drops",
                "bytes_in",
                "bytes_out",
            ],
        }

    async def _publish(self) -> None:
        self._state = self._document()
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    @property
    def state(self) -> dict[str, Any]:
        """The last merged document (what ``/api/`` serves)."""
        return self._state

    # --- web ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/vendor/cytoscape.min.js", self._cytoscape)
        app.router.add_get("/api/", self._api)
        app.router.add_get("/api", self._api)
        app.router.add_get("/api/graph", self._api_graph)
        app.router.add_get("/api/daemons", self._api_daemons)
        app.router.add_get("/api/events", self._events)
        return app

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def _cytoscape(self, request: web.Request) -> web.StreamResponse:
        path = find_cytoscape(self.config.assets)
        if path is None:
            # The page shows this text instead of a graph.
            return web.Response(
                status=404,
                text="cytoscape.js is not installed: run `make setup` (npm ci in web/)",
            )
        return web.FileResponse(path)

    async def _api(self, request: web.Request) -> web.Response:
        return web.json_response(self._state)

    async def _api_graph(self, request: web.Request) -> web.Response:
        group = request.query.get("group", "")
        graph = self._state["graphs"].get(group)
        if graph is None:
            raise web.HTTPNotFound(text=f"no group {group!r}; known: {self._state['groups']}")
        return web.json_response(graph)

    async def _api_daemons(self, request: web.Request) -> web.Response:
        return web.json_response(self._state["daemons"])

    async def _wait_change(self, seen: int, timeout: float = 15.0) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: seen != self._version), timeout
                )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self._subscribers >= 64:
            raise web.HTTPServiceUnavailable(text="too many dashboards open")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        self._subscribers += 1
        try:
            seen = -1
            while True:
                if seen == self._version:
                    await self._wait_change(seen)
                    if seen == self._version:
                        # A comment on an idle stream keeps proxies from closing it.
                        await response.write(b": idle\n\n")
                        continue
                seen = self._version
                data = json.dumps(self._state, separators=(",", ":"))
                await response.write(f"event: state\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._subscribers -= 1
        return response

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the dashboard, start polling (and hearing announcements, if asked)."""
        address, port = parse_monitor_listen(self.config.listen)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, address, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ResourceError(f"cannot listen on {self.config.listen}: {exc.strerror}") from None
        self._runner = runner
        bound = runner.addresses[0][1] if runner.addresses else port
        where = f"[{address}]" if ":" in address else address
        self.url = f"http://{where}:{bound}"
        self._http = aiohttp.ClientSession()
        if self.config.announcements:
            await self._hear_announcements()
        self._tasks.append(asyncio.create_task(self._poll_forever(), name="monitor-poll"))

    async def _poll_forever(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.poll_once()
            except Exception:
                logger.exception("monitor: a poll round failed")
            await asyncio.sleep(max(0.05, self.config.interval_s - (time.monotonic() - began)))

    async def _hear_announcements(self) -> None:
        try:
            sock = open_listener(self.config.announcements)
        except OSError as exc:
            raise ResourceError(
                f"cannot hear announcements on {', '.join(self.config.announcements)}:"
                f" {exc.strerror or exc}"
            ) from None
        collector = self

        class Heard(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                found = monitor_url(data[:512], str(addr[0]), collector.config.peer_port)
                if found is not None:
                    collector.add(found[1], discovered=True)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Heard, sock=sock)
        self._listener = transport

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
            self._runner = None
        await self.close_sessions()

    async def close_sessions(self) -> None:
        """Close the HTTP client sessions (:meth:`stop` does; for :meth:`poll_once` alone)."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        for session in self._unix.values():
            await session.close()
        self._unix.clear()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """:meth:`start`, then wait until cancelled, then :meth:`stop`."""
        await self.start()
        try:
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            await self.stop()
