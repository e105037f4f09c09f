// Baton's operator console: one module, no framework, no build step.
// Every string from the fleet is put in the page as text (textContent, text nodes),
// never as markup; the gateway's Content-Security-Policy allows this file only.

const main = document.getElementById("main");
const status = document.getElementById("status");
const message = document.getElementById("message");
const tokenInput = document.getElementById("token");
const TOKEN_KEY = "baton.token";

// -- building the page out of text ------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "className" || key === "type" || key === "value" || key === "placeholder" || key === "hidden") node[key] = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(text, hash) {
  return el("a", { href: hash, text });
}

function table(headers, rows, id) {
  return el("table", id ? { id } : {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows));
}

function say(text, ok = false) {
  message.textContent = text;
  message.className = ok ? "ok" : "";
  message.hidden = !text;
}

// -- talking to the gateway ----------------------------------------------------------------
async function read(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({ message: `${resp.status} ${resp.statusText}` }));
  if (!resp.ok) throw new Error(body.message || `${resp.status} ${resp.statusText}`);
  return body;
}

async function write(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`; // a header, never a cookie
  const resp = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), credentials: "omit" });
  const reply = await resp.json().catch(() => ({ message: `${resp.status} ${resp.statusText}` }));
  if (!resp.ok) {
    say(`Refused (${resp.status}): ${reply.message}`);
    return null;
  }
  say("Done.", true);
  return reply;
}

// -- pages ----------------------------------------------------------------------------------
const filters = { name: "", tag: "", zone: "", state: "" };
let page = { after: "", trail: [] };
const feed = [];

function stateCell(state, why) {
  return el("td", { className: `state state-${state}` }, state, why ? el("div", { className: "why", text: why }) : null);
}

async function overview() {
  const query = new URLSearchParams({ ...filters, after: page.after, limit: "50" });
  const data = await read(`/v1/ui/overview?${query}`);
  const rows = data.services.map((s) =>
    el("tr", { dataset: { service: s.service } },
      el("td", {}, link(s.service, `#/service/${encodeURIComponent(s.service)}`)),
      el("td", { text: s.instances }),
      el("td", { className: "state-passing", text: s.counts.passing }),
      el("td", { className: "state-critical", text: s.counts.critical }),
      el("td", { className: "state-drained", text: s.counts.drained }),
      el("td", { className: "state-ejected", text: s.counts.ejected }),
      el("td", { text: s.strategy }),
      el("td", { text: s.panic ? "PANIC" : "no" }),
      el("td", {}, link(`r${s.revision}`, `#/history/${encodeURIComponent(s.service)}`))));
  const input = (key, placeholder) => el("input", {
    value: filters[key], placeholder, name: key,
    on: { change: (e) => { filters[key] = e.target.value; page = { after: "", trail: [] }; render(); } },
  });
  const select = el("select", { name: "state", on: { change: (e) => { filters.state = e.target.value; page = { after: "", trail: [] }; render(); } } },
    ...["", "passing", "critical", "drained", "ejected"].map((s) => {
      const option = el("option", { value: s, text: s || "any state" });
      option.selected = s === filters.state;
      return option;
    }));
  const pager = el("p", {},
    page.trail.length ? el("button", { text: "← previous", on: { click: () => { page.after = page.trail.pop(); render(); } } }) : null,
    data.next_after ? el("button", { text: "next →", on: { click: () => { page.trail.push(page.after); page.after = data.next_after; render(); } } }) : null,
    ` ${data.total} services in all`);
  return [
    el("h2", { text: "Services" }),
    el("p", { className: "filters" }, input("name", "name contains"), input("tag", "tag (meta key or key=value)"), input("zone", "zone"), select),
    table(["service", "instances", "passing", "critical", "drained", "ejected", "strategy", "panic", "config"], rows, "services"),
    pager,
    el("h3", { text: "Live feed" }),
    el("ul", { className: "feed", id: "feed" }, ...feed.map((line) => el("li", { text: line }))),
  ];
}

function weightText(i) {
  const notes = [];
  if (i.override && i.override.weight !== undefined && i.override.weight !== null) notes.push("set by config");
  if (i.weight !== i.registered_weight) notes.push(`warming up to ${i.registered_weight}`);
  return notes.length ? `${i.weight} (${notes.join("; ")})` : String(i.weight);
}

// What the operator typed or chose and has not sent: a live redraw keeps it.
const drafts = new Map();

function drafted(key, value) {
  return drafts.has(key) ? drafts.get(key) : value;
}

function instanceRow(service, i) {
  const weightKey = `${service}/${i.instance_id}/weight`;
  const weight = el("input", {
    className: "weight", type: "number", name: "weight",
    value: drafted(weightKey, String(i.registered_weight)),
    on: { input: (e) => drafts.set(weightKey, e.target.value) },
  });
  const actions = el("td", { className: "actions" },
    i.state === "drained" && i.override && i.override.drained
      ? el("button", { className: "undrain", text: "undrain", on: { click: () => change(service, { instance_id: i.instance_id, drained: false }) } })
      : el("button", { className: "drain", text: "drain", on: { click: () => change(service, { instance_id: i.instance_id, drained: true }) } }),
    " ", weight,
    el("button", { className: "set-weight", text: "set weight", on: { click: () => change(service, { instance_id: i.instance_id, weight: Number(weight.value) }, weightKey) } }),
    " ",
    ...deregisterControls(service, i.instance_id));
  const meta = Object.entries(i.metadata).map(([k, v]) => el("div", { className: "meta", text: `${k}=${v}` }));
  return el("tr", { dataset: { instance: i.instance_id } },
    el("td", { text: i.instance_id }),
    el("td", { text: i.address }),
    el("td", { text: i.zone }),
    el("td", { text: i.version }),
    el("td", { text: weightText(i) }),
    stateCell(i.state, i.why),
    el("td", { text: `${i.inflight}${i.latency_ms === null ? "" : ` / ${i.latency_ms} ms`}` }),
    el("td", {}, ...meta),
    actions);
}

// The instance whose deregistration waits for a yes: kept here, so a live redraw keeps asking.
let confirming = null;

function deregisterControls(service, instanceId) {
  if (!confirming || confirming.service !== service || confirming.instance !== instanceId) {
    return [el("button", { className: "deregister", text: "deregister", on: { click: () => { confirming = { service, instance: instanceId }; render(); } } })];
  }
  return [
    el("span", { text: `Deregister ${instanceId}? ` }),
    el("button", { className: "confirm", text: "yes, deregister", on: { click: async () => { confirming = null; await write(`/v1/ui/services/${encodeURIComponent(service)}/deregister`, { instance_id: instanceId }); render(); } } }),
    " ",
    el("button", { className: "cancel", text: "cancel", on: { click: () => { confirming = null; render(); } } }),
  ];
}

async function change(service, body, draft = "") {
  if (await write(`/v1/ui/services/${encodeURIComponent(service)}/change`, body)) drafts.delete(draft);
  render();
}

async function serviceView(name) {
  const s = await read(`/v1/ui/services/${encodeURIComponent(name)}`);
  const strategyKey = `${s.service}/strategy`;
  const chosen = drafted(strategyKey, s.strategy);
  const strategy = el("select", { id: "strategy", on: { change: (e) => drafts.set(strategyKey, e.target.value) } },
    ...s.strategies.map((n) => {
      const option = el("option", { value: n, text: n });
      option.selected = n === chosen;
      return option;
    }));
  return [
    el("h2", {}, "Service ", el("span", { id: "service-name", text: s.service })),
    el("p", {},
      `${s.instances.length} instances · config revision ${s.revision} · `,
      s.panic ? el("strong", { text: "PANIC (too few healthy: the unhealthy take traffic too) · " }) : null,
      link("history", `#/history/${encodeURIComponent(s.service)}`),
      s.grafana ? " · " : null,
      s.grafana ? el("a", { href: s.grafana, text: "Grafana", rel: "noreferrer" }) : null),
    el("p", {}, "Strategy ", strategy, " ",
      el("button", { id: "set-strategy", text: "change strategy", on: { click: () => change(s.service, { strategy: strategy.value }, strategyKey) } })),
    table(["instance", "address", "zone", "version", "weight", "state", "in flight / latency", "metadata", ""],
      s.instances.map((i) => instanceRow(s.service, i)), "instances"),
    el("h3", { text: "Config" }),
    el("pre", { className: "config", text: JSON.stringify(s.config, null, 2) }),
  ];
}

async function historyView(name) {
  const h = await read(`/v1/ui/history/${encodeURIComponent(name)}`);
  const newest = h.revisions.length ? h.revisions[0].revision : 0;
  const rows = h.revisions.map((r) =>
    el("tr", { dataset: { revision: String(r.revision) } },
      el("td", { text: `r${r.revision}` }),
      el("td", { text: r.at }),
      el("td", { text: r.actor }),
      el("td", { text: r.reason + (r.kind === "rollback" ? ` (rollback to r${r.restored})` : "") }),
      el("td", {}, el("ul", { className: "diff" }, ...r.changes.map((c) =>
        el("li", { text: `${c.setting}: ${JSON.stringify(c.before)} → ${JSON.stringify(c.after)}` })))),
      el("td", {}, r.revision === newest ? "current" : el("button", {
        className: "rollback", text: `roll back to r${r.revision}`,
        on: { click: async () => { await write(`/v1/ui/services/${encodeURIComponent(h.service)}/rollback`, { to_revision: r.revision, reason: "from the console" }); render(); } },
      }))));
  return [
    el("h2", {}, "History of ", link(h.service, `#/service/${encodeURIComponent(h.service)}`)),
    table(["revision", "when", "who", "why", "what changed", ""], rows, "history"),
  ];
}

async function workersView() {
  const w = await read("/v1/ui/workers");
  const rows = w.workers.map((r) => {
    const requests = r.endpoints.reduce((n, e) => n + e.num_requests, 0);
    const errors = r.endpoints.reduce((n, e) => n + e.num_errors, 0);
    return el("tr", { dataset: { worker: r.name } },
      el("td", { text: r.name }), el("td", { text: r.id }), el("td", { text: r.version }),
      el("td", { text: r.started }),
      el("td", { text: r.endpoints.map((e) => e.name).join(", ") }),
      el("td", { text: requests }), el("td", { text: errors }));
  });
  return [
    el("h2", { text: "Workers" }),
    el("p", { id: "leader", text: w.registry_leader ? `The registry replica ${w.registry_leader} leads.` : "No registry replica says which one leads." }),
    table(["worker", "id", "version", "started", "endpoints", "requests", "errors"], rows, "workers"),
  ];
}

// -- routing and rendering ------------------------------------------------------------------
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "service" && parts[1]) return () => serviceView(parts[1]);
  if (parts[0] === "history" && parts[1]) return () => historyView(parts[1]);
  if (parts[0] === "workers") return workersView;
  return overview;
}

let rendering = Promise.resolve();
function render() {
  rendering = rendering.then(async () => {
    try {
      const nodes = await route()();
      const active = document.activeElement;
      const focused = active && main.contains(active) && (active.tagName === "INPUT" || active.tagName === "SELECT");
      if (focused) return; // someone is typing or choosing: the next change redraws
      main.replaceChildren(...nodes);
      main.dataset.rendered = String(Date.now());
    } catch (err) {
      main.replaceChildren(el("p", { className: "error", text: err.message }));
    }
  });
  return rendering;
}

let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; render(); }, 100);
}

// -- live: one event stream; while it is away the page says so, on return it refetches --------
function listen() {
  const events = new EventSource("/v1/ui/events");
  events.addEventListener("open", () => {
    status.textContent = "live";
    status.className = "live";
    render(); // resync: whatever happened while away is in the answer
  });
  events.addEventListener("error", () => {
    status.textContent = "away: reconnecting…";
    status.className = "away";
  });
  events.addEventListener("change", (e) => {
    const c = JSON.parse(e.data);
    feed.unshift(`${new Date().toISOString().slice(11, 19)} ${c.kind} ${c.service}${c.instance_id ? ` ${c.instance_id}` : ""}`);
    feed.length = Math.min(feed.length, 50);
    soon();
  });
  events.addEventListener("resync", soon);
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (tokenInput.value) sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  else sessionStorage.removeItem(TOKEN_KEY);
  say(tokenInput.value ? "Token kept for this tab." : "Token forgotten.", true);
});
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
window.addEventListener("hashchange", () => { say(""); confirming = null; drafts.clear(); render(); });
listen();
render();
