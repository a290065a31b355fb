// Sign in, then go where the visitor was headed (a same-site path only).
import { api, currentUser, setCsrf } from "../api.js";
import { $, showError } from "../ui.js";

function nextPath(fallback) {
  const next = new URLSearchParams(location.search).get("next");
  if (!next || !next.startsWith("/")) return fallback;
  // resolved as the browser would ("//x" and "/\x" name other sites): this node's pages only
  const url = new URL(next, location.origin);
  return url.origin === location.origin ? url.pathname + url.search + url.hash : fallback;
}

// signed in already (a bookmark, the back button): straight on
currentUser().then((me) => { if (me) location.replace(nextPath("/dashboard")); }, () => {});

const form = $("#auth-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("#form-error");
  error.hidden = true;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const me = await api("/api/auth/login", {
      method: "POST", json: { username: $("#username").value.trim(), password: $("#password").value },
    });
    setCsrf(me.csrf);
    location.assign(nextPath(me.role === "admin" ? "/admin" : "/dashboard"));
  } catch (e) {
    showError(error, e);
    button.disabled = false;
  }
});
