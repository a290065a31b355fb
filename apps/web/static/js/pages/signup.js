// Create an account with a signing key made right here: the public half goes to the node with
// the sign-up, the private half stays in this browser's IndexedDB, non-extractable.
import { api, setCsrf } from "../api.js";
import { generateKey, proveKey, saveKey, supported } from "../keys.js";
import { $, showError } from "../ui.js";

const MIN_PASSWORD = 10;
const form = $("#auth-form");
const status = $("#key-status");
let keyPromise = null;
if (supported()) {
  keyPromise = generateKey();
  keyPromise.then((key) => { status.textContent = `Signing key ready: ${key.publicHex.slice(0, 12)}…`; },
    () => { status.textContent = "This browser cannot make an Ed25519 key; you can sign up and annotate from a current browser."; });
} else {
  status.textContent = "Signing needs a secure page (HTTPS or localhost): you can sign up, but annotate over HTTPS.";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("#form-error");
  error.hidden = true;
  const username = $("#username").value.trim();
  const password = $("#password").value;
  if (password.length < MIN_PASSWORD) {
    showError(error, new Error(`Your password needs at least ${MIN_PASSWORD} characters.`));
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const key = keyPromise ? await keyPromise.catch(() => null) : null;
    const body = { username, password };
    if (key) Object.assign(body, { public_key: key.publicHex, proof: await proveKey(key, username) });
    const me = await api("/api/auth/signup", { method: "POST", json: body });
    setCsrf(me.csrf);
    if (key) await saveKey(username, key);
    location.assign("/dashboard");
  } catch (e) {
    showError(error, e);
    button.disabled = false;
  }
});
