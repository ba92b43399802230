// A batch's request log (GET /v1/batches/{id}/requests?view=attempts): every upstream attempt, filtered by outcome or
// HTTP status, paged 25 at a time; page one refreshes itself while the batch runs. Collapsed on phones.

import { h, replace, table } from "../dom.js";
import { TERMINAL, count, dateTime, usd } from "../format.js";

const PAGE = 25;
const COLUMNS = ["Line", "Custom id", "Attempt", "Model", "Status", "Latency", "Tokens in/out", "Cost", "Time",
  "Request id"];
const REFRESH_MS = 3000;

export function renderRequestLog(api, batchId) {
  let offset = 0;
  let lastLoad = 0;
  let pending = null;
  let disposed = false;
  let sawTerminal = false;
  let seenRunning = false;

  const filter = h("select", { id: "log-filter", name: "status" },
    h("option", { value: "" }, "All attempts"),
    h("option", { value: "success" }, "Successful (2xx)"),
    h("option", { value: "error" }, "Errors (non-2xx or no answer)"),
    h("option", { value: "code" }, "HTTP status…"));
  const codeInput = h("input", { id: "log-code", name: "code", type: "number", min: 100, max: 599,
    inputmode: "numeric", placeholder: "429", hidden: true, "aria-label": "HTTP status code" });
  const form = h("form", { class: "filters", "aria-label": "Filter the request log" },
    h("div", { class: "field" }, h("label", { for: "log-filter" }, "Show"), filter),
    h("div", { class: "field" }, codeInput),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "button" }, "Apply"),
      h("button", { type: "button", class: "button subtle", onclick: () => load() }, "Refresh")));
  filter.addEventListener("change", () => {
    codeInput.hidden = filter.value !== "code";
    if (filter.value === "code") codeInput.focus();
    else { offset = 0; load(); }
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load(); });

  const slot = h("div");
  const status = h("p", { class: "muted", role: "status" });
  const prev = h("button", { type: "button", class: "button", disabled: true,
    onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "← Previous");
  const next = h("button", { type: "button", class: "button", disabled: true,
    onclick: () => { offset += PAGE; load(); } }, "Next →");

  function statusFilter() {
    if (filter.value === "code") return codeInput.value ? String(codeInput.value) : null;
    return filter.value || null;
  }

  async function load() {
    lastLoad = Date.now();
    try {
      const page = await api.get(`batches/${encodeURIComponent(batchId)}/requests`,
        { view: "attempts", limit: PAGE, offset, status: statusFilter() });
      if (disposed) return;
      replace(slot, table({
        caption: "Upstream attempts", className: "responsive log-table", columns: COLUMNS,
        rows: page.data.map((r) => [String(r.line), r.custom_id, String(r.attempt), r.model,
          h("span", { class: r.status_code >= 200 && r.status_code < 300 ? "ok" : "bad" },
            r.status_code ? String(r.status_code) : (r.error_code || "no answer")),
          `${count(r.latency_ms)} ms`, `${count(r.usage.input_tokens)} / ${count(r.usage.output_tokens)}`,
          r.cost_nanos === null ? "—" : usd(r.cost_nanos), dateTime(r.created_at),
          h("span", { class: "mono small" }, r.id)]),
        empty: offset ? "No more attempts." : "No upstream attempts match.",
      }));
      status.textContent = page.data.length
        ? `Attempts ${count(offset + 1)}–${count(offset + page.data.length)}${page.has_more ? " (more below)" : ""}.`
        : "";
      prev.disabled = offset === 0;
      next.disabled = !page.has_more;
    } catch (err) {
      status.textContent = `Could not load the request log: ${err.message}`;
    }
  }
  load();

  return {
    // collapsed by default on phones, where it is a long list of cards below everything else
    el: h("details", { class: "card wide collapsible", id: "request-log",
      open: !window.matchMedia("(max-width: 640px)").matches },
    h("summary", null, h("h2", { id: "log-title" }, "Request log")),
    h("section", { "aria-labelledby": "log-title" }, form, slot, status,
      h("div", { class: "actions" }, prev, next))),
    /** Called with each new state of the batch: page one follows a running batch (throttled), and is
     * read once more when the batch ends. A batch first seen already finished needs nothing more. */
    batchChanged(batch) {
      if (offset !== 0 || disposed || sawTerminal) return;
      const terminal = TERMINAL.has(batch.status);
      if (terminal) sawTerminal = true;
      else seenRunning = true;
      if (terminal && !seenRunning) return;
      const due = lastLoad + REFRESH_MS - Date.now();
      if (terminal || due <= 0) {
        clearTimeout(pending);
        pending = null;
        load();
      } else if (!pending) {
        pending = setTimeout(() => { pending = null; load(); }, due);
      }
    },
    dispose() { disposed = true; clearTimeout(pending); },
  };
}
