// The batches list: search (batch id or metadata value, session prefix) and a status filter, one row per
// batch with a live progress bar (each unfinished batch's lifecycle WebSocket), what ran and what did not,
// throughput and ETA, cost, session and a ticking age; a page size choice and "load more" with the API's
// cursor; the first page is re-read every 15 s to show batches created elsewhere.

import { h, tableRow } from "../dom.js";
import { STATUSES, TERMINAL, age, batchCost, countsText, etaText, lineCounts, mostlyFailed, progressOf,
  rateMeter, rateText, statusLabel, tickAges, usdFixed } from "../format.js";
import { every, watchBatch } from "../live.js";

const COLUMNS = ["Batch", "Status", "Progress", "Requests", "Cost", "Session", "Age"];
const PAGE_SIZES = [20, 50, 100];
const MAX_LIVE = 40; // sockets open at once; rows beyond this still refresh with the page

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, statusLabel(status));
}

/** The status, marked when most lines that ran failed, with a validation-failed batch's first error. */
export function statusCell(batch) {
  const c = lineCounts(batch);
  const first = batch.status === "failed" && batch.errors && batch.errors.data && batch.errors.data[0];
  return h("div", { class: "status-cell" },
    statusBadge(batch.status),
    mostlyFailed(batch) ? h("span", { class: "badge warn mostly-failed" },
      `${c.errored.toLocaleString("en-US")} of ${c.ran.toLocaleString("en-US")} failed`) : null,
    first ? h("span", { class: "first-error small" },
      first.line ? `line ${first.line}: ` : "", first.message || first.code) : null);
}

/** The bar shows what ran; lines not run (cancelled, expired) are not part of it. */
export function progressBar(batch, label) {
  const value = progressOf(batch);
  const c = lineCounts(batch);
  return h("div", { class: c.notRun ? "progress-cell stopped" : "progress-cell" },
    h("progress", { max: 100, value, "aria-label": label || `Progress of ${batch.id}`,
      "aria-valuetext": `${value} percent ran` }),
    h("span", { class: "progress-text" }, `${value}%`));
}

/** "12/s · ETA 3 min" for a running batch (empty until two observations a second apart). */
export function paceText(batch, meter) {
  if (TERMINAL.has(batch.status) || !meter) return "";
  const rate = meter.rate();
  const c = lineCounts(batch);
  return [rateText(rate), etaText(c.pending, rate)].filter(Boolean).join(" · ");
}

function modelName(batch) {
  if (batch.model) return batch.model;
  if (batch.status === "validating") return "model not known yet";
  return lineCounts(batch).total ? "several models" : "no valid lines";
}

export function renderBatches(ctx) {
  const { api, query } = ctx;
  const rows = new Map(); // id → {tr, batch, stop, meter}
  const stops = [];
  let cursor = null;
  const created = query.get("created");
  const size = PAGE_SIZES.includes(Number(query.get("size"))) ? Number(query.get("size")) : PAGE_SIZES[0];

  const searchInput = h("input", { id: "filter-search", name: "q", type: "search", value: query.get("q") || "",
    placeholder: "batch_01J… or a metadata value", autocomplete: "off", "aria-describedby": "filter-search-help" });
  const statusSelect = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, statusLabel(s))));
  const sessionInput = h("input", { id: "filter-session", name: "session", type: "search",
    value: query.get("session") || "", placeholder: "e.g. agent-run-", autocomplete: "off" });
  const sizeSelect = h("select", { id: "page-size", name: "size" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === size }, `${n} per page`)));
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Search and filter batches" },
    h("div", { class: "field grow" }, h("label", { for: "filter-search" }, "Search"), searchInput,
      h("span", { class: "hint", id: "filter-search-help" }, "A batch id (or its start), or a metadata value")),
    h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
    h("div", { class: "field" }, h("label", { for: "filter-session" }, "Session starts with"), sessionInput),
    h("div", { class: "field" }, h("label", { for: "page-size" }, "Page size"), sizeSelect),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "button" }, "Search"),
      h("button", { type: "button", class: "button subtle", onclick: () => ctx.navigate("#/batches") }, "Clear")));
  const apply = () => {
    const params = new URLSearchParams();
    if (searchInput.value.trim()) params.set("q", searchInput.value.trim());
    if (statusSelect.value) params.set("status", statusSelect.value);
    if (sessionInput.value.trim()) params.set("session", sessionInput.value.trim());
    if (Number(sizeSelect.value) !== PAGE_SIZES[0]) params.set("size", sizeSelect.value);
    const qs = params.toString();
    ctx.navigate(qs ? `#/batches?${qs}` : "#/batches");
  };
  filters.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  sizeSelect.addEventListener("change", apply);

  const tbody = h("tbody");
  const tableEl = h("table", { class: "data responsive batches-table" },
    h("caption", { class: "visually-hidden" }, "Batches, newest first"),
    h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col" }, c)))), tbody);
  const status = h("p", { class: "muted", id: "list-status", role: "status" }, "Loading batches…");
  const more = h("button", { type: "button", class: "button", hidden: true, onclick: () => load(false) },
    "Load more");

  function cells(batch, meter) {
    const cost = batchCost(batch);
    const c = lineCounts(batch);
    const pace = paceText(batch, meter);
    return [
      h("div", { class: "batch-id" },
        h("a", { href: `#/batches/${batch.id}`, class: "mono" }, batch.id),
        h("span", { class: "muted small model-name" }, modelName(batch))),
      statusCell(batch),
      h("div", { class: "progress-stack" }, progressBar(batch),
        pace ? h("span", { class: "muted small pace" }, pace) : null),
      h("span", { class: "counts-text", title: `${c.total.toLocaleString("en-US")} lines in all` }, countsText(batch)),
      h("span", { class: "cost", title: cost.final ? "settled" : "so far" }, usdFixed(cost.nanos),
        cost.final ? "" : " so far"),
      batch.session_id ? h("a", { href: `#/batches?session=${encodeURIComponent(batch.session_id)}` },
        batch.session_id) : h("span", { class: "muted" }, "—"),
      h("time", { datetime: new Date(batch.created_at * 1000).toISOString(), "data-age": batch.created_at,
        title: new Date(batch.created_at * 1000).toLocaleString() }, age(batch.created_at)),
    ];
  }

  // Replaces only the cells whose content changed, so a focused link in the row keeps its focus.
  function fill(entry, batch) {
    entry.batch = batch;
    if (!TERMINAL.has(batch.status)) {
      const c = lineCounts(batch);
      entry.meter.observe(c.ran + c.notRun);
    }
    const fresh = tableRow(COLUMNS, cells(batch, entry.meter));
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
      entry = { tr: h("tr"), batch, stop: null, meter: rateMeter() };
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
    const q = query.get("q") || "";
    // a batch id (or its start) searches ids; anything else is a metadata value
    const isId = /^batch_/i.test(q);
    return { limit: size, after, status: query.get("status"), session_prefix: query.get("session"),
      id_prefix: isId ? q : null, metadata_value: q && !isId ? q : null };
  }

  const filtered = Boolean(query.get("status") || query.get("session") || query.get("q"));

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
      if (rows.size) status.textContent = `${rows.size} batch${rows.size === 1 ? "" : "es"} shown.`;
      else if (filtered) status.textContent = "No batches match this search or filter. Clear it to see every batch.";
      else status.textContent = "No batches yet. Create one with “New batch”.";
      status.classList.toggle("empty-result", !rows.size);
    } catch (err) {
      status.textContent = `Could not load batches: ${err.message}`;
    } finally {
      more.disabled = false;
    }
  }

  load(true);
  stops.push(every(15000, () => load(true)));
  stops.push(every(1000, () => tickAges(tbody)));

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
