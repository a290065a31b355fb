// Small DOM helpers the pages share: element building, notices, number formats, and the
// page frame (who is signed in, sign-out, the admin link).
import { api, currentUser, setCsrf } from "./api.js";

/** el("div", {class: "x", onclick: f}, child, "text", ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function $(selector) {
  return document.querySelector(selector);
}

export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

let toastTimer = 0;
/** A short notice at the bottom of the screen, read out by screen readers. */
export function toast(message, kind = "info") {
  const box = $("#toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 6000 : 2500);
}

export function showError(node, error) {
  node.textContent = error.message;
  node.hidden = false;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
export const fmt = {
  int: (n) => (n === null || n === undefined ? "—" : integer.format(n)),
  num: (n, digits = 2) => (n === null || n === undefined || Number.isNaN(n) ? "—"
    : new Intl.NumberFormat(undefined, { maximumFractionDigits: digits }).format(n)),
  fixed: (n, digits = 2) => (n === null || n === undefined || Number.isNaN(n) ? "—"
    : new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(n)),
  pct: (n) => (n === null || n === undefined || Number.isNaN(n) ? "—" : `${decimal.format(100 * n)}%`),
  short: (hex) => (hex ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : "—"),
};

/** Fill the header for the signed-in account, or send the visitor to sign in. `role`: the
 * role the page needs ("admin"), if any. Returns the account, or null (when redirecting). */
export async function requireUser(role) {
  const me = await currentUser();
  if (!me) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.replace(`/login?next=${next}`);
    return null;
  }
  $("#who").textContent = me.username;
  $("#account").hidden = false;
  for (const link of document.querySelectorAll("[data-admin-only]")) link.hidden = me.role !== "admin";
  $("#sign-out").addEventListener("click", async () => {
    try { await api("/api/auth/logout", { method: "POST" }); } catch { /* signed out anyway */ }
    setCsrf(null);
    location.assign("/login");
  });
  if (role && me.role !== role) {
    fill($("main"), el("section", { class: "card empty" },
      el("h1", { text: "Admins only" }),
      el("p", { text: "This page is for the node's administrators." }),
      el("a", { class: "button", href: "/dashboard", text: "Back to your dashboard" })));
    return null;
  }
  return me;
}

/** Run a page's `start`; if it fails (the node unreachable, rate-limited, ...), say so in the
 * page with a way to retry, instead of leaving it half drawn. */
export function boot(start) {
  start().catch((error) => {
    fill($("main"), el("section", { class: "card empty", role: "alert" },
      el("h1", { text: "This page could not load" }),
      el("p", { class: "muted", text: error.message || "Something went wrong." }),
      el("button", { class: "button primary", type: "button", onclick: () => location.reload(), text: "Try again" })));
  });
}
