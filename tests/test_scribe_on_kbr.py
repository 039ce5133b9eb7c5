"""Scribe on the real Pastry KBR (hamcast.overlay.kbr), in the KBR tests' simulated network.

The oracle tests (test_scribe_trees, test_scribe_repair) pin Scribe's own
behaviour; this one checks that it works on the real routing core: one tree
rooted at the closest node, exactly-once delivery, and repair after the root
crashes. Repair here is bounded by KBR's own failure detection (keep-alive
interval plus probes, about 5-11 s with KbrConfig's defaults), not by Scribe.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

from hamcast.overlay.ids import NodeHandle
from hamcast.overlay.kbr import KbrConfig, KbrNode
from hamcast.overlay.scribe import MessageReceived, ScribeNode, canonical_group
from tests.overlay_sim import FakeNetwork, KbrOverlay, SimHost
from tests.scribe_oracle import FAST

GROUP = "ham:opaque:on-kbr"


class Stack:
    """One host: a KbrNode with a ScribeNode on top, driven as one sans-I/O core."""

    def __init__(self, handle: NodeHandle, config: KbrConfig, rng: random.Random) -> None:
        self.kbr = KbrNode(handle, config, rng)
        self.scribe = ScribeNode(self.kbr, FAST)
        self.now = 0.0
        self.events: deque[Any] = deque()

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.now = now
        self.kbr.receive_datagram(data, source, now)

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        return self.kbr.datagrams_to_send()

    def get_timer(self) -> float | None:
        due = [t for t in (self.kbr.get_timer(), self.scribe.get_timer()) if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        self.now = now
        due = self.kbr.get_timer()
        if due is not None and due <= now:
            self.kbr.handle_timer(now)
        self._feed()
        due = self.scribe.get_timer()
        if due is not None and due <= now:
            self.scribe.handle_timer(now)

    def next_event(self) -> Any:
        # The network asks for events before datagrams: move KBR's events
        # into Scribe first, so what Scribe sends goes out in the same pump.
        self._feed()
        return self.events.popleft() if self.events else None

    def _feed(self) -> None:
        while (event := self.kbr.next_event()) is not None:
            self.scribe.handle_kbr_event(event, self.now)
        while (out := self.scribe.next_event()) is not None:
            self.events.append(out)


def received(overlay: KbrOverlay, host: SimHost) -> list[MessageReceived]:
    return [e for h, e in overlay.events if h is host and isinstance(e, MessageReceived)]


def roots(hosts: list[SimHost]) -> list[int]:
    return [
        h.core.kbr.handle.id
        for h in hosts
        if h.alive and h.core.scribe.info(GROUP) is not None and h.core.scribe.parent(GROUP) is None
    ]


def test_scribe_on_the_pastry_kbr_delivers_once_and_survives_its_root() -> None:
    rng = random.Random(5)
    net = FakeNetwork(seed=5)
    overlay = KbrOverlay(net, KbrConfig(), seed=5, core_factory=Stack, kbr_of=lambda c: c.kbr)
    overlay.grow(100, spacing=0.05)
    net.run_for(20.0)
    hosts = overlay.joined()
    assert len(hosts) == 100
    _, key = canonical_group(GROUP)
    members = rng.sample(hosts, 25)
    for host in members:
        net.call(host, lambda now, h=host: h.core.scribe.join(GROUP, now))
    net.run_for(5.0)
    assert roots(hosts) == [overlay.closest(overlay.live_ids(), key)]

    outsiders = [h for h in hosts if h not in members]
    for k, sender in enumerate([*members[:3], *outsiders[:3]]):
        net.call(sender, lambda now, s=sender, k=k: s.core.scribe.multicast(GROUP, b"m%d" % k, now))
    net.run_for(2.0)
    for host in members:
        assert sorted(e.payload for e in received(overlay, host)) == [b"m%d" % k for k in range(6)]

    root = overlay.by_id[roots(hosts)[0]]
    overlay.kill(root)
    survivors = [h for h in members if h is not root]
    sender = next(h for h in outsiders if h is not root)
    for k in range(200):  # 20 s of probes
        net.call(sender, lambda now, k=k: sender.core.scribe.multicast(GROUP, b"p%d" % k, now))
        net.run_for(0.1)
    net.run_for(2.0)
    assert roots(hosts) == [overlay.closest(overlay.live_ids(), key)]
    late = [b"p%d" % k for k in range(180, 200)]  # the last 2 s: the tree is whole again
    for host in survivors:
        payloads = [e.payload for e in received(overlay, host)]
        assert all(p in payloads for p in late)
        ids = Counter((e.source.id, e.sequence) for e in received(overlay, host))
        assert max(ids.values()) == 1
