// The annotation page: a queue of assigned tasks fetched ahead, answered with the keyboard or
// the mouse, each answer signed here and submitted without reloading the page.
//
// The chain head (seq, prev) comes from the first GET /api/tasks and then advances locally
// after each acknowledged submission (chain.js keeps it one chain across tabs); submissions
// go one at a time, since each record links to the one before it.
import { api, ApiError } from "../api.js";
import { fromHex, toBase64 } from "../bytes.js";
import { AlreadyAnswered, Chain } from "../chain.js";
import { signRecord } from "../record.js";
import { readySigner, SignerProblem } from "../signer.js";
import { choose, emptyAnswer, incomplete, KIND_LABELS, renderTask } from "../taskview.js";
import { $, boot, el, fill, fmt, requireUser, toast } from "../ui.js";

const BATCH = 5; // new tasks asked for at a time
const AHEAD = 2; // fetch more when this few are left
const MOST = 100; // the API's cap on one request

const state = {
  key: null,
  chain: null, // set by the first GET /api/tasks
  queue: [], // tasks not yet submitted
  answers: new Map(), // digest -> answer in progress
  seen: new Set(), // digests queued or submitted in this session
  index: 0,
  done: 0,
  busy: false,
  fetching: null,
  exhausted: false,
};

const card = $("#task");

async function fetchTasks() {
  if (state.fetching) return state.fetching;
  state.fetching = (async () => {
    try {
      // the node lists the queued (unanswered) tasks again first: ask past them
      const count = Math.min(MOST, state.queue.length + BATCH);
      const reply = await api(`/api/tasks?count=${count}`);
      if (!state.chain) state.chain = new Chain(state.key.publicHex, headOf(reply), nodeHead);
      const fresh = reply.tasks.filter((task) => !state.seen.has(task.digest));
      for (const task of fresh) {
        state.seen.add(task.digest);
        state.queue.push(task);
      }
      state.exhausted = fresh.length === 0;
    } finally {
      state.fetching = null;
    }
  })();
  return state.fetching;
}

function prefetch() {
  if (!state.exhausted && state.queue.length - state.index <= AHEAD) {
    fetchTasks().then(updateLine, () => {});
  }
}

function current() {
  return state.queue[state.index] || null;
}

function answerOf(task) {
  if (!state.answers.has(task.digest)) state.answers.set(task.digest, emptyAnswer());
  return state.answers.get(task.digest);
}

function updateLine() {
  const left = state.queue.length;
  $("#queue-line").textContent = left
    ? `Task ${Math.min(state.index + 1, left)} of ${left} in your queue${state.exhausted ? "" : " (more on the way)"}`
    : "Your queue is empty.";
  $("#done-count").textContent = fmt.int(state.done);
  const total = state.done + left;
  const bar = $("#session-progress");
  bar.setAttribute("aria-valuemax", String(total || 1));
  bar.setAttribute("aria-valuenow", String(state.done));
  $("#progress-bar").style.width = `${total ? (100 * state.done) / total : 0}%`;
}

function emptyState() {
  fill(card, el("div", { class: "empty" },
    el("div", { class: "icon done", "aria-hidden": "true" }),
    el("h2", { text: "You're all caught up" }),
    el("p", { class: "muted", text: "No task needs your answer right now. New tasks arrive as others finish theirs." }),
    el("div", { class: "button-row" },
      el("button", { class: "button primary", type: "button", id: "check-again", onclick: recheck, text: "Check again" }),
      el("a", { class: "button", href: "/dashboard", text: "Back to the dashboard" }))));
}

async function recheck() {
  state.exhausted = false;
  await fetchTasks().catch(report);
  render();
}

function render() {
  updateLine();
  card.setAttribute("aria-busy", "false");
  const task = current();
  if (!task) {
    delete card.dataset.kind;
    delete card.dataset.task;
    emptyState();
    return;
  }
  card.dataset.kind = task.kind;
  card.dataset.task = task.id;
  const answer = answerOf(task);
  const controls = renderTask(task, answer, {
    onPick: (index, typed) => pick(index, typed),
    onText: (text) => { answer.text = text; },
  });
  fill(card,
    el("div", { class: "task-meta" },
      el("span", { class: "badge accent", text: KIND_LABELS[task.kind] || task.kind }),
      el("span", { class: "muted small", text: task.id || "" })),
    controls,
    el("div", { class: "task-actions" },
      el("button", { class: "button", type: "button", onclick: () => move(-1), disabled: state.index === 0,
        "aria-label": "Previous task" }, "← Previous"),
      el("button", { class: "button", type: "button", onclick: () => move(1), "aria-label": "Next task" }, "Skip →"),
      el("span", { class: "spacer" }),
      el("button", { class: "button primary", type: "button", id: "submit", onclick: submit },
        "Submit ", el("kbd", { text: "Enter" }))));
  card.classList.remove("enter");
  void card.offsetWidth; // restart the entry animation
  card.classList.add("enter");
  const text = card.querySelector("textarea");
  if (text) text.focus();
  else card.focus({ preventScroll: true });
  prefetch();
}

function pick(index, typed = false) {
  const task = current();
  if (!task) return;
  const next = choose(task, answerOf(task), index);
  if (!next) return;
  state.answers.set(task.digest, next);
  if (typed) return; // a number typed into the rating box keeps its own display
  for (const input of card.querySelectorAll("input[type=radio], input[type=checkbox]")) {
    input.checked = next.choice.includes(Number(input.value));
  }
}

async function move(step) {
  const target = state.index + step;
  if (target < 0) return;
  if (target >= state.queue.length) {
    if (!state.exhausted) await fetchTasks().catch(report);
    if (target >= state.queue.length) {
      toast("That was the last task in your queue.");
      return;
    }
  }
  state.index = target;
  render();
}

function headOf(reply) {
  return { seq: reply.head.seq, prev: fromHex(reply.head.prev) };
}

async function nodeHead() {
  return headOf(await api("/api/tasks?count=1"));
}

function send(task, answer) {
  return state.chain.extend(task.digest, async (head) => {
    const fields = {
      task: fromHex(task.digest), kind: task.kind, annotator: state.key.publicKey,
      seq: head.seq, prev: head.prev, choice: answer.choice, text: answer.text,
      clientTimeMs: Date.now(),
    };
    const { digest, record } = await signRecord(state.key.privateKey, fields);
    try {
      await api("/api/submit", { method: "POST", json: { record: toBase64(record) } });
    } catch (error) {
      // "replay": the node holds this very record (its answer was lost on the way back)
      if (!(error instanceof ApiError && error.code === "replay")) throw error;
    }
    return digest;
  });
}

async function submit() {
  const task = current();
  if (!task || state.busy) return;
  const answer = answerOf(task);
  const problem = incomplete(task, answer);
  if (problem) {
    toast(problem, "error");
    return;
  }
  state.busy = true;
  const button = $("#submit");
  if (button) button.disabled = true;
  try {
    try {
      await send(task, answer);
    } catch (error) {
      if (error instanceof AlreadyAnswered) {
        dropCurrent();
        throw error;
      }
      // the node knows a different head (a record of ours this browser never saw acknowledged)
      if (!(error instanceof ApiError && ["chain_link", "sequence_gap"].includes(error.code))) throw error;
      await state.chain.resync();
      await send(task, answer);
    }
    dropCurrent();
    state.done += 1;
    toast("Signed and submitted ✓", "ok");
    if (state.index >= state.queue.length && !state.exhausted) await fetchTasks().catch(report);
    render();
  } catch (error) {
    report(error);
    if (error instanceof AlreadyAnswered) render();
    else if (button) button.disabled = false;
  } finally {
    state.busy = false;
  }
}

function dropCurrent() {
  const [task] = state.queue.splice(state.index, 1);
  state.answers.delete(task.digest);
  if (state.index >= state.queue.length && state.index > 0 && state.exhausted) state.index -= 1;
}

function report(error) {
  if (error instanceof ApiError && error.status === 401) {
    location.replace(`/login?next=${encodeURIComponent("/annotate")}`);
    return;
  }
  toast(error.message, "error");
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || !state.key) return;
  const target = event.target;
  const typing = target instanceof HTMLTextAreaElement
    || (target instanceof HTMLInputElement && !["radio", "checkbox"].includes(target.type));
  if (typing) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") target.blur();
    else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && !target.value) {
      event.preventDefault(); // an empty box has no caret to move: the arrows change task
      move(event.key === "ArrowRight" ? 1 : -1);
    }
    return;
  }
  if (/^[0-9]$/.test(event.key)) {
    event.preventDefault();
    pick(event.key === "0" ? 9 : Number(event.key) - 1);
  } else if (event.key === "Enter" && !(target instanceof HTMLButtonElement || target instanceof HTMLAnchorElement)) {
    event.preventDefault();
    submit();
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    event.preventDefault();
    move(event.key === "ArrowRight" ? 1 : -1);
  }
}

async function start() {
  const me = await requireUser();
  if (!me) return;
  try {
    state.key = await readySigner(me);
    $("#signer").textContent = `Signing key: ${fmt.short(state.key.publicHex)}, kept in this browser.`;
  } catch (error) {
    const message = error instanceof SignerProblem || error instanceof ApiError
      ? error.message : "This browser could not prepare your signing key.";
    $("#signer").textContent = "Signing key: not available.";
    fill(card, el("div", { class: "empty" }, el("h2", { text: "You can't sign here yet" }),
      el("p", { class: "muted", text: message })));
    return;
  }
  card.tabIndex = -1;
  document.addEventListener("keydown", onKey);
  try {
    await fetchTasks();
  } catch (error) {
    report(error);
  }
  render();
}

boot(start);
