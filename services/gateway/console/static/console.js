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
  const resp = await fetch(path, { headers: authorised({ Accept: "application/json" }), credentials: "omit" });
  const body = await resp.json().catch(() => ({ message: `${resp.status} ${resp.statusText}` }));
  if (!resp.ok) throw new Error(body.message || `${resp.status} ${resp.statusText}`);
  return body;
}

function authorised(headers) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`; // a header, never a cookie
  return headers;
}

async function write(path, body, method = "POST", raw = false) {
  const headers = authorised(raw ? { "Content-Type": "application/octet-stream" } : { "Content-Type": "application/json" });
  const resp = await fetch(path, { method, headers, body: raw ? body : JSON.stringify(body), credentials: "omit" });
  const text = await resp.text();
  const reply = (() => { try { return JSON.parse(text); } catch { return { message: text.trim() || `${resp.status} ${resp.statusText}` }; } })();
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
      el("td", { className: "state-warning", text: s.counts.warning }),
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
    ...["", "passing", "warning", "critical", "drained", "ejected"].map((s) => {
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
    table(["service", "instances", "passing", "warning", "critical", "drained", "ejected", "strategy", "panic", "config"], rows, "services"),
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
  const checks = i.checks.map((c) => el("div", { className: `check state-${c.status}`, dataset: { check: c.check_id } },
    el("span", { className: "check-status", text: `${c.check_id} ${c.status}` }),
    c.kind ? ` (${c.kind} ${c.target})` : null,
    el("pre", { className: "output", text: c.output })));
  return el("tr", { dataset: { instance: i.instance_id } },
    el("td", { text: i.instance_id }),
    el("td", { text: i.address }),
    el("td", { text: i.zone }),
    el("td", { text: i.version }),
    el("td", { text: weightText(i) }),
    stateCell(i.state, i.why),
    el("td", { text: `${i.inflight}${i.latency_ms === null ? "" : ` / ${i.latency_ms.toFixed(1)} ms`}` }),
    el("td", { className: "checks" }, ...(checks.length ? checks : ["TTL only"])),
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
    table(["instance", "address", "zone", "version", "weight", "state", "in flight / latency", "checks", "metadata", ""],
      s.instances.map((i) => instanceRow(s.service, i)), "instances"),
    ...outlierForm(s),
    el("h3", { text: "Config" }),
    el("pre", { className: "config", text: JSON.stringify(s.config, null, 2) }),
  ];
}

// The outlier settings as `baton set SERVICE outlier key=value`: each value typed is read
// as JSON (true, 3, 0.5), else sent as typed; the governor judges it and says what is wrong.
function typedValue(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function outlierForm(s) {
  const current = s.config.outlier || {};
  const inputs = Object.entries(current).map(([key, value]) => {
    const draftKey = `${s.service}/outlier/${key}`;
    const input = el("input", {
      name: key, value: drafted(draftKey, String(value)), dataset: { setting: key },
      on: { input: (e) => drafts.set(draftKey, e.target.value) },
    });
    return { key, value, draftKey, input, row: el("tr", { dataset: { outlier: key } }, el("td", { text: key }), el("td", {}, input)) };
  });
  const send = async () => {
    const changed = {};
    for (const { key, value, input } of inputs) if (input.value !== String(value)) changed[key] = typedValue(input.value);
    if (!Object.keys(changed).length) { say("No outlier setting changed."); return; }
    if (await write(`/v1/ui/services/${encodeURIComponent(s.service)}/change`, { outlier: changed, reason: "from the console" })) {
      for (const { draftKey } of inputs) drafts.delete(draftKey);
    }
    render();
  };
  return [
    el("h3", { text: "Outlier ejection" }),
    el("table", { id: "outlier" }, el("tbody", {}, ...inputs.map((i) => i.row))),
    el("p", {}, el("button", { id: "set-outlier", text: "change outlier settings", on: { click: send } })),
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

// -- config center: browse and edit through Consul's KV routes, history through the console's --
function kvPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

async function kvRead(path, asText = false) {
  const resp = await fetch(path, { headers: authorised({}), credentials: "omit" });
  if (resp.status === 404) return null;
  if (!resp.ok) throw new Error((await resp.text()).trim() || `${resp.status} ${resp.statusText}`);
  return asText ? resp : resp.json();
}

async function kvBrowse(prefix) {
  const names = (await kvRead(`/v1/kv/${kvPath(prefix)}?keys&separator=/`)) || [];
  const rows = names.map((name) => el("tr", { dataset: { key: name } },
    el("td", {}, name.endsWith("/")
      ? link(name, `#/kv/${encodeURIComponent(name)}`)
      : link(name, `#/kv-key/${encodeURIComponent(name)}`))));
  const up = prefix.replace(/[^/]*\/$/, "");
  const fresh = el("input", { id: "new-key", placeholder: "new key", value: prefix });
  return [
    el("h2", {}, "Config keys under ", el("span", { id: "kv-prefix", text: prefix || "(all)" })),
    prefix ? el("p", {}, link("↑ up", `#/kv/${encodeURIComponent(up)}`)) : null,
    names.length ? table(["key"], rows, "keys") : el("p", { id: "keys", text: "No keys here." }),
    el("p", {}, fresh, " ", el("button", { id: "open-key", text: "open or create", on: { click: () => { location.hash = `#/kv-key/${encodeURIComponent(fresh.value)}`; } } })),
  ];
}

async function kvKey(key) {
  const found = await kvRead(`/v1/kv/${kvPath(key)}`);
  const entry = found ? found[0] : null;
  const raw = entry ? await (await kvRead(`/v1/kv/${kvPath(key)}?raw`, true)).text() : "";
  const history = entry ? await read(`/v1/ui/kv/history/${kvPath(key)}`) : { revisions: [] };
  const draftKey = `kv/${key}`;
  const editor = el("textarea", { id: "kv-edit", rows: "8", cols: "80", on: { input: (e) => drafts.set(draftKey, e.target.value) } });
  editor.value = drafted(draftKey, raw);
  const cas = entry ? entry.ModifyIndex : 0;
  const put = async () => {
    const stored = await write(`/v1/kv/${kvPath(key)}?cas=${cas}`, editor.value, "PUT", true);
    if (stored === false) say(`Not stored: ${key} changed since this page read it (index ${cas}); its new value is shown.`);
    if (stored !== null) drafts.delete(draftKey);
    render();
  };
  const folder = key.includes("/") ? key.slice(0, key.lastIndexOf("/") + 1) : "";
  const rows = history.revisions.map((r, n) => el("tr", { dataset: { index: String(r.index) } },
    el("td", { text: String(r.index) }),
    el("td", { text: r.at || "" }),
    el("td", { text: r.actor }),
    el("td", { text: r.reason + (r.restored ? ` (rollback to ${r.restored})` : "") }),
    el("td", {}, el("pre", { className: "diff", text: r.op === "delete" ? "(deleted)" : r.diff.join("\n") })),
    el("td", {}, n === 0 || r.op === "delete" ? "current" : el("button", {
      className: "kv-rollback", text: `roll back to ${r.index}`,
      on: { click: async () => { await write(`/v1/ui/kv/rollback/${kvPath(key)}`, { to_index: r.index, reason: "from the console" }); render(); } },
    }))));
  return [
    el("h2", {}, "Key ", el("span", { id: "kv-key", text: key }), " in ", link(folder || "(all)", `#/kv/${encodeURIComponent(folder)}`)),
    entry
      ? el("p", { text: `index ${entry.ModifyIndex} · flags ${entry.Flags} · ${raw.length} characters` })
      : el("p", { text: "No such key yet: what you store creates it." }),
    el("pre", { id: "kv-value", className: "config", text: raw }),
    editor,
    el("p", {}, el("button", { id: "kv-put", text: entry ? "store" : "create", on: { click: put } })),
    el("h3", { text: "History" }),
    table(["index", "when", "who", "why", "what changed", ""], rows, "kv-history"),
  ];
}

// -- routing and rendering ------------------------------------------------------------------
function route() {
  if (location.hash.startsWith("#/kv/")) return () => kvBrowse(decodeURIComponent(location.hash.slice(5)));
  if (location.hash.startsWith("#/kv-key/")) return () => kvKey(decodeURIComponent(location.hash.slice(9)));
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
      const focused = active && main.contains(active) && ["INPUT", "SELECT", "TEXTAREA"].includes(active.tagName);
      if (focused) return; // someone is typing or choosing: the next change redraws
      main.replaceChildren(...nodes);
      main.dataset.rendered = String(Date.now());
      performance.mark("baton:drawn"); // the content is in the page: what the benchmark times
    } catch (err) {
      main.replaceChildren(el("p", { className: "error", text: err.message }));
    }
  });
  return rendering;
}

// At most one refetch per 100 ms: the first change of a quiet spell redraws at once, the
// ones that follow within 100 ms are taken by one redraw at its end.
const SPELL_MS = 100;
let pending = null;
let last = 0;
function soon() {
  if (pending) return;
  const wait = last + SPELL_MS - performance.now();
  if (wait <= 0) { last = performance.now(); render(); return; }
  pending = setTimeout(() => { pending = null; last = performance.now(); render(); }, wait);
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
