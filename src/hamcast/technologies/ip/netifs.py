"""The host's network interfaces as the ``ip`` technology needs them.

Read from the kernel's own files (``/sys/class/net``, ``/proc/net/if_inet6``)
and one ioctl for IPv4 addresses: what we need is a few fields, so no netlink
library is worth its weight here.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IFF_LOOPBACK", "IFF_MULTICAST", "IFF_UP", "NetInterface", "scan"]

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000

_SIOCGIFADDR = 0x8915
_SYS = Path("/sys/class/net")


@dataclass(frozen=True, slots=True)
class NetInterface:
    """One network interface: kernel index, name, flags, MTU (bytes) and addresses."""

    index: int
    name: str
    flags: int
    mtu: int
    ipv4: tuple[ipaddress.IPv4Address, ...]
    ipv6: tuple[ipaddress.IPv6Address, ...]

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def multicast(self) -> bool:
        """The interface may send and receive multicast (IFF_MULTICAST)."""
        return bool(self.flags & IFF_MULTICAST)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)

    def addresses(self, family: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return self.ipv4 if family == 4 else self.ipv6


def _read_int(path: Path, base: int = 10) -> int | None:
    try:
        return int(path.read_text().strip(), base)
    except (OSError, ValueError):
        return None


def _ipv4_address(name: str) -> tuple[ipaddress.IPv4Address, ...]:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return ()  # EADDRNOTAVAIL: no IPv4 address on this interface
    finally:
        probe.close()
    return (ipaddress.IPv4Address(raw[20:24]),)


def _ipv6_addresses() -> dict[str, list[ipaddress.IPv6Address]]:
    found: dict[str, list[ipaddress.IPv6Address]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            fields = line.split()
            if len(fields) == 6:
                address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                found.setdefault(fields[5], []).append(address)
    for addresses in found.values():
        # Global addresses first: they are the ones to name a host by.
        addresses.sort(key=lambda a: (a.is_link_local, a.packed))
    return found


def scan() -> list[NetInterface]:
    """Every interface the kernel has now, by index."""
    ipv6 = _ipv6_addresses()
    result = []
    for index, name in socket.if_nameindex():
        flags = _read_int(_SYS / name / "flags", 16)
        if flags is None:
            continue  # vanished between listing and reading
        mtu = _read_int(_SYS / name / "mtu") or 1500
        result.append(
            NetInterface(index, name, flags, mtu, _ipv4_address(name), tuple(ipv6.get(name, [])))
        )
    return result
