// The shopper socket (docs/protocol.md): keeps the header cart, size buttons and the checkout page
// live. Server-rendered markup works before the socket connects; this module takes over.

const NO_CART_CLOSE_CODE = 4001;
// The login state this page was opened under has ended (login, logout, cart re-linked): a
// fresh page view carries the new one (its cart cookie, its header). Not at once: the
// login's own response may still be setting the new session cookie.
const LOGIN_CHANGED_CLOSE_CODE = 4002;
const RELOAD_DELAY_MS = 1000;
const RELOADED_KEY = "live-carts:reloaded-for-login";
// Too many pages of the shop are open from here (per shopper, per address): retrying would
// be refused the same way until some close.
const TOO_MANY_SOCKETS_CLOSE_CODE = 4029;
const ERROR_TEXT = {
  out_of_stock: "Sorry, not enough stock for that size.",
  not_found: "That item is no longer for sale.",
  rate_limited: "Slow down a little and try again.",
};

const widget = document.getElementById("cart-widget");
const countEl = document.getElementById("cart-count");
const linesEl = document.getElementById("cart-lines");
const emptyEl = document.getElementById("cart-empty");
const panel = document.getElementById("cart-panel");
const toggle = document.getElementById("cart-toggle");
const statusEl = document.getElementById("cart-status");
const checkoutEl = document.getElementById("checkout");
const presenceEl = document.getElementById("product-presence"); // product pages only

let socket = null;
let buying = false;
let retryDelay = 500;
let nextRequestId = 1;
const pending = new Map(); // request_id -> button waiting for the reply
let ownItems = new Set(); // item ids (as strings) in this page's cart
let presence = null; // the product's latest numbers (product_presence)

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("is-error", isError);
}

function signature(cart) {
  return cart.items.map((line) => `${line.item_id}:${line.quantity}`).join(",");
}

function renderLine(line) {
  const li = document.createElement("li");
  li.className = "cart-line";
  li.dataset.itemId = line.item_id;

  const info = document.createElement("span");
  const name = document.createElement("span");
  name.className = "cart-line__name";
  name.textContent = line.product;
  const size = document.createElement("span");
  size.className = "cart-line__size";
  size.textContent = `Size ${line.size} · €${line.price}`;
  info.append(name, size);
  if (!line.available) {
    const warn = document.createElement("span");
    warn.className = "cart-line__unavailable";
    warn.textContent = "Not available";
    info.append(warn);
  }

  const qty = document.createElement("span");
  qty.className = "cart-line__qty";
  qty.textContent = `× ${line.quantity}`;

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "cart-line__remove";
  remove.dataset.remove = line.item_id;
  remove.setAttribute("aria-label", `Remove one ${line.product} size ${line.size}`);
  remove.textContent = "−";

  li.append(info, qty, remove);
  return li;
}

function renderCart(cart) {
  ownItems = new Set(cart.items.map((line) => String(line.item_id)));
  if (presence) renderPresence(presence);
  countEl.textContent = cart.total_quantity;
  countEl.dataset.count = cart.total_quantity;
  linesEl.replaceChildren(...cart.items.map(renderLine));
  emptyEl.hidden = cart.items.length > 0;
  // The checkout page is server-rendered: reload it (as a GET) when the cart differs,
  // unless this page is buying it (the purchase's own answer is on its way).
  if (checkoutEl && !buying && checkoutEl.dataset.cartSignature !== signature(cart)) {
    window.location.assign(window.location.pathname);
  }
}

function renderStock(itemId, level) {
  for (const button of document.querySelectorAll(`.size[data-item-id="${itemId}"]`)) {
    button.dataset.level = level;
    button.disabled = level === "out";
    button.querySelector(".size__level").textContent = level;
  }
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

// The numbers count this page's own cart too: show only the other shoppers, and nothing
// while there are none (no "1 person viewing" about yourself).
function renderPresence(message) {
  presence = message;
  if (!presenceEl || presenceEl.dataset.product !== message.product) return;
  const others = message.viewers - 1;
  presenceEl.textContent =
    others > 0 ? `${plural(others, "other shopper is", "other shoppers are")} looking at this` : "";
  presenceEl.hidden = others <= 0;
  for (const button of document.querySelectorAll(".size[data-item-id]")) {
    const itemId = button.dataset.itemId;
    const carts = (message.in_carts[itemId] || 0) - (ownItems.has(itemId) ? 1 : 0);
    button.querySelector(".size__carts").textContent =
      carts > 0 ? `in ${plural(carts, "other cart", "other carts")}` : "";
  }
}

function send(message, button) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    setStatus("Reconnecting… try again in a moment.", true);
    return;
  }
  const requestId = nextRequestId++;
  if (button) {
    button.classList.add("is-busy");
    pending.set(requestId, button);
  }
  socket.send(JSON.stringify({ ...message, request_id: requestId }));
}

function settle(requestId) {
  const button = pending.get(requestId);
  if (button) {
    button.classList.remove("is-busy");
    pending.delete(requestId);
  }
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  switch (message.type) {
    case "cart":
      renderCart(message.cart);
      break;
    case "stock":
      renderStock(message.item_id, message.level);
      break;
    case "stock_levels":
      for (const [itemId, level] of Object.entries(message.levels)) renderStock(itemId, level);
      break;
    case "product_presence":
      renderPresence(message);
      break;
    case "ok":
      settle(message.request_id);
      setStatus("Cart updated.");
      break;
    case "error":
      settle(message.request_id);
      setStatus(ERROR_TEXT[message.code] || message.message, true);
      if (message.code !== "no_cart" && message.code !== "too_many_sockets") panel.hidden = false;
      break;
  }
}

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const page = encodeURIComponent(window.location.pathname);
  // levels=1: the current stock levels first, then every change: whatever changed since this
  // page was rendered, or while the socket was down, is caught up.
  socket = new WebSocket(`${scheme}://${window.location.host}${widget.dataset.socketPath}?page=${page}&levels=1`);
  widget.dataset.connected = "false";
  socket.addEventListener("open", () => {
    retryDelay = 500;
    widget.dataset.connected = "true";
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", (event) => {
    widget.dataset.connected = "false";
    for (const requestId of pending.keys()) settle(requestId);
    if (event.code === NO_CART_CLOSE_CODE) {
      setStatus("Your session has no cart. Reload the page.", true);
      return;
    }
    if (event.code === LOGIN_CHANGED_CLOSE_CODE) {
      reloadForNewLogin();
      return;
    }
    if (event.code === TOO_MANY_SOCKETS_CLOSE_CODE) {
      setStatus("Too many pages of the shop are open. Close some, then reload this one.", true);
      return;
    }
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  });
}

function reloadForNewLogin() {
  // At most one automatic reload in 10 s: should the new page be closed the same way (it
  // never should), the shopper is asked instead of the page reloading in a loop.
  const last = Number(window.sessionStorage.getItem(RELOADED_KEY) || 0);
  if (Date.now() - last < 10000) {
    setStatus("You logged in or out in another tab. Reload the page.", true);
    return;
  }
  setStatus("You logged in or out in another tab: reloading…");
  window.sessionStorage.setItem(RELOADED_KEY, String(Date.now()));
  setTimeout(() => window.location.reload(), RELOAD_DELAY_MS);
}

checkoutEl?.querySelector("form")?.addEventListener("submit", () => {
  buying = true;
});

toggle.addEventListener("click", () => {
  panel.hidden = !panel.hidden;
  toggle.setAttribute("aria-expanded", String(!panel.hidden));
});

document.addEventListener("click", (event) => {
  const size = event.target.closest(".size");
  if (size && !size.disabled) {
    send({ type: "add_item", item_id: Number(size.dataset.itemId) }, size);
    return;
  }
  const remove = event.target.closest("[data-remove]");
  if (remove) {
    send({ type: "remove_item", item_id: Number(remove.dataset.remove) }, remove);
  }
});

connect();
