"""A seeded transit-stub router topology with link delays, and shortest-path delays over it.

The shape follows the GT-ITM transit-stub model (Zegura, Calvert and
Bhattacharjee, "How to model an internetwork", INFOCOM 1996) that the Pastry
and Scribe evaluations used: a few *transit domains* of well-connected
routers joined by long links, and many small *stub domains* each hanging off
one transit router. Overlay nodes sit on stub routers, behind an access link.

Delays are milliseconds. The delay between two routers is the sum of link
delays along the shortest path (Dijkstra from scipy, computed per source
router on demand and cached), which is also what IP multicast's
shortest-path tree from a source gives each receiver.

:meth:`TopologyConfig.paper` is the size the Pastry and Scribe evaluations
used: 5,050 routers (50 transit routers in 10 domains, 10 stub domains of
10 routers on each transit router).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import dijkstra  # type: ignore[import-untyped]

__all__ = ["Topology", "TopologyConfig", "transit_stub"]


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    """The shape of a transit-stub topology; delays are in milliseconds.

    Attributes:
        transit_domains: Number of transit domains (joined in a ring plus one
            chord per domain when there are more than three).
        routers_per_transit: Routers in each transit domain.
        stubs_per_transit_router: Stub domains attached to each transit router.
        routers_per_stub: Routers in each stub domain.
        extra_edge_probability: Chance of each additional random intra-domain
            link beyond the spanning ring (adds path diversity).
        inter_transit_ms: (low, high) delay of a link between transit domains.
        intra_transit_ms: (low, high) delay of a link inside a transit domain.
        transit_stub_ms: (low, high) delay of the link from a stub to its transit router.
        intra_stub_ms: (low, high) delay of a link inside a stub domain.
        access_ms: Delay of the access link between an overlay node and its router.
    """

    transit_domains: int = 4
    routers_per_transit: int = 4
    stubs_per_transit_router: int = 3
    routers_per_stub: int = 4
    extra_edge_probability: float = 0.3
    inter_transit_ms: tuple[float, float] = (20.0, 50.0)
    intra_transit_ms: tuple[float, float] = (5.0, 15.0)
    transit_stub_ms: tuple[float, float] = (2.0, 6.0)
    intra_stub_ms: tuple[float, float] = (1.0, 3.0)
    access_ms: float = 1.0

    @classmethod
    def paper(cls) -> TopologyConfig:
        """5,050 routers, the size of the GT-ITM topology of the Pastry and Scribe papers.

        10 transit domains of 5 routers, 10 stub domains of 10 routers on
        each transit router: 50 + 5,000 routers.
        """
        return cls(
            transit_domains=10,
            routers_per_transit=5,
            stubs_per_transit_router=10,
            routers_per_stub=10,
            extra_edge_probability=0.2,
        )

    @classmethod
    def preset(cls, name: str) -> TopologyConfig:
        """A named size: ``"small"`` (208 routers, the default) or ``"paper"`` (5,050)."""
        if name == "small":
            return cls()
        if name == "paper":
            return cls.paper()
        raise ValueError(f"unknown topology preset {name!r} (small or paper)")


@dataclass(slots=True)
class Topology:
    """Routers, undirected links with delays (ms), and shortest paths computed on demand.

    Shortest paths come from :func:`scipy.sparse.csgraph.dijkstra`, one
    source router at a time when first asked for, and are kept as two numpy
    rows per source (delays as float64, parents as int16): 5,050 routers
    take 50 KB per source router, 250 MB when every router has been a
    source — instead of several GB as Python lists.

    Attributes:
        links: ``links[r]`` lists ``(neighbour, delay_ms)`` for router ``r``.
        stub_routers: Routers in stub domains (where overlay nodes attach).
        transit_routers: Routers in transit domains.
        access_ms: Delay of a host's access link (added at each end of a path).
    """

    links: list[list[tuple[int, float]]]
    stub_routers: list[int]
    transit_routers: list[int]
    access_ms: float
    _graph: Any = None
    _delays: list[Any] = field(default_factory=list)
    _parents: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        count = len(self.links)
        rows, columns, weights = [], [], []
        for router, adjacent in enumerate(self.links):
            for neighbour, delay_ms in adjacent:
                rows.append(router)
                columns.append(neighbour)
                weights.append(delay_ms)
        self._graph = csr_matrix(
            (np.array(weights, dtype=np.float64), (rows, columns)), shape=(count, count)
        )
        self._delays = [None] * count
        self._parents = [None] * count

    @property
    def router_count(self) -> int:
        """Number of routers."""
        return len(self.links)

    @property
    def link_count(self) -> int:
        """Number of (undirected) links."""
        return sum(len(adjacent) for adjacent in self.links) // 2

    def _compute(self, source: int) -> Any:
        delays, parents = dijkstra(
            self._graph, directed=False, indices=source, return_predecessors=True
        )
        # int16 holds any router number of the presets (5,050): half the memory.
        parents = parents.astype(np.int16 if len(self.links) < 1 << 15 else np.int32)
        parents[source] = -1
        self._delays[source] = delays
        self._parents[source] = parents
        return delays

    @property
    def cached_bytes(self) -> int:
        """Memory held by the shortest paths computed so far (bytes)."""
        rows = [row for row in (*self._delays, *self._parents) if row is not None]
        return sum(int(row.nbytes) for row in rows)

    def shortest_paths(self, source: int) -> tuple[list[float], list[int]]:
        """Delay in ms from ``source`` to each router, and each router's parent (-1 at the root).

        The parents form IP multicast's shortest-path tree rooted at
        ``source``. Computed once per source, then cached; the same graph
        always gives the same tree.
        """
        if self._delays[source] is None:
            self._compute(source)
        return self._delays[source].tolist(), self._parents[source].tolist()

    def routers_by_delay(self, source: int) -> list[int]:
        """Every router, nearest to ``source`` first (``source`` itself first)."""
        delays = self._delays[source]
        if delays is None:
            delays = self._compute(source)
        order: list[int] = np.argsort(delays, kind="stable").tolist()
        return order

    def router_delay_ms(self, a: int, b: int) -> float:
        """Shortest-path delay between routers ``a`` and ``b`` (ms)."""
        delays = self._delays[a]
        if delays is None:
            delays = self._compute(a)
        return float(delays.item(b))

    def host_delay_ms(self, a: int, b: int) -> float:
        """One-way delay between hosts attached to routers ``a`` and ``b`` (ms).

        Both access links are crossed, even when the routers are the same.
        """
        delays = self._delays[a]
        if delays is None:
            delays = self._compute(a)
        return float(delays.item(b)) + 2 * self.access_ms

    def path_links(self, a: int, b: int) -> list[tuple[int, int]]:
        """The links (``(lower, higher)`` router pairs) on the shortest path from ``a`` to ``b``."""
        parents = self._parents[a]
        if parents is None:
            self._compute(a)
            parents = self._parents[a]
        links = []
        router = b
        while router != a:
            upper = parents.item(router)
            links.append((router, upper) if router < upper else (upper, router))
            router = upper
        return links

    def attach(self, count: int, rng: random.Random) -> list[int]:
        """Routers for ``count`` overlay nodes: uniformly random stub routers."""
        return [rng.choice(self.stub_routers) for _ in range(count)]


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return round(rng.uniform(low, high), 3)


def _connect_domain(
    routers: list[int],
    links: list[list[tuple[int, float]]],
    rng: random.Random,
    delay: tuple[float, float],
    extra_probability: float,
) -> None:
    """Join ``routers`` by a ring (connected) plus random chords."""
    size = len(routers)
    pairs: set[tuple[int, int]] = set()
    if size == 2:
        pairs.add((routers[0], routers[1]))
    elif size > 2:
        for index, router in enumerate(routers):
            other = routers[(index + 1) % size]
            pairs.add((min(router, other), max(router, other)))
    for i in range(size):
        for j in range(i + 2, size):
            if rng.random() < extra_probability:
                pairs.add((routers[i], routers[j]))
    for a, b in sorted(pairs):
        _link(links, a, b, _uniform(rng, delay))


def _link(links: list[list[tuple[int, float]]], a: int, b: int, delay_ms: float) -> None:
    if any(neighbour == b for neighbour, _ in links[a]):
        return
    links[a].append((b, delay_ms))
    links[b].append((a, delay_ms))


def transit_stub(config: TopologyConfig, seed: int) -> Topology:
    """A connected transit-stub topology, the same for the same ``config`` and ``seed``."""
    if min(config.transit_domains, config.routers_per_transit, config.routers_per_stub) < 1:
        raise ValueError("a transit-stub topology needs at least one router of each kind")
    rng = random.Random(seed)
    links: list[list[tuple[int, float]]] = []

    def new_routers(count: int) -> list[int]:
        start = len(links)
        links.extend([] for _ in range(count))
        return list(range(start, start + count))

    domains = [new_routers(config.routers_per_transit) for _ in range(config.transit_domains)]
    for domain in domains:
        _connect_domain(domain, links, rng, config.intra_transit_ms, config.extra_edge_probability)
    count = len(domains)
    joins: set[tuple[int, int]] = set()
    if count > 1:
        joins.update((i, (i + 1) % count) for i in range(count))
    if count > 3:
        joins.update((i, (i + count // 2) % count) for i in range(count))
    for i, j in sorted(joins):
        _link(
            links,
            rng.choice(domains[i]),
            rng.choice(domains[j]),
            _uniform(rng, config.inter_transit_ms),
        )
    transit = [router for domain in domains for router in domain]
    stubs: list[int] = []
    for gateway in transit:
        for _ in range(config.stubs_per_transit_router):
            stub = new_routers(config.routers_per_stub)
            _connect_domain(stub, links, rng, config.intra_stub_ms, config.extra_edge_probability)
            _link(links, gateway, stub[0], _uniform(rng, config.transit_stub_ms))
            stubs.extend(stub)
    return Topology(
        links=links, stub_routers=stubs, transit_routers=transit, access_ms=config.access_ms
    )
