// One task on screen, for each of the five schema kinds, and how an answer is built from
// clicks and keys. An answer is {choice: [indices], text}: indices into the task's options,
// rating steps, or left/right/tie, exactly what the signed record carries.
import { el } from "./ui.js";

export const KIND_LABELS = {
  single_choice: "Single choice",
  multi_label: "Multiple labels",
  rating: "Rating",
  pairwise: "Which is better?",
  free_text: "Free text",
};
const MAX_KEYED = 10; // keys 1..9 and 0

function keyName(i) {
  return i < 9 ? String(i + 1) : i === 9 ? "0" : "";
}

/** The answers a task offers as [{index, label}] (empty for free text). */
export function optionsOf(task) {
  if (task.kind === "rating") {
    const [low, high, step] = task.scale;
    const count = Math.round((high - low) / step) + 1;
    return Array.from({ length: count }, (_, i) => ({ index: i, label: formatRating(low + i * step) }));
  }
  if (task.kind === "pairwise") {
    return ["Left", "Right", "Tie"].map((label, index) => ({ index, label }));
  }
  return (task.options || []).map((label, index) => ({ index, label }));
}

function formatRating(value) {
  return Number.isInteger(value) ? String(value) : String(Math.round(value * 1e6) / 1e6);
}

export function emptyAnswer() {
  return { choice: [], text: "" };
}

/** The answer after choosing option `index` (a toggle for multi-label tasks), or null when
 * the task has no such option. */
export function choose(task, answer, index) {
  if (task.kind === "free_text" || index < 0 || index >= optionsOf(task).length) return null;
  if (task.kind !== "multi_label") return { choice: [index], text: "" };
  const picked = new Set(answer.choice);
  if (picked.has(index)) picked.delete(index);
  else picked.add(index);
  return { choice: [...picked].sort((a, b) => a - b), text: "" };
}

/** Why `answer` cannot be submitted yet, or null when it can. */
export function incomplete(task, answer) {
  if (task.kind === "free_text") {
    const length = [...answer.text].length;
    if (!answer.text.trim()) return "Write an answer first.";
    if (length > task.max_length) return `Keep it to ${task.max_length} characters.`;
    return null;
  }
  return answer.choice.length ? null : "Choose an answer first.";
}

function optionInput(task, option, answer, name, onPick) {
  const multi = task.kind === "multi_label";
  const input = el("input", {
    type: multi ? "checkbox" : "radio", name, value: String(option.index),
    checked: answer.choice.includes(option.index),
    onchange: () => onPick(option.index),
  });
  return input;
}

function choiceList(task, answer, onPick) {
  const options = optionsOf(task);
  const legend = task.kind === "multi_label" ? "Pick every label that applies" : "Pick one";
  return el("fieldset", { class: task.kind === "rating" ? "choices rating" : "choices" },
    el("legend", { text: legend }),
    options.map((option) => el("label", { class: "choice" },
      optionInput(task, option, answer, `answer-${task.digest}`, onPick),
      el("span", { text: option.label }),
      option.index < MAX_KEYED && option.label !== keyName(option.index)
        ? el("kbd", { text: keyName(option.index) }) : null)));
}

function ratingScale(task, answer, onPick) {
  const options = optionsOf(task);
  if (options.length <= MAX_KEYED) return choiceList(task, answer, onPick);
  const [low, high, step] = task.scale;
  const input = el("input", {
    id: "rating-value", type: "number", min: String(low), max: String(high), step: String(step),
    value: answer.choice.length ? options[answer.choice[0]].label : "",
    oninput: () => {
      const index = Math.round((Number(input.value) - low) / step);
      if (input.value !== "" && index >= 0 && index < options.length) onPick(index, true);
    },
  });
  return el("div", { class: "field" },
    el("label", { for: "rating-value", text: `Your rating, ${low} to ${high} in steps of ${step}` }), input);
}

function pairwise(task, answer, onPick) {
  const [left, right] = task.completions;
  const side = (index, title, text) => el("label", { class: "completion" },
    el("header", {},
      el("span", {},
        optionInput(task, { index }, answer, `answer-${task.digest}`, onPick), " ",
        el("strong", { text: title })),
      el("kbd", { text: keyName(index) })),
    el("span", { class: "text", text }));
  return el("fieldset", { class: "choices" },
    el("legend", { text: "Which completion answers the prompt better?" }),
    el("div", { class: "pair" }, side(0, "Left", left), side(1, "Right", right)),
    el("label", { class: "choice tie" },
      optionInput(task, { index: 2 }, answer, `answer-${task.digest}`, onPick),
      el("span", { text: "About the same" }), el("kbd", { text: "3" })));
}

function freeText(task, answer, onText) {
  const counter = el("p", { class: "counter", id: "text-counter" });
  const count = () => { counter.textContent = `${[...area.value].length} / ${task.max_length}`; };
  const area = el("textarea", {
    id: "answer-text", rows: "5", maxlength: String(task.max_length),
    "aria-describedby": "text-counter",
    oninput: () => { count(); onText(area.value); },
  });
  area.value = answer.text;
  count();
  return el("div", { class: "field" }, el("label", { for: "answer-text", text: "Your answer" }), area, counter);
}

/** The task's card content; `onPick(index)` and `onText(text)` report what the annotator does. */
export function renderTask(task, answer, { onPick, onText }) {
  const prompt = el("p", { class: "prompt", text: task.text });
  let body;
  if (task.kind === "pairwise") body = pairwise(task, answer, onPick);
  else if (task.kind === "free_text") body = freeText(task, answer, onText);
  else if (task.kind === "rating") body = ratingScale(task, answer, onPick);
  else body = choiceList(task, answer, onPick);
  return [prompt, body];
}
