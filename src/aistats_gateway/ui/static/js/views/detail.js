// One batch: live status and progress (what ran, what never ran, throughput and ETA), timeline, counts,
// billing (cost so far while it runs, the settled cost after) and pricing lines, webhook deliveries,
// validation errors with line numbers, output/error downloads, cancel (confirmed in a dialog), the line
// inspector (views/lines.js) and the request log (views/requestlog.js; collapsed on phones). When neither the
// stream nor the API answers, the page says the data is stale and disables its actions until they do.

import { ApiError } from "../api.js";
import { alertError, announce, facts, h, replace, table } from "../dom.js";
import { TERMINAL, batchCost, bytes, count, countsText, dateTime, isoTime, lineCounts, rateMeter, usd }
  from "../format.js";
import { watchBatch } from "../live.js";
import { paceText, progressBar, statusCell } from "./batches.js";
import { renderLines } from "./lines.js";
import { renderRequestLog } from "./requestlog.js";

const TIMELINE = [
  ["created_at", "Created"], ["in_progress_at", "In progress"], ["finalizing_at", "Finalizing"],
  ["cancelling_at", "Cancelling"], ["completed_at", "Completed"], ["failed_at", "Failed"],
  ["cancelled_at", "Cancelled"], ["expired_at", "Expired"],
];

function timeline(batch) {
  const steps = TIMELINE.filter(([field]) => batch[field]).map(([field, label]) => ({ at: batch[field], label }));
  steps.sort((a, b) => a.at - b.at);
  const list = h("ol", { class: "timeline" }, steps.map((step) =>
    h("li", null, h("span", { class: "step" }, step.label),
      h("time", { datetime: isoTime(step.at) }, dateTime(step.at)))));
  if (!TERMINAL.has(batch.status) && batch.expires_at) {
    list.append(h("li", { class: "future" }, h("span", { class: "step" }, "Expires"),
      h("time", { datetime: isoTime(batch.expires_at) }, dateTime(batch.expires_at))));
  }
  return list;
}

function summary(batch) {
  const meta = Object.entries(batch.metadata || {});
  return facts([
    ["Endpoint", batch.endpoint],
    ["Model", batch.model || "mixed"],
    ["Provider", batch.provider],
    ["Session", batch.session_id],
    ["Completion window", batch.completion_window],
    ["Input file", h("span", { class: "mono" }, batch.input_file_id)],
    ["Request id", h("span", { class: "mono" }, batch.request_id)],
    ["Metadata", meta.length ? h("ul", { class: "plain" }, meta.map(([k, v]) => h("li", null,
      h("span", { class: "mono" }, k), " = ", String(v)))) : null],
    ["Status reason", batch.status_reason],
  ]);
}

function counts(batch) {
  const c = lineCounts(batch);
  const u = batch.usage || {};
  return facts([
    ["Total", count(c.total)], ["Succeeded", count(c.succeeded)], ["Failed", count(c.errored)],
    ["Not run", c.notRun ? `${count(c.notRun)} (${c.why})` : null],
    ["Pending", TERMINAL.has(batch.status) ? null : count(c.pending)],
    ["Input tokens", count(u.input_tokens)], ["Output tokens", count(u.output_tokens)],
  ]);
}

function billing(batch) {
  const b = batch.billing || {};
  const cost = batchCost(batch); // the list shows the same figure
  return facts([
    ["State", b.state], [cost.final ? "Cost" : "Cost so far", h("span", { id: "billing-cost" }, usd(cost.nanos))],
    ["Estimated (upper bound)", b.estimated_nanos ? usd(b.estimated_nanos) : null],
    ["Held", b.reserved_nanos ? usd(b.reserved_nanos) : null], ["Reservation", b.reservation_status],
    ["Reason", b.reason], ["Finalized", dateTime(b.finalized_at)],
  ]);
}

function pricing(batch) {
  const lines = batch.pricing_lines || [];
  return table({
    caption: "Pricing lines", hiddenCaption: true, className: "responsive",
    columns: ["Model", "Meter", "Quantity", "Unit price", "Plan", "Cost"],
    rows: lines.map((l) => [l.model.startsWith(`${l.provider}/`) ? l.model : `${l.provider}/${l.model}`,
      l.dimension, count(l.quantity),
      `${l.unit_price_usd} / ${count(l.unit_size)}`, l.pricing_plan, usd(l.line_nanos)]),
    empty: "No priced usage yet.",
  });
}

function webhook(batch) {
  const w = batch.webhook;
  if (!w) return h("p", { class: "muted" }, "No webhook configured for this batch.");
  const d = w.delivery || {};
  return h("div", null,
    facts([
      ["URL", h("span", { class: "mono" }, w.url)], ["Events", (w.events || []).join(", ")],
      ["Signed", w.has_secret ? "yes" : "no"], ["Delivered events", count(d.delivered_events)],
      ["Pending", count(d.pending_events)], ["Failed permanently", count(d.failed_events)],
      ["Next retry", dateTime(d.next_retry_at)], ["Last error", d.last_error_message],
    ]),
    table({
      caption: "Last delivery attempts", className: "responsive",
      columns: ["Event", "Attempt", "Status", "HTTP", "When", "Error"],
      rows: (w.attempts || []).map((a) => [a.event_type || "", `${a.attempt_number ?? ""} of ${a.max_attempts ?? "?"}`,
        a.status || "", a.response_status ? String(a.response_status) : "—",
        dateTime(a.tried_at), a.error_message || ""]),
      empty: "No delivery attempts yet.",
    }));
}

function validationErrors(batch) {
  const errors = (batch.errors && batch.errors.data) || [];
  if (!errors.length) return null;
  return table({
    caption: `Validation errors (${errors.length})`, hiddenCaption: true, className: "responsive errors-table",
    columns: ["Line", "Code", "Parameter", "Message"],
    rows: errors.map((e) => [e.line === null || e.line === undefined ? "—" : String(e.line), e.code,
      e.param || "—", e.message]),
  });
}

function card(title, body, id, wide) {
  return h("section", { class: wide ? "card wide" : "card", "aria-labelledby": id }, h("h2", { id }, title), body);
}

export function renderDetail(ctx, batchId) {
  const { api } = ctx;
  let batch = null;
  let stop = null;

  const heading = h("h1", null, "Batch ", h("span", { class: "mono" }, batchId));
  const badge = h("span");
  const progressSlot = h("div", { class: "detail-progress" });
  const meter = rateMeter();
  const stale = h("p", { class: "stale-banner", id: "stale-banner", role: "alert", hidden: true },
    "Connection lost, retrying… The figures below may be out of date; actions are disabled until the gateway "
    + "answers again.");
  const body = h("div", { class: "cards" }, h("p", { class: "muted" }, "Loading…"));
  const outputButton = h("button", { type: "button", class: "button", id: "download-output", hidden: true },
    "Download output");
  const errorButton = h("button", { type: "button", class: "button", id: "download-errors", hidden: true },
    "Download errors");
  const cancelButton = h("button", { type: "button", class: "button danger", id: "cancel-batch", hidden: true },
    "Cancel batch");
  const log = renderRequestLog(api, batchId);
  const lines = renderLines(ctx, batchId);
  const actions = () => [outputButton, errorButton, cancelButton];
  function setOnline(online) {
    stale.hidden = online;
    for (const button of actions()) button.disabled = !online;
    announce(online ? "Connected again." : "Connection lost, retrying.");
  }

  const dialog = h("dialog", { class: "confirm", "aria-labelledby": "cancel-title" },
    h("form", { method: "dialog" },
      h("h2", { id: "cancel-title" }, "Cancel this batch?"),
      h("p", null, "Lines already finished are kept; every unfinished line goes to the error file as ",
        h("code", null, "batch_cancelled"), ". This cannot be undone."),
      h("div", { class: "actions" },
        h("button", { value: "keep", class: "button", autofocus: true }, "Keep running"),
        h("button", { value: "cancel", class: "button danger", id: "confirm-cancel" }, "Cancel batch"))));
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "cancel") return;
    cancelButton.disabled = true;
    try {
      show(await api.post(`batches/${encodeURIComponent(batchId)}/cancel`, {}));
      announce("Cancellation requested.");
    } catch (err) {
      alertError(`Could not cancel: ${err.message}`);
    } finally {
      cancelButton.disabled = false;
    }
  });
  cancelButton.addEventListener("click", () => dialog.showModal());

  async function download(fileId, suffix, button) {
    button.disabled = true;
    try {
      const size = await api.download(fileId, `${batchId}_${suffix}.jsonl`);
      announce(`Downloaded ${bytes(size)}.`);
    } catch (err) {
      alertError(`Download failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }
  outputButton.addEventListener("click", () => download(batch.output_file_id, "output", outputButton));
  errorButton.addEventListener("click", () => download(batch.error_file_id, "errors", errorButton));

  function show(next) {
    const wasTerminal = batch && TERMINAL.has(batch.status);
    batch = next;
    replace(badge, statusCell(batch));
    const c = lineCounts(batch);
    if (!TERMINAL.has(batch.status)) meter.observe(c.ran + c.notRun);
    const pace = paceText(batch, meter);
    replace(progressSlot, progressBar(batch, "Batch progress"),
      h("p", { class: "muted", id: "detail-counts" }, `${countsText(batch)} — ${count(c.total)} lines`),
      pace ? h("p", { class: "muted small", id: "detail-pace" }, pace) : null);
    outputButton.hidden = !batch.output_file_id;
    errorButton.hidden = !batch.error_file_id;
    cancelButton.hidden = !batch.cancel_url;
    const errors = validationErrors(batch);
    replace(body,
      errors ? card(`Validation errors (${batch.errors.data.length})`, errors, "errors-title", true) : null,
      card("Summary", summary(batch), "summary-title"),
      card("Timeline", timeline(batch), "timeline-title"),
      card("Requests and usage", counts(batch), "counts-title"),
      card("Billing", billing(batch), "billing-title"),
      card("Webhook deliveries", webhook(batch), "webhook-title"),
      card("Pricing lines", pricing(batch), "pricing-title", true));
    log.batchChanged(batch);
    if (!wasTerminal && TERMINAL.has(batch.status)) announce(`Batch ${batch.status}.`);
  }

  async function start() {
    try {
      show(await api.get(`batches/${encodeURIComponent(batchId)}`));
    } catch (err) {
      const missing = err instanceof ApiError && err.status === 404;
      replace(body, h("p", { class: "form-error" },
        missing ? "No such batch in this workspace." : `Could not load the batch: ${err.message}`));
      return;
    }
    if (!TERMINAL.has(batch.status)) {
      stop = watchBatch(api, batchId, show, { onState: (state) => setOnline(state === "live") });
    }
  }
  start();

  const el = h("section", { class: "view" },
    h("p", null, h("a", { href: "#/batches" }, "← All batches")),
    h("div", { class: "view-head start" }, heading, badge),
    stale,
    progressSlot,
    h("div", { class: "actions toolbar" }, outputButton, errorButton, cancelButton),
    body,
    lines.el,
    log.el,
    dialog);
  return {
    el,
    dispose() {
      if (stop) stop();
      log.dispose();
      lines.dispose();
      if (dialog.open) dialog.close();
    },
  };
}
