"""Batched datagram system calls from pure Python: ``sendmmsg`` and ``recvmmsg`` via ctypes.

The batched baseline of ``hamcast bench`` (TESTBED-FACTS: a plain ``sendto``
loop costs ~4.7 µs a datagram in Python; one ``sendmmsg`` of 64 amortises the
interpreter's share). Linux only. The socket must be *blocking* at the file
descriptor level (``settimeout(None)``): Python sockets with a timeout are
non-blocking underneath, which ctypes calls would see as EAGAIN.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

from hamcast.technologies.ip import mmsg
from hamcast.technologies.ip.mmsg import LIBC as _LIBC
from hamcast.technologies.ip.mmsg import Iovec as _Iovec
from hamcast.technologies.ip.mmsg import Mmsghdr as _Mmsghdr

__all__ = ["MSG_WAITFORONE", "BatchReceiver", "BatchSender", "available"]

MSG_WAITFORONE = 0x10000


def available() -> bool:
    """Whether this platform's C library has ``sendmmsg`` and ``recvmmsg``."""
    return mmsg.available()


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


class BatchSender:
    """Sends ``batch`` datagrams per ``sendmmsg`` on a *connected* UDP socket.

    Message 0 of every batch comes from ``first`` and the others from
    ``rest`` (both buffers stay owned by the caller, who may rewrite them
    between calls: the kernel copies at the call).
    """

    def __init__(self, sock: socket.socket, first: bytearray, rest: bytearray, batch: int = 64):
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "no C library for sendmmsg")
        self._fd = sock.fileno()
        self._batch = batch
        self._first = (ctypes.c_char * len(first)).from_buffer(first)
        self._rest = (ctypes.c_char * len(rest)).from_buffer(rest)
        self._iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        for index in range(batch):
            buffer = self._first if index == 0 else self._rest
            self._iov[index].iov_base = ctypes.addressof(buffer)
            self._iov[index].iov_len = len(buffer)
            header = self._msgs[index].msg_hdr
            header.msg_iov = ctypes.pointer(self._iov[index])
            header.msg_iovlen = 1
        self._call = _LIBC.sendmmsg
        self._call.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self._call.restype = ctypes.c_int
        self._msgs_ptr = ctypes.addressof(self._msgs)

    def send(self, count: int | None = None) -> int:
        """Send one batch (or the first ``count`` of it); returns how many the kernel took."""
        vlen = self._batch if count is None else min(count, self._batch)
        sent: int = self._call(self._fd, self._msgs_ptr, vlen, 0)
        if sent < 0:
            if ctypes.get_errno() in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                return 0
            _raise_errno("sendmmsg")
        return sent


class BatchReceiver:
    """Receives up to ``batch`` datagrams per ``recvmmsg`` into preallocated buffers."""

    def __init__(self, sock: socket.socket, size: int, batch: int = 64) -> None:
        self._call = mmsg.recvmmsg()
        self._fd = sock.fileno()
        self.batch = batch
        self.size = size
        self.buffer = bytearray(size * batch)
        self._store = (ctypes.c_char * len(self.buffer)).from_buffer(self.buffer)
        self._iov, self._msgs = mmsg.receive_ring(ctypes.addressof(self._store), size, batch)
        self._msgs_ptr = ctypes.addressof(self._msgs)

    def receive(self) -> int:
        """Wait for at least one datagram; how many arrived (0 on SO_RCVTIMEO expiry)."""
        got: int = self._call(self._fd, self._msgs_ptr, self.batch, MSG_WAITFORONE, None)
        if got < 0:
            if ctypes.get_errno() in (errno.EAGAIN, errno.EINTR):
                return 0
            _raise_errno("recvmmsg")
        return got

    def length(self, index: int) -> int:
        """Bytes of the ``index``-th datagram of the last batch."""
        return int(self._msgs[index].msg_len)
