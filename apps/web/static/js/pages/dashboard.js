// The annotator's dashboard: their progress, reputation, rewards and rank (GET /api/stats),
// what is waiting for them (GET /api/tasks), the top of the leaderboard and the platform's
// committed snapshot. It refreshes while visible, and marks the numbers that changed.
import { api } from "../api.js";
import { readySigner, SignerProblem } from "../signer.js";
import { KIND_LABELS } from "../taskview.js";
import { $, boot, el, fill, fmt, requireUser } from "../ui.js";

const REFRESH_MS = 5000;
const PREVIEW = 20;
let me = null;

function show(id, text) {
  const node = $(id);
  const before = node.textContent;
  node.textContent = text;
  if (before !== "—" && before !== text) {
    node.classList.remove("changed");
    void node.offsetWidth;
    node.classList.add("changed");
  }
}

function showMine(stats, rank, rows) {
  const mine = stats || { committed: 0, pending: 0, gold_seen: 0, gold_correct: 0, weight: 1, reward: 0, flags: [], suspended: false };
  show("#stat-records", fmt.int(mine.committed + mine.pending));
  $("#stat-records-note").textContent = `${fmt.int(mine.committed)} committed · ${fmt.int(mine.pending)} pending`;
  show("#stat-reputation", fmt.fixed(mine.weight));
  $("#reputation-meter").value = mine.weight;
  $("#stat-reputation-note").textContent = "how much your answers weigh in the labels";
  show("#stat-gold", mine.gold_seen ? fmt.pct(mine.gold_correct / mine.gold_seen) : "—");
  $("#stat-gold-note").textContent = mine.gold_seen
    ? `${mine.gold_correct} of ${mine.gold_seen} quality checks right` : "no quality checks committed yet";
  show("#stat-reward", fmt.num(mine.reward, 1));
  show("#stat-rank", rank ? `#${rank}` : "—");
  $("#stat-rank-note").textContent = rank ? `of ${fmt.int(rows)} on the leaderboard` : "ranked once your work is committed";
  const flags = $("#flags");
  const problems = [...(mine.suspended ? ["Your account is suspended: your answers are not counted."] : []),
    ...mine.flags.map((f) => `Flag: ${f.replaceAll("_", " ")}`)];
  flags.textContent = problems.join("\n");
  flags.hidden = !problems.length;
}

function showPlatform(p) {
  const facts = [
    ["Committed round", p.round >= 0 ? fmt.int(p.round) : "none yet"],
    ["Snapshot root", fmt.short(p.snapshot_root)],
    ["Tasks", fmt.int(p.tasks)],
    ["Annotations committed", fmt.int(p.records)],
    ["Waiting to commit", fmt.int(p.pending)],
    ["Tasks labelled", fmt.int(p.labelled)],
    ["Mean label confidence", fmt.pct(p.mean_confidence)],
    ["Agreement (Krippendorff's α)", fmt.num(p.alpha)],
  ];
  fill($("#platform"), facts.map(([name, value]) => el("div", {},
    el("dt", { text: name }), el("dd", { text: value, title: name === "Snapshot root" ? p.snapshot_root : null }))));
}

function showBoard(board) {
  const top = board.rows.slice(0, 5);
  fill($("#mini-board"), top.length ? top.map((row) => el("li", { class: row.public_key === me.public_key ? "me" : "" },
    el("span", { text: `#${row.rank} ${row.username || fmt.short(row.public_key)}` }),
    el("span", { class: "muted", text: `${fmt.num(row.reward, 1)} pts` })))
    : el("li", { class: "muted", text: "Nobody yet: be the first." }));
}

function showNext(reply) {
  const tasks = reply.tasks;
  $("#available-line").textContent = tasks.length
    ? `${tasks.length}${tasks.length === PREVIEW ? "+" : ""} task${tasks.length === 1 ? "" : "s"} waiting for you`
    : "Nothing waiting right now";
  fill($("#next-tasks"), tasks.length ? tasks.slice(0, 5).map((task) => el("li", {},
    el("span", { class: "badge", text: KIND_LABELS[task.kind] || task.kind }),
    el("span", { class: "snippet", text: task.text || task.id })))
    : el("li", { class: "muted", text: "You're all caught up." }));
}

async function refresh() {
  const [stats, board, next] = await Promise.all([
    api("/api/stats"), api("/api/leaderboard?limit=50"), api(`/api/tasks?count=${PREVIEW}`)]);
  showMine(stats.me, stats.rank, board.rows.length);
  showPlatform(stats.platform);
  showBoard(board);
  showNext(next);
}

async function start() {
  me = await requireUser();
  if (!me) return;
  $("#greeting").textContent = `Welcome back, ${me.username}`;
  try {
    const key = await readySigner(me);
    me.public_key = key.publicHex;
    $("#key-line").textContent = `Your answers are signed with key ${fmt.short(key.publicHex)}, kept in this browser.`;
  } catch (error) {
    $("#key-line").textContent = error instanceof SignerProblem ? error.message : `Signing key: ${error.message}`;
  }
  document.addEventListener("keydown", (event) => {
    if (event.key.toLowerCase() === "a" && !event.ctrlKey && !event.metaKey && !event.altKey
        && !(event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement)) {
      location.assign("/annotate");
    }
  });
  await refresh();
  setInterval(() => { if (document.visibilityState === "visible") refresh().catch(() => {}); }, REFRESH_MS);
}

boot(start);
