// Sign in, then go where the visitor was headed (a same-site path only).
import { api, setCsrf } from "../api.js";
import { $, showError } from "../ui.js";

function nextPath(fallback) {
  const next = new URLSearchParams(location.search).get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : fallback;
}

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
