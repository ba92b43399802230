// The line inspector (GET /v1/batches/{id}/lines): a batch's lines searched by custom_id (prefix), filtered by
// status and error code, a page at a time (jump to page N); opening a line shows its request body, its answer
// or error and every upstream attempt (provider, latency, status, cost). Bodies cut by the API (over 64 KB)
// load whole on demand. Keyboard: ↑/↓ (or j/k) move between lines, Enter opens one, Escape closes it,
// PageUp/PageDown turn pages. `#/batches/<id>?line=N` opens line N.

import { h, replace } from "../dom.js";
import { count, dateTime, usd } from "../format.js";

const PAGE = 20;
const STATES = [["", "All lines"], ["succeeded", "Succeeded"], ["failed", "Failed"], ["not_run", "Not run"],
  ["running", "Running"], ["pending", "Pending"]];
const COLUMNS = ["Line", "Custom id", "Status", "Attempts", "Error"];

function bodyView(label, body, id) {
  if (!body) return h("p", { class: "muted" }, `${label}: none.`);
  if (body.unavailable) return h("p", { class: "muted" }, `${label}: unavailable (${body.unavailable}).`);
  const text = body.truncated ? body.text : JSON.stringify(body.json, null, 2);
  return h("div", { class: "body-view" },
    h("h4", null, label, h("span", { class: "muted small" }, ` ${count(body.bytes)} bytes`,
      body.truncated ? " · cut at 64 KB" : "")),
    h("pre", { class: "body", id, tabindex: 0 }, text));
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "No upstream attempt: this line was never sent.");
  return h("div", { class: "table-wrap" }, h("table", { class: "data responsive attempts-table" },
    h("caption", null, "Attempts"),
    h("thead", null, h("tr", null, ["#", "Provider", "Model", "Status", "Latency", "Cost", "Time"].map((c) =>
      h("th", { scope: "col" }, c)))),
    h("tbody", null, attempts.map((a) => h("tr", null,
      h("td", { "data-label": "#" }, String(a.attempt)),
      h("td", { "data-label": "Provider" }, a.provider),
      h("td", { "data-label": "Model" }, a.model),
      h("td", { "data-label": "Status" }, h("span", { class: a.status_code >= 200 && a.status_code < 300 ? "ok" : "bad" },
        a.status_code ? String(a.status_code) : (a.error_code || "no answer"))),
      h("td", { "data-label": "Latency" }, `${count(a.latency_ms)} ms`),
      h("td", { "data-label": "Cost" }, a.cost_nanos === null ? "—" : usd(a.cost_nanos)),
      h("td", { "data-label": "Time" }, dateTime(a.created_at)))))));
}

export function renderLines(ctx, batchId) {
  const { api } = ctx;
  let offset = 0;
  let page = null;
  let openLine = null;
  let disposed = false;
  let cursorIndex = 0;

  const search = h("input", { id: "lines-search", type: "search", autocomplete: "off", spellcheck: "false",
    placeholder: "custom_id or its start" });
  const state = h("select", { id: "lines-status" }, STATES.map(([v, label]) => h("option", { value: v }, label)));
  const code = h("input", { id: "lines-error", type: "search", autocomplete: "off", placeholder: "e.g. rate_limit_exceeded" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Search the lines" },
    h("div", { class: "field grow" }, h("label", { for: "lines-search" }, "Custom id"), search),
    h("div", { class: "field" }, h("label", { for: "lines-status" }, "Status"), state),
    h("div", { class: "field" }, h("label", { for: "lines-error" }, "Error code"), code),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Find")));
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load({ openExact: true }); });
  state.addEventListener("change", () => { offset = 0; load(); });

  const tbody = h("tbody");
  const tableEl = h("table", { class: "data responsive lines-table", "aria-describedby": "lines-keys" },
    h("caption", { class: "visually-hidden" }, "Lines of this batch"),
    h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col" }, c)))), tbody);
  const status = h("p", { class: "muted", id: "lines-page-status", role: "status" });
  const prev = h("button", { type: "button", class: "button", id: "lines-prev", disabled: true,
    onclick: () => turn(-1) }, "← Previous");
  const next = h("button", { type: "button", class: "button", id: "lines-next", disabled: true,
    onclick: () => turn(1) }, "Next →");
  const pageInput = h("input", { id: "lines-page", type: "number", min: 1, inputmode: "numeric", value: 1,
    class: "narrow-input" });
  const jump = h("form", { class: "field inline", "aria-label": "Go to a page of lines" },
    h("label", { for: "lines-page" }, "Page"), pageInput,
    h("button", { type: "submit", class: "button" }, "Go"));
  jump.addEventListener("submit", (event) => {
    event.preventDefault();
    const pages = page ? Math.max(1, Math.ceil(page.total_matching / PAGE)) : 1;
    const n = Math.min(pages, Math.max(1, Math.floor(Number(pageInput.value) || 1)));
    offset = (n - 1) * PAGE;
    load({ focus: true });
  });
  const panel = h("div", { class: "line-panel", id: "line-panel", hidden: true, tabindex: -1,
    "aria-live": "polite" });

  function query() {
    return { limit: PAGE, offset, custom_id: search.value.trim(), status: state.value, error_code: code.value.trim() };
  }

  function turn(delta) {
    if (!page) return;
    const target = offset + delta * PAGE;
    if (target < 0 || (delta > 0 && !page.has_more)) return;
    offset = target;
    load({ focus: true });
  }

  function rowsOf() { return [...tbody.querySelectorAll("tr[data-line]")]; }

  function focusRow(index) {
    const rows = rowsOf();
    if (!rows.length) return;
    cursorIndex = Math.max(0, Math.min(rows.length - 1, index));
    rows[cursorIndex].focus();
  }

  async function load({ focus = false, openExact = false } = {}) {
    try {
      const result = await api.get(`batches/${encodeURIComponent(batchId)}/lines`, query());
      if (disposed) return;
      page = result;
      replace(tbody, ...result.data.map((line, i) => {
        const tr = h("tr", { tabindex: 0, "data-line": line.line, class: line.line === openLine ? "selected" : null,
          "aria-label": `Line ${line.line}, ${line.custom_id}, ${line.status}` },
        h("td", { "data-label": "Line" }, String(line.line)),
        h("td", { "data-label": "Custom id" }, h("span", { class: "mono" }, line.custom_id)),
        h("td", { "data-label": "Status" }, h("span", { class: `line-state state-${line.status}` },
          line.status.replace("_", " "))),
        h("td", { "data-label": "Attempts" }, String(line.attempt_count)),
        h("td", { "data-label": "Error" }, line.error_code || "—"));
        tr.addEventListener("click", () => show(line));
        tr.addEventListener("focus", () => { cursorIndex = i; });
        return tr;
      }));
      if (!result.data.length) {
        tbody.append(h("tr", null, h("td", { colspan: COLUMNS.length, class: "empty" }, "No line matches.")));
      }
      const pages = Math.max(1, Math.ceil(result.total_matching / PAGE));
      const n = Math.floor(offset / PAGE) + 1;
      pageInput.max = pages;
      pageInput.value = n;
      status.textContent = result.data.length
        ? `Page ${count(n)} of ${count(pages)} · ${count(result.total_matching)} matching line`
          + `${result.total_matching === 1 ? "" : "s"}.`
        : "";
      prev.disabled = offset === 0;
      next.disabled = !result.has_more;
      const exact = openExact && result.data.find((l) => l.custom_id === search.value.trim());
      if (exact) show(exact);
      else if (focus) focusRow(0);
    } catch (err) {
      status.textContent = `Could not load the lines: ${err.message}`;
    }
  }

  function show(line) {
    openLine = line.line;
    for (const tr of rowsOf()) tr.classList.toggle("selected", Number(tr.dataset.line) === line.line);
    const cut = (line.request && line.request.truncated) || (line.result && line.result.truncated);
    const whole = cut ? h("button", { type: "button", class: "button", id: "line-whole",
      onclick: async () => {
        try { show(await api.get(`batches/${encodeURIComponent(batchId)}/lines/${line.line}`)); }
        catch (err) { status.textContent = `Could not load the whole line: ${err.message}`; }
      } }, "Load the whole line") : null;
    replace(panel,
      h("div", { class: "line-head" },
        h("h3", { id: "line-title" }, `Line ${line.line} · `, h("span", { class: "mono" }, line.custom_id)),
        h("button", { type: "button", class: "button subtle", id: "line-close", "aria-label": "Close this line",
          onclick: close }, "Close")),
      h("p", null, h("span", { class: `line-state state-${line.status}` }, line.status.replace("_", " ")),
        ` · ${line.model} via ${line.provider}`, line.error_code ? ` · ${line.error_code}` : "",
        ` · ${count(line.usage.input_tokens)} in / ${count(line.usage.output_tokens)} out tokens`),
      whole,
      attemptsTable(line.attempts),
      h("div", { class: "bodies" }, bodyView("Request body", line.request, "line-request"),
        bodyView(line.status === "succeeded" ? "Answer" : "Answer or error", line.result, "line-result")));
    panel.hidden = false;
    panel.focus();
  }

  function close() {
    panel.hidden = true;
    const rows = rowsOf();
    const row = rows.find((tr) => Number(tr.dataset.line) === openLine);
    openLine = null;
    for (const tr of rows) tr.classList.remove("selected");
    if (row) row.focus();
  }

  const keys = (event) => {
    if (event.target.matches("input, select, textarea")) return;
    const rows = rowsOf();
    const inRows = rows.includes(event.target);
    if ((event.key === "ArrowDown" || event.key === "j") && inRows) { event.preventDefault(); focusRow(cursorIndex + 1); }
    else if ((event.key === "ArrowUp" || event.key === "k") && inRows) { event.preventDefault(); focusRow(cursorIndex - 1); }
    else if (event.key === "Enter" && inRows) {
      event.preventDefault();
      const line = page.data.find((l) => l.line === Number(event.target.dataset.line));
      if (line) show(line);
    } else if (event.key === "Escape" && !panel.hidden) { event.preventDefault(); close(); }
    else if (event.key === "PageDown" && inRows) { event.preventDefault(); turn(1); }
    else if (event.key === "PageUp" && inRows) { event.preventDefault(); turn(-1); }
  };

  const el = h("section", { class: "card wide", "aria-labelledby": "lines-title", id: "lines" },
    h("h2", { id: "lines-title" }, "Lines"),
    form,
    h("p", { class: "hint", id: "lines-keys" }, "↑ ↓ move between lines, Enter opens one, Escape closes it, "
      + "Page Up / Page Down turn pages."),
    h("div", { class: "table-wrap" }, tableEl),
    h("div", { class: "actions pager" }, prev, status, next, jump),
    panel);
  el.addEventListener("keydown", keys);

  const wanted = Number(ctx.query.get("line"));
  if (wanted > 0) {
    api.get(`batches/${encodeURIComponent(batchId)}/lines/${wanted}`).then((line) => { if (!disposed) show(line); },
      (err) => { status.textContent = `Could not open line ${wanted}: ${err.message}`; });
  }
  load();

  return {
    el,
    /** Re-read the page (a running batch's lines change state). */
    refresh() { if (!disposed) load(); },
    dispose() { disposed = true; },
  };
}
