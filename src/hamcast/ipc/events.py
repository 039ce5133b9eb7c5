"""What an IPC endpoint reports after reading bytes (one class per frame meaning).

These are ``NamedTuple`` rather than frozen dataclasses on purpose: one
``SendReceived`` or ``DataReceived`` is made per message on the data path,
and a tuple is several times cheaper to build. Payloads are memoryviews into
the bytes that were read; they stay valid as long as they are referenced.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hamcast.errors import HamcastError
from hamcast.ipc.ops import Op

__all__ = [
    "DataReceived",
    "DirectReported",
    "EventReceived",
    "HelloReceived",
    "NameDefined",
    "RequestReceived",
    "ResponseReceived",
    "SendFailed",
    "SendReceived",
    "WelcomeReceived",
]


# --- seen by the daemon -------------------------------------------------------


class HelloReceived(NamedTuple):
    """A client opened its session speaking ``version``; ``pid`` and ``name`` describe it."""

    version: int
    pid: int
    name: str


class RequestReceived(NamedTuple):
    """The client asked for ``op`` with decoded ``args``; answer with ``request_id``."""

    request_id: int
    op: Op
    args: list[Any]


class SendReceived(NamedTuple):
    """The client wants ``payload`` sent on socket ``sock`` to group name id ``group``."""

    sock: int
    group: int
    payload: memoryview


class DirectReported(NamedTuple):
    """Since its last report, socket ``sock`` sent ``sent`` messages (``sent_bytes``) to
    and received ``received`` (``received_bytes``) from group name id ``group`` on its
    direct sockets."""

    sock: int
    group: int
    sent: int
    sent_bytes: int
    received: int
    received_bytes: int


# --- seen by the client -------------------------------------------------------


class WelcomeReceived(NamedTuple):
    """The daemon accepted the session; frames may be up to ``max_frame`` bytes."""

    version: int
    session: int
    max_frame: int
    daemon_version: str


class ResponseReceived(NamedTuple):
    """The answer to ``request_id``: ``results`` on success, else ``error`` is set."""

    request_id: int
    op: Op
    results: list[Any]
    error: HamcastError | None


class NameDefined(NamedTuple):
    """From now on name id ``name_id`` stands for ``text`` (a ``NameKind``)."""

    name_id: int
    kind: int
    text: str


class DataReceived(NamedTuple):
    """A message for socket ``sock``: group and source are name ids."""

    sock: int
    group: int
    source: int
    interface: int
    payload: memoryview


class EventReceived(NamedTuple):
    """A membership event (``hamcast.events.EventKind``) for socket ``sock``.

    ``source`` is a name id, or 0 where the event has no source.
    """

    sock: int
    kind: int
    group: int
    interface: int
    source: int


class SendFailed(NamedTuple):
    """An earlier SEND on ``sock`` to name id ``group`` could not be carried out."""

    sock: int
    group: int
    error: HamcastError
