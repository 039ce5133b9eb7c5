"""The ``ip`` technology: native IPv4/IPv6 multicast (see :mod:`.module`)."""

from __future__ import annotations

from hamcast.technologies.ip.module import IpTechnology

__all__ = ["IpTechnology"]
