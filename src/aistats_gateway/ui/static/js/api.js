// The gateway's public /v1 API as the page uses it: one key, JSON in and out, errors as ApiError.
//
// The key is kept in sessionStorage by default: it lives only as long as this tab, is not shared with other
// tabs or windows, and is not left on disk for the next person at a shared machine. "Remember on this device"
// (opt-in at sign-in) keeps it in localStorage instead, so a shared batch link opens signed in; a script
// injected into the page could read either. Sign-out removes it from both.

const KEY_STORAGE = "aistats.apiKey";
const WORKSPACE_STORAGE = "aistats.workspace";

/** Where /v1 is, relative to the page (/ui/ → /v1/), so a proxy path prefix keeps working. */
export const API_BASE = new URL("../v1/", window.location.href);

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const error = (body && body.error) || {};
    super(error.message || fallback || `The gateway answered ${status}.`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
    this.requestId = (body && body.request_id) || null;
  }
}

export function savedSession() {
  for (const store of [sessionStorage, localStorage]) {
    const key = store.getItem(KEY_STORAGE);
    if (key) return { key, workspace: store.getItem(WORKSPACE_STORAGE) || "", remembered: store === localStorage };
  }
  return null;
}

export function saveSession(key, workspace, remember = false) {
  clearSession();
  const store = remember ? localStorage : sessionStorage;
  store.setItem(KEY_STORAGE, key);
  store.setItem(WORKSPACE_STORAGE, workspace);
}

export function clearSession() {
  for (const store of [sessionStorage, localStorage]) {
    store.removeItem(KEY_STORAGE);
    store.removeItem(WORKSPACE_STORAGE);
  }
}

export class Api {
  /** `onUnauthorized` runs when the gateway rejects the key (revoked, or a wrong one). */
  constructor(key, onUnauthorized) {
    this.key = key;
    this.onUnauthorized = onUnauthorized || (() => {});
  }

  url(path, query) {
    const url = new URL(path.replace(/^\//, ""), API_BASE);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, String(value));
    }
    return url;
  }

  async request(method, path, { query, json, body, signal } = {}) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(this.url(path, query), { method, headers, body: payload, signal, cache: "no-store" });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, null, "Could not reach the gateway. Is it running?");
    }
    return this.check(response);
  }

  async check(response) {
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized();
      throw new ApiError(response.status, data);
    }
    return data;
  }

  get(path, query, signal) { return this.request("GET", path, { query, signal }); }
  post(path, json) { return this.request("POST", path, { json }); }
  delete(path) { return this.request("DELETE", path); }

  /** Multipart upload of a batch input file (streamed by the browser). */
  upload(file) {
    const form = new FormData();
    form.append("purpose", "batch");
    form.append("file", file, file.name);
    return this.request("POST", "files", { body: form });
  }

  /** Saves a file's content under `filename` (fetched with the key, then handed to the browser). */
  async download(fileId, filename) {
    let response;
    try {
      response = await fetch(this.url(`files/${encodeURIComponent(fileId)}/content`),
        { headers: { Authorization: `Bearer ${this.key}` }, cache: "no-store" });
    } catch {
      throw new ApiError(0, null, "Could not reach the gateway to download the file.");
    }
    if (!response.ok) await this.check(response);
    const blob = await response.blob();
    const href = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = href;
    link.download = filename;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60_000);
    return blob.size;
  }

  /** The batch's lifecycle WebSocket; the key travels as the offered "bearer.<key>" subprotocol,
   * since browsers cannot set an Authorization header on a WebSocket. Throws if the key is not a
   * valid subprotocol token (the caller falls back to polling). */
  socket(batchId, intervalMs) {
    const url = this.url(`async/batch/${encodeURIComponent(batchId)}/ws`, { interval_ms: intervalMs });
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return new WebSocket(url, ["aistats.v1", `bearer.${this.key}`]);
  }
}
