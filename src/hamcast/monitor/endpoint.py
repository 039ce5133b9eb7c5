"""The daemon's read-only HTTP JSON monitoring endpoint (off by default).

Served by aiohttp on the daemon's own event loop, beside the IPC socket; it
only reads the core, between two IPC messages, so it needs no locking. Routes
(all ``GET``; any other method is 405)::

    /              {"schema": ..., "snapshot": "/v1/snapshot"}: what is here
    /v1/snapshot   the snapshot document (hamcast.monitor.snapshot)

It listens where ``[monitor] listen`` (or ``hamcast daemon --monitor``) says:
loopback unless an address is chosen, or a Unix socket (``unix:PATH``, mode
0660) that a collector on the same machine reaches whatever network namespace
the daemon is in. Anyone who reaches the port can read
the host's groups and peers, nothing more: there is no write route.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hamcast import __version__
from hamcast.config import MonitorConfig, parse_monitor_listen
from hamcast.errors import ResourceError, UsageError
from hamcast.monitor.snapshot import SCHEMA, take_snapshot

__all__ = ["MonitorEndpoint"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Host:
    name: str
    instance: str = field(default_factory=lambda: secrets.token_hex(8))
    pid: int = field(default_factory=os.getpid)
    version: str = __version__
    started: float = field(default_factory=time.time)


class MonitorEndpoint:
    """One HTTP listener serving snapshots of ``middleware``.

    :meth:`start` binds (a bind failure is a :class:`ResourceError` naming the
    address); :meth:`stop` closes the listener and every open request.
    """

    def __init__(self, middleware: Any, config: MonitorConfig) -> None:
        self.middleware = middleware
        self.config = config
        self.host = _Host(config.name or socket.gethostname())
        self._runner: web.AppRunner | None = None
        self._path = ""
        #: ``http://ADDRESS:PORT`` once started (the port the kernel chose for port 0).
        self.url = ""

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/v1/snapshot", self._snapshot)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        return _json({"schema": SCHEMA, "snapshot": "/v1/snapshot"})

    async def _snapshot(self, request: web.Request) -> web.Response:
        return _json(take_snapshot(self.middleware, self.host, time.time()))

    async def start(self) -> None:
        listen = self.config.listen
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site: web.BaseSite
        if listen.startswith("unix:"):
            path = listen.removeprefix("unix:")
            if not path:
                raise UsageError("monitor address unix: needs a path, e.g. unix:/run/hamcast/mon")
            _remove_stale(path)
            site = web.UnixSite(runner, path)
        else:
            address, port = parse_monitor_listen(listen)
            site = web.TCPSite(runner, address, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ResourceError(
                f"monitor endpoint: cannot listen on {listen}: {exc.strerror}"
            ) from None
        self._runner = runner
        if listen.startswith("unix:"):
            self._path = listen.removeprefix("unix:")
            os.chmod(self._path, 0o660)
            self.url = listen
        else:
            bound = runner.addresses[0][1] if runner.addresses else port
            where = f"[{address}]" if ":" in address else address
            self.url = f"http://{where}:{bound}"
        logger.info("monitor endpoint at %s /v1/snapshot (read-only)", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = ""


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody answers on; refuse anything else that is there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"monitor address unix:{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: its daemon died without cleaning up
    else:
        raise ResourceError(f"monitor endpoint: another process serves unix:{path}")
    finally:
        probe.close()


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps(document, separators=(",", ":")),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
