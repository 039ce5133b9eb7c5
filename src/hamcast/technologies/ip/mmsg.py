"""``sendmmsg`` from Python through ctypes: many datagrams, one system call (Linux).

A ``sendto`` loop costs the interpreter ~4.7 µs per datagram here
(TESTBED-FACTS); one ``sendmmsg`` of up to 64 datagrams pays that once
(docs/performance.md). The structures are also what ``hamcast bench``'s
batched baseline uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BATCH",
    "LIBC",
    "DatagramBatcher",
    "Iovec",
    "Mmsghdr",
    "Msghdr",
    "available",
    "receive_ring",
    "recvmmsg",
]

#: Datagrams per ``sendmmsg`` call.
BATCH = 64

# One struct iovec as raw memory: a pointer and a size_t, native layout.
_IOVEC = struct.Struct("@PN")
# The address of a bytes object's buffer, without ctypes.cast (a foreign call).
_VOID_P_OF = ctypes.c_void_p.from_buffer
_CHAR_P = ctypes.c_char_p


class Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint))


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


LIBC = _libc()


def available() -> bool:
    """Whether this platform's C library has ``sendmmsg`` and ``recvmmsg``."""
    return LIBC is not None and hasattr(LIBC, "sendmmsg") and hasattr(LIBC, "recvmmsg")


def recvmmsg() -> Any:
    """The C library's ``recvmmsg`` with its argument types set (raises ENOSYS without one)."""
    if LIBC is None or not hasattr(LIBC, "recvmmsg"):
        raise OSError(errno.ENOSYS, "no recvmmsg in this C library")
    call = LIBC.recvmmsg
    call.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    call.restype = ctypes.c_int
    return call


def receive_ring(base: int, size: int, count: int) -> tuple[Any, Any]:
    """Iovecs and message headers for ``count`` buffers of ``size`` bytes from address ``base``.

    The caller keeps the memory at ``base`` alive as long as the headers are used.
    """
    iov = (Iovec * count)()
    msgs = (Mmsghdr * count)()
    for index in range(count):
        iov[index].iov_base = base + index * size
        iov[index].iov_len = size
        header = msgs[index].msg_hdr
        header.msg_iov = ctypes.pointer(iov[index])
        header.msg_iovlen = 1
    return iov, msgs


class DatagramBatcher:
    """Sends runs of datagrams to one destination on one UDP socket, 64 per system call."""

    def __init__(self, fd: int) -> None:
        if LIBC is None or not hasattr(LIBC, "sendmmsg"):
            raise OSError(errno.ENOSYS, "no sendmmsg in this C library")
        self._fd = fd
        self._iov = (Iovec * BATCH)()
        self._msgs = (Mmsghdr * BATCH)()
        self._name = ctypes.create_string_buffer(28)  # sockaddr_in6, the larger
        for index in range(BATCH):
            header = self._msgs[index].msg_hdr
            header.msg_iov = ctypes.pointer(self._iov[index])
            header.msg_iovlen = 1
            header.msg_name = ctypes.addressof(self._name)
        self._call = LIBC.sendmmsg
        self._call.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self._call.restype = ctypes.c_int
        self._ptr = ctypes.addressof(self._msgs)
        self._last_name = b""
        # The iovecs written as raw memory: one pack_into per datagram instead
        # of a temporary ctypes object and two attribute writes.
        self._iov_bytes = memoryview(self._iov).cast("B")
        assert _IOVEC.size == ctypes.sizeof(Iovec)

    def send(self, payloads: Sequence[bytes | memoryview], sockaddr: bytes) -> int:
        """Send up to 64 ``payloads`` to ``sockaddr`` (a C sockaddr); how many the kernel took.

        A full send queue (EAGAIN, ENOBUFS) is 0 taken, as a dropped UDP datagram
        is; any other failure raises :class:`OSError` with its errno.
        """
        if len(payloads) > BATCH:
            raise ValueError(f"at most {BATCH} datagrams per call")
        if sockaddr != self._last_name:
            ctypes.memmove(self._name, sockaddr, len(sockaddr))
            for index in range(BATCH):
                self._msgs[index].msg_hdr.msg_namelen = len(sockaddr)
            self._last_name = sockaddr
        count = len(payloads)
        if not count:
            return 0
        # One contiguous copy of the run keeps every buffer alive for the call.
        joined = b"".join(payloads)
        address = _VOID_P_OF(_CHAR_P(joined)).value or 0
        pack_into, iov = _IOVEC.pack_into, self._iov_bytes
        at = 0
        for payload in payloads:
            size = len(payload)
            pack_into(iov, at, address, size)
            address += size
            at += _IOVEC.size
        sent: int = self._call(self._fd, self._ptr, count, 0)
        if sent < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                return 0
            raise OSError(code, f"sendmmsg: {os.strerror(code)}")
        return sent
