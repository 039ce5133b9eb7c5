"""Inter-domain multicast gateway (IMG): bridges groups between native multicast and the overlay.

See :class:`hamcast.gateway.bridge.Gateway` and docs/hybrid.md.
"""

from __future__ import annotations

from hamcast.gateway.bridge import Bridge, Gateway
from hamcast.gateway.echo import EchoFilter

__all__ = ["Bridge", "EchoFilter", "Gateway"]
