// Annotator management (GET /api/admin/annotators, POST /api/admin/annotators/{username}):
// every account on this node with its committed work, suspend or reinstate, make admin.
import { api } from "../api.js";
import { $, boot, el, fill, fmt, requireUser, toast } from "../ui.js";

let accounts = [];
let me = null;

function weightCell(stats) {
  if (!stats) return el("td", { class: "muted", text: "—" });
  const bar = el("span", { class: "bar", "aria-hidden": "true" }, el("span"));
  bar.firstChild.style.width = `${Math.round(stats.weight * 100)}%`;
  return el("td", {}, bar, fmt.fixed(stats.weight));
}

async function change(account, body, done) {
  try {
    await api(`/api/admin/annotators/${encodeURIComponent(account.username)}`, { method: "POST", json: body });
    toast(done, "ok");
    await load();
  } catch (error) {
    toast(error.message, "error");
  }
}

function row(account) {
  const s = account.stats;
  const self = account.username === me.username;
  return el("tr", { "data-username": account.username },
    el("td", {}, el("strong", { text: account.username }),
      el("div", { class: "muted small key", text: account.keys.length ? fmt.short(account.keys.at(-1)) : "no key yet" })),
    el("td", {}, el("span", { class: account.role === "admin" ? "badge accent" : "badge", text: account.role })),
    el("td", { class: "num", text: s ? `${fmt.int(s.committed)} (+${fmt.int(s.pending)})` : "0" }),
    el("td", { class: "num", text: s && s.gold_seen ? `${fmt.pct(s.gold_correct / s.gold_seen)} of ${s.gold_seen}` : "—",
      title: "gold accuracy, of how many gold tasks" }),
    weightCell(s),
    el("td", {}, account.suspended ? el("span", { class: "badge danger", text: "suspended" }) : null,
      (s ? s.flags : []).map((f) => el("span", { class: "badge warn", text: f.replaceAll("_", " ") }))),
    el("td", { class: "num", text: s ? fmt.num(s.reward, 1) : "—" }),
    el("td", {}, self ? el("span", { class: "muted small", text: "you" }) : el("div", { class: "button-row" },
      el("button", { type: "button", class: account.suspended ? "button small" : "button small danger",
        onclick: () => change(account, { suspended: !account.suspended },
          `${account.username} ${account.suspended ? "reinstated" : "suspended"}`),
        text: account.suspended ? "Reinstate" : "Suspend", "aria-label": `${account.suspended ? "Reinstate" : "Suspend"} ${account.username}` }),
      account.role === "annotator" ? el("button", { type: "button", class: "button small ghost",
        onclick: () => change(account, { role: "admin" }, `${account.username} is now an admin`),
        text: "Make admin", "aria-label": `Make ${account.username} an admin` }) : null)));
}

function render() {
  const needle = $("#filter").value.trim().toLowerCase();
  const shown = accounts.filter((a) => !needle || a.username.includes(needle)
    || a.keys.some((k) => k.startsWith(needle)));
  $("#annotator-count").textContent = `${shown.length} of ${accounts.length} accounts`;
  fill($("#annotators tbody"), shown.length ? shown.map(row)
    : el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No account matches." })));
}

async function load() {
  accounts = (await api("/api/admin/annotators")).accounts;
  render();
}

async function start() {
  me = await requireUser("admin");
  if (!me) return;
  $("#filter").addEventListener("input", render);
  await load();
}

boot(start);
