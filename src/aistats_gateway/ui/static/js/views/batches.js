// The batches list: filters (status, session), one row per batch with a live progress bar (each
// unfinished batch's lifecycle WebSocket), counts, cost, session and age; "load more" pages on with the
// API's cursor, and the first page is re-read every 15 s to show batches created elsewhere.

import { h, tableRow } from "../dom.js";
import { STATUSES, TERMINAL, age, batchCost, count, progressOf, statusLabel, usd } from "../format.js";
import { every, watchBatch } from "../live.js";

const COLUMNS = ["Batch", "Status", "Progress", "Requests", "Cost", "Session", "Age"];
const PAGE = 20;
const MAX_LIVE = 40; // sockets open at once; rows beyond this still refresh with the page

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, statusLabel(status));
}

export function progressBar(batch, label) {
  const value = progressOf(batch);
  return h("div", { class: "progress-cell" },
    h("progress", { max: 100, value, "aria-label": label || `Progress of ${batch.id}`,
      "aria-valuetext": `${value} percent` }),
    h("span", { class: "progress-text" }, `${value}%`));
}

export function renderBatches(ctx) {
  const { api, query } = ctx;
  const rows = new Map(); // id → {tr, batch, stop}
  const stops = [];
  let cursor = null;
  const created = query.get("created");

  const statusSelect = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, statusLabel(s))));
  const sessionInput = h("input", { id: "filter-session", name: "session", type: "search",
    value: query.get("session") || "", placeholder: "e.g. agent-run-42", autocomplete: "off" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter batches" },
    h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
    h("div", { class: "field" }, h("label", { for: "filter-session" }, "Session"), sessionInput),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "button" }, "Apply filters"),
      h("button", { type: "button", class: "button subtle", onclick: () => ctx.navigate("#/batches") }, "Clear")));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (statusSelect.value) params.set("status", statusSelect.value);
    if (sessionInput.value.trim()) params.set("session", sessionInput.value.trim());
    const qs = params.toString();
    ctx.navigate(qs ? `#/batches?${qs}` : "#/batches");
  });

  const tbody = h("tbody");
  const tableEl = h("table", { class: "data responsive batches-table" },
    h("caption", { class: "visually-hidden" }, "Batches, newest first"),
    h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col" }, c)))), tbody);
  const status = h("p", { class: "muted", id: "list-status" }, "Loading batches…");
  const more = h("button", { type: "button", class: "button", hidden: true, onclick: () => load(false) },
    "Load more");

  function cells(batch) {
    const c = batch.request_counts || {};
    const cost = batchCost(batch);
    const model = batch.model || (batch.endpoint || "");
    return [
      h("div", { class: "batch-id" },
        h("a", { href: `#/batches/${batch.id}`, class: "mono" }, batch.id),
        h("span", { class: "muted small" }, model)),
      statusBadge(batch.status),
      progressBar(batch),
      h("span", { title: "completed / failed / total" },
        `${count(c.completed)} ✓ · ${count(c.failed)} ✗ / ${count(c.total)}`),
      h("span", { title: cost.final ? "settled" : "so far" }, usd(cost.nanos), cost.final ? "" : " so far"),
      batch.session_id ? h("a", { href: `#/batches?session=${encodeURIComponent(batch.session_id)}` },
        batch.session_id) : h("span", { class: "muted" }, "—"),
      h("time", { datetime: new Date(batch.created_at * 1000).toISOString(),
        title: new Date(batch.created_at * 1000).toLocaleString() }, age(batch.created_at)),
    ];
  }

  // Replaces only the cells whose content changed, so a focused link in the row keeps its focus.
  function fill(entry, batch) {
    entry.batch = batch;
    const fresh = tableRow(COLUMNS, cells(batch));
    if (!entry.tr.cells.length) {
      entry.tr.append(...fresh.cells);
    } else {
      [...fresh.cells].forEach((td, i) => {
        const old = entry.tr.cells[i];
        if (old.innerHTML !== td.innerHTML) old.replaceChildren(...td.childNodes);
      });
    }
    entry.tr.dataset.batch = batch.id;
    entry.tr.dataset.status = batch.status;
  }

  function upsert(batch, position) {
    let entry = rows.get(batch.id);
    if (!entry) {
      entry = { tr: h("tr"), batch, stop: null };
      rows.set(batch.id, entry);
      if (position === "top") tbody.prepend(entry.tr); else tbody.append(entry.tr);
    }
    fill(entry, batch);
    const live = [...rows.values()].filter((e) => e.stop).length;
    if (batch.id === created) entry.tr.classList.add("highlight");
    if (!TERMINAL.has(batch.status) && !entry.stop && live < MAX_LIVE) {
      entry.stop = watchBatch(api, batch.id, (b) => {
        fill(entry, b);
        if (TERMINAL.has(b.status)) entry.stop = null;
      });
    }
  }

  function listQuery(after) {
    return { limit: PAGE, after, status: query.get("status"), session_id: query.get("session") };
  }

  async function load(first) {
    more.disabled = true;
    try {
      const page = await api.get("batches", listQuery(first ? null : cursor));
      if (first) for (const b of [...page.data].reverse()) upsert(b, "top");
      else for (const b of page.data) upsert(b, "bottom");
      if (first && cursor === null || !first) {
        cursor = page.last_id || cursor;
        more.hidden = !page.has_more;
      }
      status.textContent = rows.size ? `${rows.size} batch${rows.size === 1 ? "" : "es"} shown.`
        : "No batches yet. Create one with “New batch”.";
    } catch (err) {
      status.textContent = `Could not load batches: ${err.message}`;
    } finally {
      more.disabled = false;
    }
  }

  load(true);
  stops.push(every(15000, () => load(true)));

  const filtered = query.get("status") || query.get("session");
  const el = h("section", { class: "view" },
    h("div", { class: "view-head" },
      h("h1", null, filtered ? "Batches (filtered)" : "Batches"),
      h("a", { href: "#/new", class: "button primary", id: "create-button" }, "New batch")),
    created ? h("p", { class: "flash", role: "status" }, "Batch ", h("a", { href: `#/batches/${created}`, class: "mono" },
      created), " created; its progress updates live below.") : null,
    filters,
    h("div", { class: "table-wrap" }, tableEl),
    status,
    h("div", { class: "actions" }, more));

  return {
    el,
    dispose() {
      for (const stop of stops) stop();
      for (const entry of rows.values()) if (entry.stop) entry.stop();
    },
  };
}
