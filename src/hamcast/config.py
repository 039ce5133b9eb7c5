"""Typed configuration: one dataclass per layer, loaded from TOML by the daemon.

Cores never read the environment; the command line and :func:`load_config`
build these objects and pass them in. Units are in the field names or docs.

A config file looks like::

    socket = "/run/hamcast/hamcastd.sock"
    technologies = ["local"]

    [core]
    default_ttl = 1

    [session]
    queue_messages = 4096

    [technology.local]
    max_msg_size = 65507

    [monitor]           # off unless listen is set (docs/monitor.md)
    listen = "127.0.0.1:7048"
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hamcast.errors import UsageError

__all__ = [
    "CoreConfig",
    "DaemonConfig",
    "MonitorConfig",
    "SessionConfig",
    "default_socket_path",
    "load_config",
    "parse_monitor_listen",
]

#: Environment variable that overrides the IPC socket path, for daemon and clients.
SOCKET_ENV = "HAMCAST_SOCKET"


SYSTEM_SOCKET = "/run/hamcast/hamcastd.sock"


def default_socket_path(*, client: bool = False) -> str:
    """The IPC socket path: ``$HAMCAST_SOCKET``, else a per-user runtime path.

    Root uses ``/run/hamcast/hamcastd.sock``; other users
    ``$XDG_RUNTIME_DIR/hamcast/hamcastd.sock``, falling back to
    ``/tmp/hamcast-UID/hamcastd.sock`` when no runtime directory is set. A
    ``client`` of another user whose own path has no socket uses the system
    daemon's path when that one exists.
    """
    env = os.environ.get(SOCKET_ENV)
    if env:
        return env
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "hamcast" if runtime else Path(f"/tmp/hamcast-{os.geteuid()}")
    own = str(base / "hamcastd.sock")
    if client and not os.path.exists(own) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return own


@dataclass(slots=True)
class CoreConfig:
    """The middleware core's limits and defaults."""

    #: TTL / hop limit of a new socket on every interface.
    default_ttl: int = 1
    #: Sockets one session may hold open.
    max_sockets_per_session: int = 1024
    #: Groups one socket may join or send to.
    max_groups_per_socket: int = 4096
    #: Distinct sources remembered per group for new-source events (LRU).
    sources_per_group: int = 256
    #: Technology selection order (docs/hybrid.md): a group is bound to the first
    #: technology in this list whose interface is usable now; technologies not
    #: listed come last, in the order they were enabled.
    preference: list[str] = field(default_factory=lambda: ["ip", "overlay", "local"])
    #: Be a gateway candidate where a native interface and ``gateway_to`` meet
    #: (docs/hybrid.md).
    gateway: bool = True
    #: The technology gateways bridge native multicast domains to.
    gateway_to: str = "overlay"
    #: TTL / hop limit of what a gateway sends into its native domain.
    gateway_ttl: int = 16
    #: Own copies a gateway waits for to drop them (the echo filter's bound).
    gateway_echo_entries: int = 4096
    #: The direct data path (docs/performance.md): applications send natively
    #: themselves, on a socket the daemon configured and passed them, where the
    #: bound technology offers one (``ip``); off, every message passes the daemon.
    direct: bool = True

    def __post_init__(self) -> None:
        if not all(isinstance(name, str) for name in self.preference):
            raise UsageError("[core] preference must be a list of technology names")


@dataclass(slots=True)
class SessionConfig:
    """Per-client-session limits of the daemon (flow control)."""

    #: Messages queued per socket while the client does not read; beyond, drops.
    queue_messages: int = 4096
    #: Bytes queued per socket while the client does not read; beyond, drops.
    queue_bytes: int = 8 << 20
    #: Transport write buffer (bytes) above which the daemon stops writing and queues.
    write_high_water: int = 1 << 20
    #: Distinct names (groups, sources) one session's name table holds.
    max_names: int = 16384


@dataclass(slots=True)
class MonitorConfig:
    """The daemon's read-only HTTP monitoring endpoint (docs/monitor.md); off by default."""

    #: ``ADDRESS:PORT`` to serve on (``PORT`` alone means loopback), or ``unix:PATH``
    #: for a Unix socket (mode 0660); "" = off.
    listen: str = ""
    #: The host's name in the dashboard (default: the machine's host name).
    name: str = ""


#: The monitoring endpoint's port when none is given (docs/monitor.md).
MONITOR_PORT = 7048


def parse_monitor_listen(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT``, ``[IPv6]:PORT`` or ``PORT`` (loopback) as (address, port)."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"monitor address {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    host = host or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"monitor address {text!r} is not ADDRESS:PORT (port 0 to 65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"monitor address {text!r}: {host!r} is not an IP address") from None
    return host, int(port_text)


@dataclass(slots=True)
class DaemonConfig:
    """Everything ``hamcastd`` needs to start."""

    socket: str = field(default_factory=default_socket_path)
    #: Unix permission bits of the IPC socket file.
    socket_mode: int = 0o660
    technologies: list[str] = field(default_factory=lambda: ["local"])
    #: Per-technology option tables, ``[technology.NAME]`` in TOML.
    technology_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    core: CoreConfig = field(default_factory=CoreConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


def _fill(cls: type[Any], table: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UsageError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    for key, value in table.items():
        wanted = type(getattr(cls(), key))
        if not isinstance(value, wanted) or isinstance(value, bool) != (wanted is bool):
            raise UsageError(f"[{where}] {key} must be {wanted.__name__}, got {value!r}")
    return cls(**table)


def load_config(path: str | Path) -> DaemonConfig:
    """Read a TOML config file; every mistake is a UsageError naming the key."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from None
    config = DaemonConfig()
    sections = {"core", "session", "technology", "monitor"}
    for key, value in data.items():
        if key in sections:
            continue
        if key == "socket" and isinstance(value, str):
            config.socket = value
        elif key == "socket_mode" and isinstance(value, int):
            config.socket_mode = value
        elif (
            key == "technologies"
            and isinstance(value, list)
            and all(isinstance(v, str) for v in value)
        ):
            config.technologies = list(value)
        else:
            raise UsageError(f"config {path}: bad or unknown top-level key {key!r}")
    options = data.get("technology", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise UsageError(f"config {path}: [technology.NAME] sections must be tables")
    config.technology_options = options
    if "core" in data:
        config.core = _fill(CoreConfig, data["core"], "core")
    if "session" in data:
        config.session = _fill(SessionConfig, data["session"], "session")
    if "monitor" in data:
        config.monitor = _fill(MonitorConfig, data["monitor"], "monitor")
        if config.monitor.listen and not config.monitor.listen.startswith("unix:"):
            parse_monitor_listen(config.monitor.listen)  # a bad address fails at load
    if not config.technologies:
        raise UsageError(f"config {path}: no technologies enabled")
    return config
