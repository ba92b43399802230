// Live batch objects: the lifecycle WebSocket (snapshot, then pushed updates), with reconnects and,
// when sockets cannot be had at all, polling as a fallback. Nothing here touches the DOM.

import { TERMINAL } from "./format.js";

const POLL_MS = 3000;
const MAX_SOCKET_FAILURES = 4;

/**
 * Calls `onBatch(batch)` with every new state of the batch until it is terminal or `stop()` is called, and
 * `onState(state)` when the connection changes: "live", or "offline" when neither the stream nor the API
 * answers (the view then says so and disables its actions; reconnecting goes on). Returns `stop`.
 */
export function watchBatch(api, batchId, onBatch, { intervalMs = 1000, onState = () => {} } = {}) {
  let stopped = false;
  let socket = null;
  let timer = null;
  let probeTimer = null;
  let failures = 0;
  let state = "live";

  const setState = (next) => {
    if (stopped || next === state) return;
    state = next;
    onState(next);
  };

  const deliver = (batch) => {
    if (stopped || !batch) return;
    setState("live");
    onBatch(batch);
    if (TERMINAL.has(batch.status)) stop();
  };

  // Is the gateway there at all? The stream may be down while the API answers (then the batch still shows
  // fresh data); only when both are unreachable is the view stale.
  const probe = async () => {
    clearTimeout(probeTimer);
    if (stopped) return;
    try {
      deliver(await api.get(`batches/${encodeURIComponent(batchId)}`));
    } catch (err) {
      if (err && err.status === 404) { stop(); return; }
      if (err && (err.status === 0 || err.status >= 500)) setState("offline");
    }
  };

  const poll = async () => {
    if (stopped) return;
    await probe();
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };

  const connect = () => {
    if (stopped) return;
    try {
      socket = api.socket(batchId, intervalMs);
    } catch {
      return poll();
    }
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === "job.snapshot" || frame.type === "job.updated") {
        failures = 0;
        deliver(frame.data);
      } else if (frame.type === "job.deleted") {
        stop();
      }
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (stopped) return;
      if (event.code === 1000 || event.code === 4401) {
        // 1000: the server closes after the terminal update; if we somehow missed it, read the batch once.
        // 4401: the key was revoked; that read answers 401, which signs the page out.
        poll();
        return;
      }
      failures += 1;
      probeTimer = setTimeout(probe, 300);
      if (failures >= MAX_SOCKET_FAILURES && state === "live") { poll(); return; }
      timer = setTimeout(connect, Math.min(4000, 500 * 2 ** Math.min(failures, 3)));
    });
  };

  function stop() {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(probeTimer);
    if (socket) {
      const s = socket;
      socket = null;
      if (s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING) s.close(1000);
    }
  }

  connect();
  return stop;
}

/** Runs `fn` every `ms` while the page is visible; returns `stop`. */
export function every(ms, fn) {
  const id = setInterval(() => { if (document.visibilityState === "visible") fn(); }, ms);
  return () => clearInterval(id);
}
