"""The request operations of the IPC protocol and their signatures.

Each operation has a code (the ``op`` byte of a REQUEST frame), the signature
of its arguments and the signature of its results (see
:mod:`hamcast.ipc.wire` for the codes). docs/ipc.md lists them with their
meaning; this table is the single source both sides encode from.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["OPS", "Op", "OpSpec"]


class Op(enum.IntEnum):
    """Request operation codes. Never renumber: they are on the wire."""

    CREATE_SOCKET = 1
    DELETE_SOCKET = 2
    JOIN = 3
    LEAVE = 4
    SRC_REGISTER = 5
    SRC_DEREGISTER = 6
    GET_INTERFACES = 7
    ADD_INTERFACE = 8
    DEL_INTERFACE = 9
    SET_TTL = 10
    GET_TTL = 11
    ATOMIC_MSG_SIZE = 12
    MAX_MSG_SIZE = 13
    GROUP_SET = 14
    NEIGHBOR_SET = 15
    CHILDREN_SET = 16
    PARENT_SET = 17
    DESIGNATED_HOST = 18
    ENABLE_EVENTS = 19
    DISABLE_EVENTS = 20
    LIST_INTERFACES = 21
    PREPARE_SEND = 22
    STATS = 23
    DAEMON_INFO = 24
    GROUPS = 25
    INTERFACE_STATUS = 26
    GROUP_TABLE = 27
    PREPARE_DIRECT = 28
    RECEIVE_DIRECT = 29


class OpSpec(NamedTuple):
    """Signatures of one operation: what the request carries, what the answer does."""

    args: str
    results: str


OPS: dict[Op, OpSpec] = {
    # ifaces (empty = all) -> socket id
    Op.CREATE_SOCKET: OpSpec("[I]", "I"),
    Op.DELETE_SOCKET: OpSpec("I", ""),
    # socket, group URI
    Op.JOIN: OpSpec("IS", ""),
    Op.LEAVE: OpSpec("IS", ""),
    # socket, group URI -> interfaces where it failed
    Op.SRC_REGISTER: OpSpec("IS", "[I]"),
    Op.SRC_DEREGISTER: OpSpec("IS", "[I]"),
    Op.GET_INTERFACES: OpSpec("I", "[I]"),
    Op.ADD_INTERFACE: OpSpec("II", ""),
    Op.DEL_INTERFACE: OpSpec("II", ""),
    # socket, ttl, ifaces (empty = all of the socket's)
    Op.SET_TTL: OpSpec("IB[I]", ""),
    # socket, iface (0 = the socket's first) -> ttl
    Op.GET_TTL: OpSpec("II", "B"),
    Op.ATOMIC_MSG_SIZE: OpSpec("I", "I"),
    Op.MAX_MSG_SIZE: OpSpec("I", "I"),
    # iface -> (group URI, role flags)
    Op.GROUP_SET: OpSpec("I", "[SB]"),
    Op.NEIGHBOR_SET: OpSpec("I", "[S]"),
    # iface, group URI -> addresses
    Op.CHILDREN_SET: OpSpec("IS", "[S]"),
    Op.PARENT_SET: OpSpec("IS", "[S]"),
    Op.DESIGNATED_HOST: OpSpec("IS", "B"),
    Op.ENABLE_EVENTS: OpSpec("I", ""),
    Op.DISABLE_EVENTS: OpSpec("I", ""),
    # -> (index, name, address, technology)
    Op.LIST_INTERFACES: OpSpec("", "[ISSS]"),
    # socket, group URI -> group name id, max message size for that group
    Op.PREPARE_SEND: OpSpec("IS", "II"),
    # socket -> sent, received, dropped, send_failed
    Op.STATS: OpSpec("I", "QQQQ"),
    # -> daemon version, technologies
    Op.DAEMON_INFO: OpSpec("", "S[S]"),
    # -> (group URI, technology, interface, local listeners, local senders)
    Op.GROUPS: OpSpec("", "[SSIII]"),
    # iface -> JSON object of the technology's diagnostics (discovery verdict, evidence)
    Op.INTERFACE_STATUS: OpSpec("I", "S"),
    # -> JSON object: the group table with each binding's reason, and the gateway's state
    Op.GROUP_TABLE: OpSpec("", "S"),
    # socket, group URI -> as PREPARE_SEND, then whether a direct socket comes with
    # the answer (SCM_RIGHTS) and its destination: address, port, IPv6 scope
    Op.PREPARE_DIRECT: OpSpec("IS", "IIBSHI"),
    # socket, joined group URI -> group name id, whether a direct socket comes with the
    # answer (SCM_RIGHTS), the interface the group is bound on
    Op.RECEIVE_DIRECT: OpSpec("IS", "IBI"),
}
