// Task import (POST /api/admin/tasks with the file's bytes) and label export
// (GET /api/admin/labels?format=jsonl|parquet), with a preview of the current labels.
import { api } from "../api.js";
import { KIND_LABELS } from "../taskview.js";
import { $, boot, el, fill, fmt, requireUser, showError } from "../ui.js";

const PREVIEW_ROWS = 20;
const TYPES = { jsonl: "application/x-ndjson", csv: "text/csv" };

function formatOf(name) {
  return /\.csv$/i.test(name) ? "csv" : "jsonl";
}

async function importTasks(event) {
  event.preventDefault();
  const error = $("#import-error");
  const result = $("#import-result");
  error.hidden = true;
  result.hidden = true;
  const file = $("#import-file").files[0];
  const pasted = $("#import-text").value;
  if (!file && !pasted.trim()) {
    showError(error, new Error("Choose a file or paste some rows first."));
    return;
  }
  const format = file ? formatOf(file.name) : $("#import-format").value;
  const button = $("#import-submit");
  button.disabled = true;
  try {
    const reply = await api(`/api/admin/tasks?format=${format}`, {
      method: "POST", body: file || pasted, type: TYPES[format],
    });
    result.textContent = `Imported ${fmt.int(reply.added)} new task${reply.added === 1 ? "" : "s"}; the node now holds ${fmt.int(reply.total)}.`;
    result.hidden = false;
    $("#import-form").reset();
    $("#file-name").textContent = ".jsonl or .csv";
  } catch (e) {
    showError(error, e);
  } finally {
    button.disabled = false;
  }
}

function labelText(label) {
  return Array.isArray(label) ? label.join(", ") : String(label);
}

async function preview() {
  const body = $("#label-preview tbody");
  try {
    const response = await api("/api/admin/labels?format=jsonl", { raw: true });
    const rows = (await response.text()).split("\n").filter(Boolean).slice(0, PREVIEW_ROWS).map((line) => JSON.parse(line));
    fill(body, rows.length ? rows.map((r) => el("tr", {},
      el("td", {}, el("strong", { text: r.task_id }), el("div", { class: "muted small", text: KIND_LABELS[r.kind] || r.kind })),
      el("td", { text: labelText(r.label) }), el("td", { class: "num", text: fmt.pct(r.confidence) }),
      el("td", { class: "num", text: fmt.int(r.provenance.length) })))
      : el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No labels yet: they appear once rounds commit annotations." })));
  } catch (e) {
    fill(body, el("tr", {}, el("td", { colspan: "4", class: "muted", text: e.message })));
  }
}

function dropzone() {
  const zone = $("#dropzone");
  const input = $("#import-file");
  input.addEventListener("change", () => {
    $("#file-name").textContent = input.files[0] ? input.files[0].name : ".jsonl or .csv";
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });
}

async function start() {
  if (!(await requireUser("admin"))) return;
  dropzone();
  $("#import-form").addEventListener("submit", importTasks);
  await preview();
}

boot(start);
