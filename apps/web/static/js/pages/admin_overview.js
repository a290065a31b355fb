// Admin overview: the node's health (GET /api/admin/health), the platform's numbers and three
// charts from GET /api/admin/stats: agreement over rounds, throughput, per-annotator quality.
import { api } from "../api.js";
import { columnChart, lineChart, qualityBars } from "../charts.js";
import { $, boot, el, fill, fmt, requireUser } from "../ui.js";

const REFRESH_MS = 5000;
const DOT = { ok: "ok", degraded: "warn", stalled: "bad" };

function showHealth(h) {
  const refused = Object.entries(h.refusals).filter(([, n]) => n > 0);
  fill($("#health"),
    el("div", { class: "status" }, el("span", { class: `dot ${DOT[h.status] || ""}`, "aria-hidden": "true" }),
      el("span", { id: "health-status", text: h.status === "ok" ? "Healthy" : h.status[0].toUpperCase() + h.status.slice(1) })),
    el("dl", { class: "facts" },
      el("div", {}, el("dt", { text: "Mode" }), el("dd", { text: h.mode })),
      el("div", {}, el("dt", { text: "Round" }), el("dd", { text: h.round >= 0 ? fmt.int(h.round) : "none yet" })),
      el("div", {}, el("dt", { text: "Last commit" }), el("dd", { text: h.seconds_since_commit === null ? "never" : `${fmt.num(h.seconds_since_commit, 0)} s ago` })),
      el("div", {}, el("dt", { text: "Records refused" }), el("dd", { text: refused.length ? refused.map(([r, n]) => `${r.replaceAll("_", " ")} ${n}`).join(", ") : "none" })),
      el("div", {}, el("dt", { text: "Requests rate-limited" }), el("dd", { text: fmt.int(h.http_refused) }))),
    el("p", { class: "muted small", text: h.detail }));
}

function showPlatform(p) {
  const cards = [
    ["Tasks", fmt.int(p.tasks), `${fmt.int(p.gold)} gold`],
    ["Annotations", fmt.int(p.records), `${fmt.int(p.pending)} waiting to commit`],
    ["Labelled", fmt.int(p.labelled), `mean confidence ${fmt.pct(p.mean_confidence)}`],
    ["Agreement α", fmt.num(p.alpha), "Krippendorff, committed answers"],
    ["Round", p.round >= 0 ? fmt.int(p.round) : "—", `root ${fmt.short(p.snapshot_root)}`],
  ];
  fill($("#platform-stats"), cards.map(([title, value, note]) => el("article", { class: "stat card" },
    el("h2", { text: title }), el("p", { class: "value", text: value }), el("p", { class: "muted small", text: note }))));
}

function showCharts(stats) {
  const history = stats.history;
  lineChart($("#chart-agreement .chart-body"), history.map((h) => ({ x: h.round, y: h.alpha })), {
    title: "Krippendorff's alpha by round", xLabel: "round", yLabel: "α", yMin: 0, yMax: 1,
    threshold: { value: 0.8, label: "reliable (0.8)" }, emptyText: "No agreement yet: it needs two answers on a task.",
  });
  columnChart($("#chart-throughput .chart-body"), history.map((h, i) => ({
    x: h.round, y: h.records - (i ? history[i - 1].records : 0) })), {
    title: "Annotations committed per round", xLabel: "round", yLabel: "annotations",
    emptyText: "No round has committed annotations yet.",
  });
  const rows = stats.annotators.map((a) => ({
    name: a.username || a.public_key.slice(0, 10),
    a: a.gold_seen ? a.gold_correct / a.gold_seen : null, b: a.weight,
  }));
  qualityBars($("#chart-quality .chart-body"), rows, {
    title: "Gold accuracy and reputation weight per annotator", aLabel: "gold accuracy",
    bLabel: "reputation weight", emptyText: "No committed annotations yet.",
  });
}

async function refresh() {
  const [health, stats] = await Promise.all([api("/api/admin/health"), api("/api/admin/stats")]);
  showHealth(health);
  showPlatform(stats.platform);
  showCharts(stats);
}

async function start() {
  if (!(await requireUser("admin"))) return;
  await refresh();
  setInterval(() => { if (document.visibilityState === "visible") refresh().catch(() => {}); }, REFRESH_MS);
}

boot(start);
