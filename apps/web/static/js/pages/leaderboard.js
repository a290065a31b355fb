// The leaderboard (GET /api/leaderboard): annotators by reward, the signed-in one marked.
import { api } from "../api.js";
import { $, boot, el, fill, fmt, requireUser } from "../ui.js";

function weightCell(weight) {
  const bar = el("span", { class: "bar", "aria-hidden": "true" }, el("span"));
  bar.firstChild.style.width = `${Math.round(weight * 100)}%`;
  return el("td", {}, bar, fmt.fixed(weight));
}

async function start() {
  const me = await requireUser();
  if (!me) return;
  const board = await api("/api/leaderboard?limit=100");
  const body = $("#board tbody");
  if (!board.rows.length) {
    fill(body, el("tr", {}, el("td", { colspan: "6", class: "muted", text: "Nobody is ranked yet: rankings start when a round commits annotations." })));
    return;
  }
  fill(body, board.rows.map((row) => {
    const mine = me.keys.includes(row.public_key);
    return el("tr", { class: mine ? "me" : "", "aria-current": mine ? "true" : null },
      el("td", { text: `#${row.rank}` }),
      el("td", {}, el("strong", { text: row.username || fmt.short(row.public_key) }),
        mine ? el("span", { class: "badge accent", text: "you" }) : null,
        row.suspended ? el("span", { class: "badge danger", text: "suspended" }) : null),
      el("td", { class: "num", text: fmt.int(row.committed) }),
      el("td", { class: "num", text: row.gold_seen ? fmt.pct(row.gold_correct / row.gold_seen) : "—" }),
      weightCell(row.weight),
      el("td", { class: "num", text: fmt.num(row.reward, 1) }));
  }));
}

boot(start);
