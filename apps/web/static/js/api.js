// The REST API as the pages use it: JSON in and out, the session cookie, and the CSRF token
// every unsafe request carries (from the login answer or GET /api/me).

const CSRF_KEY = "phalanx.csrf";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class ApiError extends Error {
  /** `message`: the node's one-line reason; `code`: a refused record's reason code
   * (engine/curation/records.py REFUSALS), when the node gave one. */
  constructor(status, message, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrf(token) {
  if (token) sessionStorage.setItem(CSRF_KEY, token);
  else sessionStorage.removeItem(CSRF_KEY);
}

function reasonOf(status, payload) {
  const detail = payload && payload.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length && typeof detail[0].msg === "string") {
    return detail[0].msg;
  }
  if (status === 429) return "Too many requests: wait a moment and try again.";
  if (status >= 500) return "The node could not answer; try again shortly.";
  return `The request was refused (HTTP ${status}).`;
}

/** fetch `path`; `json` is sent as a JSON body, `body` as is. Returns the parsed JSON (or the
 * Response when `raw`); throws ApiError(status, reason) for any answer but 2xx. */
export async function api(path, { method = "GET", json, body, type, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (type) headers["Content-Type"] = type;
  const token = sessionStorage.getItem(CSRF_KEY);
  if (UNSAFE.has(method) && token) headers["X-CSRF-Token"] = token;
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "The node is unreachable: check your connection.");
  }
  if (!response.ok) {
    const payload = await response.json().catch(() => null);
    const code = payload && typeof payload.reason === "string" ? payload.reason : null;
    throw new ApiError(response.status, reasonOf(response.status, payload), code);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** The signed-in account ({username, role, csrf, ...}), or null when nobody is signed in. */
export async function currentUser() {
  try {
    const me = await api("/api/me");
    if (me.csrf) setCsrf(me.csrf);
    return me;
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}
