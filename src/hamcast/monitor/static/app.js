// hamcast monitor dashboard: draws the collector's merged graph of one group and
// keeps it live from /api/events (server-sent events). No build step, no CDN:
// cytoscape.js is served by the collector from the project's npm install.
"use strict";

const COLORS = {
  overlay: "#f59e0b", native: "#22d3ee", gateway: "#e879f9", local: "#a3e635",
  root: "#facc15", host: "#1e293b", text: "#e2e8f0", dim: "#8a98b3", bad: "#f87171",
};

const state = {
  doc: null, group: null, drawnGroup: null, selected: null, cy: null, shape: "", connected: false,
};

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function hostLabel(d) {
  if (d.kind === "link") return `${d.label} · ${d.verdict || "unknown"}`;
  if (d.kind !== "host") return d.label;
  const tags = [];
  if (d.root) tags.push("★ root");
  if (d.gateway) tags.push("⇄ gateway");
  if (d.designated) tags.push("designated");
  const role = d.role && d.role !== "none" ? d.role : "";
  return [d.label, [role, ...tags].filter(Boolean).join(" · ")].filter(Boolean).join("\n");
}

function mainTechnology(d) {
  if (d.kind === "link" || d.kind === "router") return "ip";
  const techs = d.technologies || (d.technology ? [d.technology] : []);
  if (techs.includes("overlay")) return "overlay";
  if (techs.includes("ip")) return "ip";
  if (techs.includes("local")) return "local";
  return "";
}

function styles() {
  return [
    { selector: "node", style: {
      "label": "data(display)", "color": COLORS.text, "font-size": 11, "text-wrap": "wrap",
      "text-valign": "bottom", "text-margin-y": 7, "text-background-color": "#0b1020",
      "text-background-opacity": 0.78, "text-background-shape": "roundrectangle",
      "text-background-padding": 3, "background-color": COLORS.host, "border-width": 3,
      "border-color": COLORS.dim, "width": 38, "height": 38,
      "transition-property": "border-color, background-color, opacity", "transition-duration": "300ms",
    } },
    { selector: "node[tech = 'overlay']", style: { "border-color": COLORS.overlay } },
    { selector: "node[tech = 'ip']", style: { "border-color": COLORS.native } },
    { selector: "node[tech = 'local']", style: { "border-color": COLORS.local } },
    { selector: "node[?root]", style: {
      "border-color": COLORS.root, "border-width": 5, "width": 46, "height": 46,
      "background-color": "#3a3212",
    } },
    { selector: "node[?gateway]", style: {
      "shape": "diamond", "border-color": COLORS.gateway, "width": 50, "height": 50,
      "background-color": "#3b1a40",
    } },
    { selector: "node[role = 'sender'], node[role = 'both']", style: { "background-color": "#0f3b46" } },
    { selector: "node[role = 'forwarder']", style: { "width": 28, "height": 28, "background-opacity": 0.5 } },
    { selector: "node[kind = 'link']", style: {
      "shape": "round-rectangle", "width": 150, "height": 26, "background-color": "#0e3a44",
      "border-color": COLORS.native, "border-width": 2, "text-valign": "center", "text-margin-y": 0,
      "font-size": 10, "color": "#bff6ff", "text-background-opacity": 0,
    } },
    { selector: "node[kind = 'router']", style: {
      "shape": "hexagon", "background-color": "#233047", "border-color": COLORS.native,
      "border-width": 2, "width": 34, "height": 30,
    } },
    { selector: "node[kind = 'peer']", style: {
      "width": 22, "height": 22, "border-style": "dashed", "border-width": 2,
      "background-color": "#172033", "color": COLORS.dim, "font-size": 9,
    } },
    { selector: "node[?stale]", style: { "opacity": 0.45, "border-style": "dotted" } },
    { selector: "node:selected", style: {
      "underlay-color": COLORS.root, "underlay-opacity": 0.25, "underlay-padding": 9,
      "underlay-shape": "ellipse",
    } },
    { selector: "edge", style: {
      "width": 3, "curve-style": "bezier", "line-color": COLORS.dim, "target-arrow-shape": "none",
      "arrow-scale": 1.1, "opacity": 0.9,
    } },
    { selector: "edge[kind = 'overlay']", style: {
      "line-color": COLORS.overlay, "target-arrow-color": COLORS.overlay, "target-arrow-shape": "triangle",
    } },
    { selector: "edge[kind = 'native']", style: {
      "line-color": COLORS.native, "target-arrow-color": COLORS.native, "target-arrow-shape": "triangle",
      "width": 2.5,
    } },
    { selector: "edge[?both]", style: { "source-arrow-shape": "triangle", "source-arrow-color": COLORS.native } },
    { selector: "edge[kind = 'gateway']", style: {
      "line-color": COLORS.gateway, "target-arrow-color": COLORS.gateway, "target-arrow-shape": "triangle",
      "line-style": "dashed", "width": 4,
    } },
  ];
}

function elementsFor(graph) {
  const nodes = graph.nodes.map((n) => ({
    group: "nodes",
    data: { ...n.data, display: hostLabel(n.data), tech: mainTechnology(n.data) },
  }));
  const edges = graph.edges.map((e) => ({ group: "edges", data: { ...e.data } }));
  return nodes.concat(edges);
}

function layout(cy, fresh) {
  if (!fresh) {
    // A live change (a member joined or left, a parent changed): keep everyone where
    // they are, put newcomers beside a neighbour, and let the forces settle it.
    cy.nodes().filter((n) => !n.scratch("_placed")).forEach((n) => {
      const anchor = n.neighborhood("node").filter((m) => m.scratch("_placed"));
      if (anchor.nonempty()) {
        const p = anchor[0].position();
        n.position({ x: p.x + 60 * Math.cos(n.degree() + p.x), y: p.y + 80 });
      }
    });
    cy.nodes().scratch("_placed", true);
    cy.layout({
      name: "cose", randomize: false, animate: true, animationDuration: 400, fit: false,
      idealEdgeLength: () => 120, nodeRepulsion: () => 60000, nodeOverlap: 20,
      gravity: 0.3, numIter: 600, componentSpacing: 120,
    }).run();
    return;
  }
  cy.nodes().scratch("_placed", true);
  // A tree per connected part, grown from its overlay root (else its busiest node).
  const roots = [];
  cy.elements().components().forEach((part) => {
    const root = part.nodes("[?root]");
    roots.push(root.nonempty() ? root[0] : part.nodes().max((n) => n.degree()).ele);
  });
  // Tree levels first, then a force-directed pass from there: it keeps the tree's
  // shape but pulls a gateway next to its link, so no edge runs through a node.
  cy.layout({
    name: "breadthfirst", roots: cy.collection(roots), directed: false, spacingFactor: 1.1,
    animate: false, fit: false,
  }).run();
  const run = cy.layout({
    name: "cose", randomize: false, animate: false, fit: true, padding: 60,
    idealEdgeLength: () => 120, nodeRepulsion: () => 60000, nodeOverlap: 20,
    gravity: 0.3, numIter: 1500, componentSpacing: 120, nestingFactor: 1,
  });
  run.one("layoutstop", () => {
    // A small group should not fill the screen with giant nodes.
    if (cy.zoom() > 1.3) cy.zoom(1.3);
    cy.center();
  });
  run.run();
}

function draw() {
  const graph = state.doc && state.doc.graphs[state.group];
  if (!state.cy) return;
  const cy = state.cy;
  if (!graph) {
    cy.elements().remove();
    state.shape = "";
    return;
  }
  const els = elementsFor(graph);
  const shape = els.map((e) => e.data.id).sort().join("|");
  if (shape !== state.shape) {
    let kept = 0;
    cy.batch(() => {
      const keep = new Set(els.map((e) => e.data.id));
      cy.elements().filter((e) => !keep.has(e.id())).remove();
      for (const e of els) {
        const found = cy.getElementById(e.data.id);
        if (found.nonempty()) { found.data(e.data); kept += 1; } else cy.add(e);
      }
    });
    // Another group, or mostly new elements: lay out afresh; else adjust in place.
    const fresh = state.drawnGroup !== state.group || kept * 2 < els.length;
    layout(cy, fresh);
    state.shape = shape;
    state.drawnGroup = state.group;
  } else {
    cy.batch(() => els.forEach((e) => cy.getElementById(e.data.id).data(e.data)));
  }
}

function daemonOf(hostId) {
  return (state.doc?.daemons || []).find((d) => d.id === hostId);
}

function gatewayText(g) {
  if (g === null || g === undefined) return fmt(null);
  if (!g) return "no";
  const flows = ["to_native", "to_overlay"].filter((k) => g[k] !== null && g[k] !== undefined)
    .map((k) => `${esc(g[k])} ${k === "to_native" ? "→ native" : "→ overlay"}`);
  return `<span class="tag gateway">${esc(g.role || "gateway")}</span>${flows.join(" · ")}`;
}

function fmt(v) {
  return v === null || v === undefined ? '<span class="dim">not reported</span>' : esc(v);
}

function details() {
  const box = $("details");
  const graph = state.doc && state.doc.graphs[state.group];
  const node = state.selected && state.cy ? state.cy.getElementById(state.selected) : null;
  if (!node || node.empty()) {
    if (!graph) {
      box.innerHTML = `<h2>No group</h2><div class="dim">No daemon reports a group yet.</div>`;
      return;
    }
    const hosts = graph.nodes.filter((n) => n.data.kind === "host");
    const kinds = {};
    graph.edges.forEach((e) => { kinds[e.data.kind] = (kinds[e.data.kind] || 0) + 1; });
    box.innerHTML = `<h2>Group</h2><div class="mono">${esc(state.group)}</div>
      <div class="kv" style="margin-top:8px">
        <div>hosts</div><div>${hosts.length}</div>
        <div>overlay edges</div><div>${kinds.overlay || 0}</div>
        <div>native edges</div><div>${kinds.native || 0}</div>
        <div>gateway bridges</div><div>${kinds.gateway || 0}</div>
      </div><div class="dim small" style="margin-top:8px">Click a node to see its state.</div>`;
    return;
  }
  const d = node.data();
  if (d.kind !== "host") {
    const rows = Object.entries(d).filter(([k]) => !["id", "display", "tech"].includes(k))
      .map(([k, v]) => `<div>${esc(k)}</div><div class="mono">${esc(Array.isArray(v) ? v.join(", ") : v)}</div>`);
    box.innerHTML = `<h2>${esc(d.label)}</h2><div class="kv">${rows.join("")}</div>`;
    return;
  }
  const daemon = daemonOf(d.id) || {};
  const named = (kind, dir) => node.connectedEdges(`[kind = "${kind}"]`)
    .filter((e) => (dir === "out" ? e.source().id() === d.id : e.target().id() === d.id))
    .map((e) => (dir === "out" ? e.target() : e.source()).data("label"));
  const entries = (daemon.groups || []).filter((g) => g.group === state.group);
  const c = daemon.counters || {};
  const tags = (d.technologies || []).map((t) => `<span class="tag ${esc(t)}">${esc(t)}</span>`).join("")
    + (d.root ? '<span class="tag root">overlay root</span>' : "")
    + (d.gateway ? `<span class="tag gateway">gateway${d.gateway_inferred ? " (inferred)" : ""}</span>` : "");
  const entryHtml = entries.map((e) => `<section class="entry"><div class="kv">
      <div>interface</div><div>${esc(e.interface)} · ${esc(e.technology)}</div>
      <div>role</div><div>${esc(e.role)}${e.selected ? " · selected" : ""}</div>
      <div>sockets</div><div>${esc(e.listeners)} listening, ${esc(e.senders)} sending</div>
      <div>parents</div><div title="${esc((e.parents || []).join(", "))}">${esc((e.technology === "overlay" ? named("overlay", "in") : e.parents || []).join(", ") || "—")}</div>
      <div>children</div><div title="${esc((e.children || []).join(", "))}">${esc((e.technology === "overlay" ? named("overlay", "out") : e.children || []).join(", ") || "—")}</div>
      <div>designated</div><div>${e.designated ? "yes" : "no"}</div>
      <div>gateway</div><div>${gatewayText(e.gateway)}</div>
      ${e.reason ? `<div>chosen</div><div>${esc(e.reason)}</div>` : ""}
      <div>msgs in/out</div><div>${fmt(e.counters?.messages_in)} / ${fmt(e.counters?.messages_out)}</div>
    </div></section>`).join("");
  const ifaces = (daemon.interfaces || []).map((i) =>
    `<div>${esc(i.name)}</div><div><span class="tag ${esc(i.technology)}">${esc(i.technology)}</span>`
    + `<span class="mono">${esc(i.address)}</span>${i.verdict ? ` · ${esc(i.verdict)}` : ""}</div>`).join("");
  box.innerHTML = `<h2>${esc(d.label)} ${d.reachable ? "" : '<span class="tag" style="color:#f87171">unreachable</span>'}</h2>
    <div>${tags}</div>
    <div class="kv" style="margin-top:8px">
      <div>endpoint</div><div class="mono">${esc(daemon.url || d.source)}</div>
      <div>version</div><div>${esc(daemon.host?.version)} · pid ${esc(daemon.host?.pid)}</div>
      <div>uptime</div><div>${esc(Math.round(daemon.host?.uptime_s || 0))} s</div>
      <div>sockets</div><div>${fmt(c.sockets)}</div>
      <div>messages</div><div>${fmt(c.messages_in)} in · ${fmt(c.messages_out)} out</div>
      <div>drops</div><div>${fmt(c.drops)}</div>
      <div>bytes</div><div>${fmt(c.bytes_in)} in · ${fmt(c.bytes_out)} out</div>
    </div>
    <h2 style="margin-top:10px">Interfaces</h2><div class="kv">${ifaces}</div>
    ${entryHtml}`;
}

function rates(samples, column) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const [t0, t1] = [samples[i - 1][0], samples[i][0]];
    const [a, b] = [samples[i - 1][column], samples[i][column]];
    out.push(a === null || b === null || t1 <= t0 ? null : Math.max(0, (b - a) / (t1 - t0)));
  }
  return out;
}

function sparkline(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.fillStyle = "#0d1426"; g.fillRect(0, 0, w, h);
  const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  for (const s of series) {
    const n = s.values.length;
    if (n < 2) continue;
    g.beginPath(); g.strokeStyle = s.color; g.lineWidth = 1.6;
    let pen = false;
    s.values.forEach((v, i) => {
      const x = (i / (n - 1)) * (w - 2) + 1;
      if (v === null) { pen = false; return; }
      const y = h - 3 - (v / max) * (h - 8);
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  }
  g.fillStyle = "#8a98b3"; g.font = "10px sans-serif"; g.fillText(`${max.toFixed(max < 10 ? 1 : 0)}/s`, 3, 10);
}

function charts() {
  const box = $("charts");
  const graph = state.doc && state.doc.graphs[state.group];
  const hosts = graph ? graph.nodes.filter((n) => n.data.kind === "host") : [];
  if (!hosts.length) { box.innerHTML = '<div class="dim">No hosts in this group.</div>'; return; }
  box.innerHTML = hosts.map((n) =>
    `<div class="chart${n.data.id === state.selected ? " sel" : ""}"><div class="name" title="${esc(n.data.label)}">${esc(n.data.label)}</div><canvas data-host="${esc(n.data.id)}"></canvas></div>`,
  ).join("") + '<div class="keys"><b class="in">━ in</b> &nbsp; <b class="out">━ out</b> &nbsp; <b class="drop">━ drops</b> &nbsp; (all groups of the host)</div>';
  box.querySelectorAll("canvas").forEach((canvas) => {
    const daemon = daemonOf(canvas.dataset.host);
    const samples = (daemon && state.doc.history[daemon.url]) || [];
    sparkline(canvas, [
      { color: COLORS.native, values: rates(samples, 1) },
      { color: COLORS.overlay, values: rates(samples, 2) },
      { color: COLORS.bad, values: rates(samples, 3) },
    ]);
  });
}

function daemons() {
  const rows = (state.doc?.daemons || []).map((d) =>
    `<div class="daemon${d.reachable ? "" : " down"}"><span class="state"></span>`
    + `<span>${esc(d.name || "?")}</span><span class="url" title="${esc(d.error || "")}">${esc(d.url)}</span></div>`);
  $("daemons").innerHTML = rows.join("") || '<div class="dim">No daemons configured.</div>';
}

function picker() {
  const select = $("group");
  const groups = state.doc?.groups || [];
  if (!groups.includes(state.group)) {
    const wanted = decodeURIComponent(location.hash.slice(1));
    state.group = groups.includes(wanted) ? wanted : (groups[0] || null);
  }
  const current = Array.from(select.options).map((o) => o.value).join("|");
  if (current !== groups.join("|")) {
    select.innerHTML = groups.map((g) => `<option value="${esc(g)}">${esc(g)}</option>`).join("");
  }
  if (state.group) select.value = state.group;
}

function render() {
  picker();
  draw();
  details();
  charts();
  daemons();
  const doc = state.doc;
  const up = (doc?.daemons || []).filter((d) => d.reachable).length;
  $("summary").textContent = doc
    ? `${up}/${doc.daemons.length} daemons answering · ${doc.groups.length} group${doc.groups.length === 1 ? "" : "s"}`
    : "";
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("state", (ev) => {
    state.doc = JSON.parse(ev.data);
    state.connected = true;
    $("live").className = "pill on";
    $("live").textContent = "live";
    render();
  });
  source.onerror = () => {
    state.connected = false;
    $("live").className = "pill off";
    $("live").textContent = "reconnecting…";
  };
}

function start() {
  if (typeof cytoscape !== "function") {
    const banner = $("banner");
    banner.hidden = false;
    banner.textContent = "The graph library (cytoscape.js) is not installed on the collector's host: run `make setup`.";
    fetch("/vendor/cytoscape.min.js").then((r) => r.text()).then((t) => { if (t.length < 300) banner.textContent = t; });
  } else {
    state.cy = cytoscape({ container: $("graph"), style: styles(), wheelSensitivity: 0.3, maxZoom: 2.5 });
    state.cy.on("tap", "node", (ev) => { state.selected = ev.target.id(); details(); charts(); });
    state.cy.on("tap", (ev) => { if (ev.target === state.cy) { state.selected = null; details(); charts(); } });
  }
  $("group").addEventListener("change", (ev) => {
    state.group = ev.target.value;
    state.selected = null;
    location.hash = encodeURIComponent(state.group);
    render();
  });
  window.addEventListener("resize", () => { if (state.cy) state.cy.resize(); charts(); });
  connect();
}

// For tests and scripts: what is drawn now, and a way to pick a group.
window.hamcastMonitor = {
  drawn() {
    const cy = state.cy;
    if (!cy) return null;
    const box = { w: cy.width(), h: cy.height() };
    const inside = (n) => {
      const p = n.renderedPosition();
      return p.x >= 0 && p.y >= 0 && p.x <= box.w && p.y <= box.h;
    };
    return {
      group: state.group,
      connected: state.connected,
      nodes: cy.nodes().filter((n) => n.visible() && inside(n)).map((n) => n.id()),
      edges: cy.edges().filter((e) => e.visible()).map((e) => e.id()),
      moving: cy.nodes().some((n) => n.animated()),
    };
  },
  select(group) {
    state.group = group;
    state.selected = null;
    render();
  },
  tap(id) {
    const node = state.cy && state.cy.getElementById(id);
    if (node && node.nonempty()) { node.select(); node.emit("tap"); }
  },
};

start();
