"""How the command line shows API values: JSON objects for programs, rich text for people.

Every command prints through one :class:`Output`. ``--json`` output is plain
:mod:`json` written straight to standard output, never through rich, so no
markup, colour or line wrapping can creep into what programs parse. Streams
(``recv``, ``events``) print one compact JSON object per line; every other
command prints one indented JSON document. docs/cli.md specifies the shapes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hamcast.core.middleware import GroupInfo
from hamcast.events import (
    BindingChanged,
    Event,
    InterfaceChanged,
    MemberJoined,
    MemberLeft,
    SourceAppeared,
)
from hamcast.mapping import GroupMapping
from hamcast.model import Interface, Message
from hamcast.uri import URI

__all__ = [
    "Output",
    "event_json",
    "event_text",
    "group_info_json",
    "interface_json",
    "mapping_json",
    "message_json",
    "payload_json",
    "payload_preview",
]

#: Characters of a text payload shown on one human-readable line.
_PREVIEW_CHARS = 200
#: Bytes of a binary payload shown (as hex) on one human-readable line.
_PREVIEW_BYTES = 32


class Output:
    """Where a command's results, notes and status lines go.

    Results go to standard output: JSON when ``json_mode``, else rich text.
    Notes and status lines go to standard error, prefixed ``hamcast:``, so
    they never mix with results; ``quiet`` silences them.
    """

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The rich console on standard output, made on first use."""
        if self._console is None:
            # highlight=False: rich would otherwise colour numbers and
            # addresses inside payloads and group names at random.
            # markup=False: group names like ham:ip:[ff15::1]:5000 must print as written.
            self._console = Console(file=sys.stdout, highlight=False, markup=False)
        return self._console

    def json_document(self, value: Any) -> None:
        """Print one JSON document (lists and tables)."""
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
        sys.stdout.flush()

    def json_line(self, value: Any) -> None:
        """Print one JSON object on one line and flush, for streams read as they come."""
        sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def table(self, table: Table) -> None:
        self.console.print(table)

    def line(self, text: Text | str) -> None:
        """Print one unwrapped line of human output and flush it at once."""
        # soft_wrap: a long payload stays on its own line, greppable, instead
        # of being folded at the terminal width.
        self.console.print(text, soft_wrap=True)
        sys.stdout.flush()

    def status(self, message: str) -> None:
        """A line on standard error for the person watching (not for programs)."""
        if not self.quiet:
            sys.stderr.write(f"hamcast: {message}\n")
            sys.stderr.flush()

    def note(self, message: str) -> None:
        """Like :meth:`status`, for something the user may not expect."""
        self.status(f"note: {message}")


# --- JSON shapes -------------------------------------------------------------------


def interface_json(iface: Interface, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """An interface; ``status`` is its technology's ``interface_status()`` (discovery etc.)."""
    return {
        "index": iface.index,
        "name": iface.name,
        "address": iface.address,
        "technology": iface.technology,
        "status": status if status is not None else {},
    }


def group_info_json(info: GroupInfo) -> dict[str, Any]:
    return {**dataclasses.asdict(info), "group": str(info.group)}


def payload_json(payload: bytes) -> dict[str, str]:
    """``payload`` as text when it is UTF-8, else base64, with ``encoding`` saying which."""
    try:
        return {"encoding": "utf-8", "payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "payload": base64.b64encode(payload).decode("ascii")}


def message_json(message: Message, technology: str | None) -> dict[str, Any]:
    return {
        "group": str(message.group),
        "source": message.source,
        "interface": message.interface,
        "technology": technology,
        "size": len(message.payload),
        **payload_json(message.payload),
    }


#: Event names in JSON output: RFC 7046's join_event, leave_event and new_source_event
#: without the ``_event``.
_EVENT_NAMES: dict[type[Any], str] = {
    MemberJoined: "join",
    MemberLeft: "leave",
    SourceAppeared: "new_source",
    InterfaceChanged: "interface_changed",
    BindingChanged: "binding_changed",
}


def event_json(event: Event, technology: str | None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "event": _EVENT_NAMES[type(event)],
        "interface": event.interface,
        "technology": technology,
    }
    if isinstance(event, InterfaceChanged):
        value["status"] = event.status
    else:
        value["group"] = str(event.group)
    if isinstance(event, SourceAppeared):
        value["source"] = event.source
    if isinstance(event, BindingChanged):
        value["reason"] = event.reason
    return value


def mapping_json(uri: URI, mapping: GroupMapping) -> dict[str, Any]:
    return {
        "uri": str(uri),
        "name": uri.name,
        "parts": {
            "namespace": uri.namespace,
            "group": uri.group,
            "instantiation": uri.instantiation,
            "port": uri.port,
            "credentials": uri.credentials,
            "wildcard": uri.is_wildcard,
            "ssm": uri.is_ssm,
        },
        "mapping": {
            "overlay_key": f"{mapping.overlay_key:032x}",
            "ipv4": str(mapping.ipv4),
            "ipv6": str(mapping.ipv6),
            "port": mapping.port,
            "source": None if mapping.source is None else str(mapping.source),
        },
    }


# --- human text --------------------------------------------------------------------


def payload_preview(payload: bytes) -> str:
    """A one-line, printable rendering of a payload for people."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        shown = payload[:_PREVIEW_BYTES].hex(" ")
        more = " ..." if len(payload) > _PREVIEW_BYTES else ""
        return f"<binary {shown}{more}>"
    # Escape control characters so a payload can neither break the line
    # structure nor send escape sequences to the terminal.
    shown = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text[:_PREVIEW_CHARS]
    )
    return shown + ("..." if len(text) > _PREVIEW_CHARS else "")


def event_text(event: Event, where: str) -> Text:
    """One human-readable line for an event; ``where`` names the interface."""
    name = _EVENT_NAMES[type(event)]
    if isinstance(event, InterfaceChanged):
        return Text.assemble((f"{name:<10}", "bold"), f" {where} is now {event.status}")
    text = Text.assemble((f"{name:<10}", "bold"), " ", str(event.group), (f"  on {where}", "dim"))
    if isinstance(event, SourceAppeared):
        text.append(f"  source {event.source}", style="cyan")
    if isinstance(event, BindingChanged):
        text.append(f"  now: {event.reason}", style="cyan")
    return text
