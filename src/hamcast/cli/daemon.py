"""``hamcast daemon`` (and ``hamcastd``): build a :class:`DaemonConfig` and run the daemon.

Settings come, weakest first, from the defaults, the ``--config`` TOML file,
then the flags. The socket path is the one exception: ``$HAMCAST_SOCKET``
beats the file's ``socket`` (only ``--socket`` beats it), because clients
read only the variable, and setting it must point daemon and clients at the
same place (docs/operations.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hamcast.config import SOCKET_ENV, DaemonConfig, load_config, parse_monitor_listen
from hamcast.errors import UsageError

__all__ = ["LOG_LEVELS", "build_config", "daemon_command"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _technologies(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"--technologies takes comma-separated names, not {text!r}")
    return names


def build_config(args: argparse.Namespace) -> DaemonConfig:
    """The daemon's configuration: the file's (or the defaults), then the flags.

    The socket path: ``--socket``, else ``$HAMCAST_SOCKET``, else the file's,
    else the per-user default.
    """
    config = load_config(args.config) if args.config is not None else DaemonConfig()
    if args.socket is not None:
        config.socket = args.socket
    elif os.environ.get(SOCKET_ENV):
        config.socket = os.environ[SOCKET_ENV]
    if args.technologies is not None:
        config.technologies = _technologies(args.technologies)
    overlay = config.technology_options.setdefault("overlay", {})
    if args.overlay_listen is not None:
        overlay["listen"] = args.overlay_listen
    if args.overlay_bootstrap:
        overlay["bootstrap"] = list(args.overlay_bootstrap)
    monitor = getattr(args, "monitor", None)
    if monitor is not None:
        if not monitor.startswith("unix:"):
            parse_monitor_listen(monitor)  # a bad address is a usage error before anything starts
        config.monitor.listen = monitor
    return config


def daemon_command(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    if args.embedded is not None:
        raise UsageError("--embedded and --daemon-only are for client commands, not `daemon`")
    config = build_config(args)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported here: the client commands should not pay for loading the
    # daemon, its event loop and every technology module.
    from hamcast.daemon.server import run

    return run(config)
