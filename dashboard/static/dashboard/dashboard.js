// The staff dashboard: one staff socket, a snapshot, then coalesced diffs (docs/protocol.md).
// Every value shown comes from the server and is written with textContent, never as HTML:
// page paths and usernames are typed by shoppers.

const HISTORY_SECONDS = 15 * 60;
const MAX_SHOPPER_ROWS = 100;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const NOT_STAFF_CLOSE_CODE = 4403;
const LOGIN_CHANGED_CLOSE_CODE = 4002; // its session logged out or in again

const root = document.getElementById("dashboard");
const statusText = root.querySelector("[data-status]");

let stats = null; // {shoppers, pages, items, pages_by_path, carts}
let catalog = {}; // item id -> {product, size, stock, level}
let replicas = {};
let node = null;
let history = []; // [t, shoppers, pages], server seconds, oldest first
let clockOffset = 0; // server seconds minus local seconds
let attempts = 0;
let renderQueued = false;

const serverNow = () => Date.now() / 1000 + clockOffset;

// -- connection -------------------------------------------------------------------------

function setState(state, text) {
  root.dataset.state = state;
  statusText.textContent = text;
}

async function fetchToken() {
  const response = await fetch(root.dataset.tokenUrl, {
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  });
  if (response.status === 403) {
    // No longer staff (or logged out): the page itself now shows the login or 403 page.
    window.location.reload();
    return null;
  }
  if (!response.ok) throw new Error(`token request failed: ${response.status}`);
  return (await response.json()).token;
}

async function connect() {
  setState(attempts ? "reconnecting" : "connecting", attempts ? "Reconnecting…" : "Connecting…");
  let token;
  try {
    token = await fetchToken(); // a fresh one every time: tokens live a minute
  } catch {
    retry();
    return;
  }
  if (token === null) return;
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${window.location.host}${root.dataset.socketPath}?token=${encodeURIComponent(token)}`;
  const socket = new WebSocket(url);
  socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (event.code === NOT_STAFF_CLOSE_CODE) {
      window.location.reload();
      return;
    }
    if (event.code === LOGIN_CHANGED_CLOSE_CODE) {
      // (a moment later: a login in another tab may still be setting its session cookie)
      setState("reconnecting", "Logged out or in again: reloading…");
      window.setTimeout(() => window.location.reload(), 1000);
      return;
    }
    retry();
  });
}

function retry() {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: staff pages spread out
  attempts += 1;
  setState("reconnecting", `Reconnecting… (next try in ${Math.ceil(delay / 1000)} s)`);
  window.setTimeout(connect, delay);
}

// -- messages ---------------------------------------------------------------------------

function receive(message) {
  if (typeof message.t === "number") clockOffset = message.t - Date.now() / 1000;
  if (message.type === "snapshot") {
    stats = message.stats;
    catalog = { ...catalog, ...message.catalog };
    replicas = message.replicas;
    node = message.node;
    history = message.history;
    attempts = 0;
    setState("live", "Live");
  } else if (message.type === "diff" && stats !== null) {
    applyDiff(message.stats);
    Object.assign(catalog, message.catalog);
    if (message.replicas) replicas = message.replicas;
    if ("shoppers" in message.stats || "pages" in message.stats) {
      history.push([message.t, stats.shoppers, stats.pages]);
      trimHistory();
    }
  } else if (message.type === "stock") {
    const { product, size, stock, level } = message;
    catalog[message.item_id] = { product, size, stock, level };
  }
  queueRender();
}

function applyDiff(diff) {
  if ("shoppers" in diff) stats.shoppers = diff.shoppers;
  if ("pages" in diff) stats.pages = diff.pages;
  for (const name of ["items", "pages_by_path"]) {
    for (const [key, value] of Object.entries(diff[name] || {})) {
      if (value) stats[name][key] = value;
      else delete stats[name][key];
    }
  }
  for (const [cartId, entry] of Object.entries(diff.carts || {})) {
    if (entry === null) delete stats.carts[cartId];
    else stats.carts[cartId] = entry;
  }
}

function trimHistory() {
  // Keep the last sample before the window: it holds the values at the window's start.
  const start = serverNow() - HISTORY_SECONDS;
  while (history.length > 1 && history[1][0] <= start) history.shift();
}

// -- rendering --------------------------------------------------------------------------

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  window.requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  if (stats === null) return;
  root.querySelector('[data-stat="shoppers"]').textContent = stats.shoppers;
  root.querySelector('[data-stat="pages"]').textContent = stats.pages;
  renderItems();
  renderPages();
  renderShoppers();
  renderReplicas();
  renderChart();
}

function el(tag, text, className) {
  const element = document.createElement(tag);
  if (text !== undefined) element.textContent = text;
  if (className) element.className = className;
  return element;
}

function fillTable(name, rows) {
  root.querySelector(`[data-table="${name}"]`).replaceChildren(...rows);
  root.querySelector(`[data-empty="${name}"]`).hidden = rows.length > 0;
}

function renderItems() {
  const rows = Object.entries(stats.items)
    .map(([id, quantity]) => ({ id, quantity, info: catalog[id] }))
    .sort((a, b) => b.quantity - a.quantity || label(a).localeCompare(label(b)))
    .map(({ id, quantity, info }) => {
      const tr = el("tr");
      tr.dataset.item = id;
      tr.append(
        el("td", info ? info.product : `Item #${id}`),
        el("td", info ? info.size : "–"),
        el("td", quantity, "num"),
      );
      const stock = el("td", info ? info.stock : "–", "num stock");
      if (info) stock.dataset.level = info.level;
      tr.append(stock);
      return tr;
    });
  fillTable("items", rows);
}

const label = ({ id, info }) => (info ? `${info.product} ${info.size}` : `#${id}`);

function renderPages() {
  const rows = Object.entries(stats.pages_by_path)
    .sort(([pathA, a], [pathB, b]) => b - a || pathA.localeCompare(pathB))
    .map(([path, count]) => {
      const tr = el("tr");
      tr.append(el("td", path, "path"), el("td", count, "num"));
      return tr;
    });
  fillTable("pages", rows);
}

function renderShoppers() {
  const now = serverNow();
  const carts = Object.entries(stats.carts).sort(([, a], [, b]) => (b.since ?? 0) - (a.since ?? 0));
  const rows = carts.slice(0, MAX_SHOPPER_ROWS).map(([cartId, cart]) => {
    const tr = el("tr");
    tr.dataset.cart = cartId;
    const id = el("td", cartId.slice(0, 8), "mono");
    id.title = cartId;
    const user = cart.user ? el("td", cart.user) : el("td", "guest", "guest");
    tr.append(id, user, el("td", cart.pages, "num"), el("td", cart.items, "num"), since(cart.since, now));
    return tr;
  });
  fillTable("shoppers", rows);
  const more = root.querySelector('[data-more="shoppers"]');
  more.hidden = carts.length <= MAX_SHOPPER_ROWS;
  more.textContent = `…and ${carts.length - MAX_SHOPPER_ROWS} more`;
}

function since(seconds, now) {
  if (typeof seconds !== "number") return el("td", "–");
  const cell = el("td");
  const time = el("time", new Date(seconds * 1000).toLocaleTimeString());
  time.dateTime = new Date(seconds * 1000).toISOString();
  cell.append(time, el("span", ` (${ago(now - seconds)})`, "muted"));
  return cell;
}

function ago(seconds) {
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function renderReplicas() {
  const items = Object.entries(replicas)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([replica, status]) => {
      const li = el("li", undefined, "replica");
      li.dataset.status = status;
      li.append(el("span", status, "replica__status"), el("span", replica, "mono"));
      if (replica === node) li.append(el("span", "this server", "replica__self"));
      return li;
    });
  root.querySelector('[data-list="replicas"]').replaceChildren(...items);
  root.querySelector('[data-empty="replicas"]').hidden = items.length > 0;
}

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 150;
const PAD = 6;

function renderChart() {
  const svg = root.querySelector("[data-chart]");
  const now = serverNow();
  const start = now - HISTORY_SECONDS;
  const peak = Math.max(1, ...history.map(([, shoppers, pages]) => Math.max(shoppers, pages)));
  const x = (t) => ((Math.max(t, start) - start) / HISTORY_SECONDS) * WIDTH;
  const y = (value) => HEIGHT - PAD - (value / peak) * (HEIGHT - 2 * PAD);
  const step = (index) => {
    // A step line: each value holds until the next sample, the last one until now.
    let d = "";
    history.forEach((sample, i) => {
      const px = x(sample[0]).toFixed(1);
      const py = y(sample[index]).toFixed(1);
      d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
    });
    return history.length ? `${d}H${WIDTH}` : "";
  };
  const grid = [0, 0.5, 1].map((fraction) => {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", 0);
    line.setAttribute("x2", WIDTH);
    line.setAttribute("y1", y(peak * fraction));
    line.setAttribute("y2", y(peak * fraction));
    line.setAttribute("class", "chart__grid");
    return line;
  });
  const lines = [
    [2, "chart__line chart__line--pages"],
    [1, "chart__line chart__line--shoppers"],
  ].map(([index, className]) => {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", step(index));
    path.setAttribute("class", className);
    path.setAttribute("vector-effect", "non-scaling-stroke");
    return path;
  });
  svg.replaceChildren(...grid, ...lines);
  root.querySelector("[data-chart-max]").textContent = `max ${peak}`;
}

// Time moves on without diffs: keep the chart's "now" and the "online since" ages current.
window.setInterval(() => {
  trimHistory();
  queueRender();
}, 5000);

connect();
