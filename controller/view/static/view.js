"use strict";
// The topology view: Cytoscape.js draws, the server pushes (api/stream).
// Switches sit where the server placed them and hosts on a spiral around
// their switch by the slot the server keeps for them, so nothing already on
// the map moves when something changes.

// A switch with more hosts than this, or any switch of a network with more
// hosts than that, starts collapsed: thousands of hosts drawn at once are
// no map.
const EXPAND_UP_TO = 24, EXPAND_ALL_UP_TO = 300;

// With a bearer token (a controller listening beyond loopback), the page is
// opened as .../#token=TOKEN: a fragment never leaves the browser, so the
// token is in no request line or proxy log. Kept for the tab's life only.
const TOKEN = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    sessionStorage.setItem("view-token", given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("view-token");
})();

function api(path) {
  return fetch(path, TOKEN ? {headers: {Authorization: "Bearer " + TOKEN}} : {});
}
const ACTIONS = ["block", "rate_limit", "quarantine", "cutoff", "anti_spoofing"];

const state = {
  version: 0, switches: new Map(), hosts: new Map(), links: [], paths: [],
  open: new Map(),   // switch id -> shown or hidden by the engineer's click
  selected: null,    // MAC of the host whose details are shown
  found: null,       // MAC of the host the last search centred
  scale: 0,          // model units per unit of the server's [0, 1] layout
};

const cy = cytoscape({
  container: document.getElementById("map"),
  layout: {name: "preset"}, minZoom: 0.02, maxZoom: 4,
  style: [
    {selector: "node.switch", style: {
      shape: "round-rectangle", width: 150, height: 42, "background-color": "#2b6cb0",
      label: "data(label)", color: "#fff", "font-size": 11, "font-family": "monospace",
      "text-wrap": "wrap", "text-valign": "center", "text-halign": "center"}},
    {selector: "node.switch.collapsed", style: {"background-color": "#1a365d"}},
    {selector: "node.switch.enforced", style: {"border-width": 5, "border-color": "#e53e3e"}},
    {selector: "node.host", style: {
      width: 22, height: 22, "background-color": "#fff", "border-width": 2,
      "border-color": "#444", label: "data(label)", "font-size": 9,
      "text-valign": "bottom", "text-margin-y": 3}},
    {selector: "node.host.block", style: {"background-color": "#f6ad55", "border-color": "#c05621"}},
    {selector: "node.host.rate_limit", style: {"background-color": "#faf089",
                                              "border-color": "#b7791f", "border-style": "dashed"}},
    {selector: "node.host.quarantine", style: {"background-color": "#b794f4",
                                              "border-color": "#553c9a", "border-width": 4}},
    {selector: "node.host.cutoff", style: {"background-color": "#e53e3e",
                                          "border-color": "#742a2a", "border-width": 4}},
    {selector: "node.host.anti_spoofing", style: {"background-color": "#68d391",
                                                 "border-color": "#276749"}},
    {selector: "node.host.garden", style: {shape: "diamond"}},
    {selector: "node.host.selected", style: {"border-width": 6, "border-color": "#000"}},
    {selector: "node.host.found", style: {"underlay-color": "#ecc94b", "underlay-padding": 10,
                                         "underlay-opacity": 0.8, "underlay-shape": "ellipse"}},
    {selector: "edge.link", style: {width: 3, "line-color": "#666"}},
    {selector: "edge.link.down", style: {"line-color": "#d33", "line-style": "dashed"}},
    {selector: "edge.hostlink", style: {width: 1, "line-color": "#bbb"}},
    {selector: "edge.quarantine-path", style: {
      width: 7, "line-color": "#805ad5", opacity: 0.75, "curve-style": "bezier",
      "control-point-step-size": 18, "z-index": 10, "target-arrow-shape": "triangle",
      "target-arrow-color": "#805ad5"}},
  ],
});

// fe80::/10 names a host on one link only: listed, never the host's name.
function linkLocal(a) { return /^fe[89ab][0-9a-f]:/i.test(a); }
// The address a host goes by: its IPv4 one, else its first global IPv6 one.
function mainAddress(h) {
  return h.ip || (h.ipv6 || []).find(a => !linkLocal(a) && !a.includes("/")) || "";
}
// Case ids, reasons and the like come from outside: never markup.
function esc(v) {
  return String(v).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                               '"': "&quot;", "'": "&#39;"}[c]));
}

function isOpen(switchId) {
  if (state.open.has(switchId)) return state.open.get(switchId);
  const s = state.switches.get(switchId);
  return state.hosts.size <= EXPAND_ALL_UP_TO && (!s || s.hosts <= EXPAND_UP_TO);
}

function switchAt(s) { return {x: s.x * state.scale, y: s.y * state.scale}; }

// Slot n on a sunflower spiral around the switch: any number of hosts, no overlap.
function hostAt(h) {
  const s = state.switches.get(h.switch);
  const centre = switchAt(s);
  // Clear of the switch's box; slot 0 straight below it.
  const r = 95 + 24 * Math.sqrt(h.slot), angle = Math.PI / 2 + h.slot * Math.PI * (3 - Math.sqrt(5));
  return {x: centre.x + r * Math.cos(angle), y: centre.y + r * Math.sin(angle)};
}

function switchLabel(s) {
  if (!s.hosts) return s.id;
  const enforced = s.enforced ? ` · ${s.enforced} enforced` : "";
  return `${s.id}\n${s.hosts} host${s.hosts === 1 ? "" : "s"}${enforced} ${isOpen(s.id) ? "▾" : "▸"}`;
}

function gardenAddresses() { return new Set(state.paths.map(p => p.garden)); }

// Every element the map should hold now, by id.
function wanted() {
  const want = new Map();
  const node = (id, classes, data, position) =>
    want.set(id, {group: "nodes", classes, data: {id, ...data}, position});
  const edge = (id, classes, source, target, data) =>
    want.set(id, {group: "edges", classes, data: {id, source, target, ...data}});
  for (const s of state.switches.values()) {
    node("sw:" + s.id, ["switch", isOpen(s.id) ? "expanded" : "collapsed",
                        s.enforced ? "enforced" : ""].join(" ").trim(),
         {switch: s.id, label: switchLabel(s), hosts: s.hosts, enforced: s.enforced},
         switchAt(s));
  }
  for (const l of state.links) {
    if (!state.switches.has(l.a) || !state.switches.has(l.b)) continue;
    edge(`l:${l.a}:${l.a_port}-${l.b}:${l.b_port}`, "link " + (l.up ? "up" : "down"),
         "sw:" + l.a, "sw:" + l.b, {a: l.a, b: l.b, state: l.up ? "up" : "down"});
  }
  const garden = gardenAddresses();
  for (const h of state.hosts.values()) {
    if (!state.switches.has(h.switch) || !isOpen(h.switch)) continue;
    const actions = h.enforcements.map(e => e.action);
    node("h:" + h.mac, ["host", ...actions, garden.has(h.ip) ? "garden" : "",
                        h.mac === state.selected ? "selected" : "",
                        h.mac === state.found ? "found" : ""].join(" ").trim(),
         {mac: h.mac, ip: h.ip, ipv6: (h.ipv6 || []).join(" "), actions: actions.join(","),
          label: mainAddress(h) || h.mac}, hostAt(h));
    edge("hl:" + h.mac, "hostlink", "h:" + h.mac, "sw:" + h.switch, {});
  }
  for (const p of state.paths) {
    const chain = p.switches.map(id => "sw:" + id);
    if (p.host && want.has("h:" + p.host)) chain.unshift("h:" + p.host);
    if (p.garden_host && want.has("h:" + p.garden_host)) chain.push("h:" + p.garden_host);
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!want.has(chain[i]) || !want.has(chain[i + 1])) continue;
      edge(`qp:${p.enforcement}:${p.garden}:${i}`, "quarantine-path", chain[i], chain[i + 1],
           {enforcement: p.enforcement, garden: p.garden});
    }
  }
  return want;
}

// Brings the map to what wanted() says; positions of what is already there
// are never touched.
// Only what differs is touched (restyling 2,000 unchanged hosts on every
// change would be the page's whole cost).
const drawn = new Map();  // id -> what it was last drawn with
function sync() {
  const want = wanted();
  cy.batch(() => {
    cy.elements().forEach(el => {
      if (!want.has(el.id())) { el.remove(); drawn.delete(el.id()); }
    });
    for (const group of ["nodes", "edges"]) {
      for (const [id, e] of want) {
        if (e.group !== group) continue;
        const look = JSON.stringify([e.data, e.classes]);
        const el = cy.getElementById(id);
        if (el.empty()) {
          cy.add(e);
        } else if (drawn.get(id) !== look) {
          el.data(e.data);
          el.classes(e.classes);
        }
        drawn.set(id, look);
      }
    }
  });
  summarise();
}

function showAll(shown) {
  for (const id of state.switches.keys()) state.open.set(id, shown);
  sync();
}

function summarise() {
  const hosts = [...state.hosts.values()];
  const active = hosts.reduce((n, h) => n + h.enforcements.length, 0);
  const down = state.links.filter(l => !l.up).length;
  document.getElementById("summary").textContent =
    `${state.switches.size} switches, ${state.links.length} links (${down} down), ` +
    `${hosts.length} hosts, ${active} active enforcements, ` +
    `${new Set(state.paths.map(p => p.enforcement)).size} quarantined`;
}

function load(topo) {
  state.switches = new Map(topo.switches.map(s => [s.id, s]));
  state.hosts = new Map(topo.hosts.map(h => [h.mac, h]));
  state.links = topo.links;
  state.paths = topo.paths || [];
  const first = !state.scale;
  if (first) state.scale = Math.max(600, 300 * Math.sqrt(state.switches.size));
  sync();
  if (first) cy.fit(undefined, 30);
}

function applyDiff(d) {
  for (const [kind, key] of [["switches", "id"], ["hosts", "mac"]]) {
    if (!d[kind]) continue;
    for (const gone of d[kind].removed) state[kind].delete(gone);
    for (const item of d[kind].changed) state[kind].set(item[key], item);
  }
  if (d.links) state.links = d.links;
  if (d.paths) state.paths = d.paths;
  sync();
}

// EventSource cannot send a header: with a token the stream is read with
// fetch, which can, and parsed here (events are "event: NAME\ndata: JSON").
class TokenStream {
  constructor(url) {
    this.handlers = {};
    this.closed = false;
    this.abort = new AbortController();
    this.read(url);
  }
  addEventListener(name, handler) { this.handlers[name] = handler; }
  close() { this.closed = true; this.abort.abort(); }
  async read(url) {
    try {
      const response = await fetch(url, {headers: {Authorization: "Bearer " + TOKEN},
                                         signal: this.abort.signal});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const name = (block.match(/^event: (.*)$/m) || [])[1];
          const data = block.split("\n").filter(l => l.startsWith("data: "))
                            .map(l => l.slice(6)).join("\n");
          if (name && this.handlers[name]) this.handlers[name]({data});
        }
      }
    } catch (err) {
      if (this.closed) return;
    }
    if (this.closed) return;
    if (this.onerror) this.onerror();
    setTimeout(() => { if (!this.closed) this.read(url); }, 1000);
  }
}

function connect() {
  const source = TOKEN ? new TokenStream("api/stream") : new EventSource("api/stream");
  const status = document.getElementById("status");
  source.addEventListener("snapshot", ev => {
    const message = JSON.parse(ev.data);
    load(message.topology);
    state.version = message.version;
    status.textContent = "live (pushed by the controller)";
    showDetail();
  });
  source.addEventListener("diff", ev => {
    const message = JSON.parse(ev.data);
    if (message.version <= state.version) return;  // already in the snapshot
    if (message.version !== state.version + 1) {   // missed one: start over
      source.close();
      connect();
      return;
    }
    applyDiff(message);
    state.version = message.version;
    status.textContent = "live; updated " + new Date().toLocaleTimeString();
    showDetail();
  });
  // EventSource reconnects by itself; the server then starts with a snapshot.
  source.onerror = () => { status.textContent = "cannot reach the controller; retrying…"; };
}

function select(mac) {
  state.selected = mac;
  sync();
  showDetail();
}

function toggle(switchId) {
  state.open.set(switchId, !isOpen(switchId));
  sync();
}

// Centres and marks a host, opening its switch if need be.
function focus(mac) {
  const h = state.hosts.get(mac);
  if (!h) return false;
  state.open.set(h.switch, true);
  state.found = mac;
  select(mac);
  const target = cy.getElementById("h:" + mac);
  cy.zoom(Math.max(cy.zoom(), 1.2));
  cy.center(target);
  return true;
}

cy.on("tap", "node.switch", ev => toggle(ev.target.data("switch")));
cy.on("tap", "node.host", ev => select(ev.target.data("mac")));

let detailGeneration = 0;
async function showDetail() {
  const generation = ++detailGeneration;
  const detail = document.getElementById("detail");
  const host = state.hosts.get(state.selected);
  if (!host) return;
  const v6 = host.ipv6 || [];
  const parts = [`<h1 id="host-title">${esc(mainAddress(host) || "(no IP)")} — ${esc(host.mac)}</h1>`,
                 (v6.length ? `<p>IPv6 <span class="ipv6">${v6.map(esc).join(", ")}</span></p>` : ""),
                 `<p>switch <span class="switch-id">${esc(host.switch)}</span> port ${esc(host.port)}` +
                 (host.account ? `<br>account <b class="account">${esc(host.account)}</b>` +
                  (host.pinned ? " (pinned by the inventory)" : "") : "") + `</p>`];
  if (!host.enforcements.length) parts.push("<p id='no-enforcement'>No active enforcement.</p>");
  for (const e of host.enforcements) {
    let d = null;
    try { d = await (await api("api/enforcements/" + encodeURIComponent(e.id))).json(); }
    catch (err) { d = null; }
    const path = state.paths.filter(p => p.enforcement === e.id);
    parts.push(`<div class="enforcement" data-id="${esc(e.id)}"><h1>${esc(e.action)}: ${esc(e.description)}</h1>` +
      `<p>case <b class="case">${esc(e.case)}</b>, violation <b class="violation">${esc(e.violation)}</b>, ${esc(e.state)}` +
      `<br>named by <span class="named">${esc(e.subscriber)}</span>` +
      ((e.addresses || []).length ? `, enforced on <span class="addresses">${e.addresses.map(esc).join(", ")}</span>` : "") +
      `</p>` +
      path.map(p => `<p class="garden-path">to the walled garden ${esc(p.garden)}: ` +
        (p.reachable ? esc(p.switches.join(" → ")) : "no path") + "</p>").join(""));
    if (d && d.counters) {
      parts.push(`<p>${esc(d.escalation)}<br><i>${esc(d.clause)}</i></p>` +
        `<p class="counters">dropped or metered: <b class="packets">${esc(d.counters.packets)}</b> packets, ` +
        `<b class="bytes">${esc(d.counters.bytes)}</b> bytes</p>` +
        `<p class="proof">${proofText(d.proof)}</p>` +
        `<pre class="rules">${esc(d.rules.concat(d.meters).join("\n"))}</pre>`);
    }
    parts.push("</div>");
  }
  if (generation === detailGeneration) detail.innerHTML = parts.join("");
}

// The last proof in the switch's data plane (probes through its pipeline).
function proofText(proof) {
  if (!proof) return "not proven yet";
  const at = new Date(proof.at * 1000).toLocaleTimeString();
  if (proof.state === "proven") return `proven in the data plane at ${esc(at)} (${esc(proof.probes)} probes)`;
  if (proof.state === "failed") {
    return `<b class="proof-failed">proof FAILED</b> at ${esc(at)}: ${esc(proof.reason)}` +
      (proof.shadows.length ? `; let through by ${proof.shadows.map(esc).join("; ")}` : "");
  }
  return `nothing a probe can show (${esc(at)})`;
}

// Counters move with traffic, which no event announces: re-read them while
// an enforced host is shown.
setInterval(() => {
  const host = state.hosts.get(state.selected);
  if (host && host.enforcements.length) showDetail();
}, 1500);

async function search(query) {
  const list = document.getElementById("results");
  list.replaceChildren();
  if (!query.trim()) return;
  let found = [];
  try {
    found = (await (await api("api/search?q=" + encodeURIComponent(query))).json()).hosts;
  } catch (err) {
    found = [];
  }
  if (!found.length) {
    const li = document.createElement("li");
    li.id = "no-match";
    li.textContent = "nothing matches " + query;
    list.append(li);
    return;
  }
  for (const m of found) {
    const h = state.hosts.get(m.mac);
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.mac = m.mac;
    li.textContent = `${h ? mainAddress(h) || m.mac : m.mac} (${m.field}) on ${m.switch}`;
    li.addEventListener("click", () => focus(m.mac));
    list.append(li);
  }
  focus(found[0].mac);
}

document.getElementById("show-all").addEventListener("click", () => showAll(true));
document.getElementById("hide-all").addEventListener("click", () => showAll(false));
document.getElementById("search-form").addEventListener("submit", ev => {
  ev.preventDefault();
  search(document.getElementById("search").value);
});

// For the browser tests and the curious engineer's console.
window.view = {cy, state, focus, toggle, select, isOpen, showAll};
connect();
