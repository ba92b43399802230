// The overview: spend, requests and tokens over the last N days (GET /v1/usage), credit (GET /v1/credits),
// batches by status, and two stacked bar charts per day and model, each with its data as a table.

import { SERIES_CLASSES, stackedBars } from "../chart.js";
import { h, replace, table } from "../dom.js";
import { count, statusLabel, usd } from "../format.js";

const RANGES = [7, 30, 90];

function stat(label, value, note) {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label),
    h("span", { class: "stat-value" }, value), note ? h("span", { class: "muted small" }, note) : null);
}

function legend(models) {
  return h("ul", { class: "legend", "aria-label": "Models" }, models.map((m, k) => h("li", null,
    h("span", { class: `swatch series-${k % SERIES_CLASSES}`, "aria-hidden": "true" }), m)));
}

export function renderOverview(ctx) {
  const { api, query } = ctx;
  const days = RANGES.includes(Number(query.get("days"))) ? Number(query.get("days")) : 30;
  const content = h("div", { class: "overview" }, h("p", { class: "muted" }, "Loading usage…"));
  let disposed = false;

  const range = h("select", { id: "range", name: "days" },
    RANGES.map((d) => h("option", { value: d, selected: d === days }, `Last ${d} days`)));
  range.addEventListener("change", () => ctx.navigate(`#/overview?days=${range.value}`));

  async function load() {
    let usage;
    let credits;
    try {
      [usage, credits] = await Promise.all([
        api.get("usage", { days, tz_offset_minutes: -new Date().getTimezoneOffset() }),
        api.get("credits"),
      ]);
    } catch (err) {
      if (!disposed) replace(content, h("p", { class: "form-error" }, `Could not load usage: ${err.message}`));
      return;
    }
    if (disposed) return;
    const cell = new Map(); // "date|model" → row
    for (const row of usage.data) {
      const key = `${row.date}|${row.model}`;
      const prev = cell.get(key);
      if (prev) { prev.cost_nanos += row.cost_nanos; prev.requests += row.requests; } else cell.set(key, { ...row });
    }
    const val = (field) => (date, model) => (cell.get(`${date}|${model}`) || {})[field] || 0;
    const t = usage.totals;
    const byStatus = Object.entries(usage.batches_by_status || {});
    const charts = usage.models.length ? [
      h("section", { class: "card wide", "aria-labelledby": "spend-title" },
        h("h2", { id: "spend-title" }, "Spend per day"),
        t.cost_nanos > 0
          ? stackedBars({ id: "spend-chart", dates: usage.dates, series: usage.models, value: val("cost_nanos"),
            format: usd, title: `Spend per day and model, last ${days} days`,
            desc: `Total ${usd(t.cost_nanos)} across ${usage.models.length} models.` })
          : h("p", { class: "muted" }, "No spend in this period (the models used cost nothing)."),
        legend(usage.models)),
      h("section", { class: "card wide", "aria-labelledby": "lines-title" },
        h("h2", { id: "lines-title" }, "Requests per day"),
        stackedBars({ id: "lines-chart", dates: usage.dates, series: usage.models, value: val("requests"),
          integer: true, format: (v) => count(Math.round(v)), title: `Upstream requests per day and model, last ${days} days`,
          desc: `${count(t.requests)} requests, ${count(t.failed)} failed.` }),
        legend(usage.models)),
      h("details", { class: "card wide" }, h("summary", null, "Show the numbers as a table"),
        table({ caption: "Usage per day and model", className: "responsive",
          columns: ["Date", "Model", "Provider", "Requests", "Failed", "Tokens in", "Tokens out", "Spend"],
          rows: usage.data.map((r) => [r.date, r.model, r.provider, count(r.requests), count(r.failed),
            count(r.input_tokens), count(r.output_tokens), usd(r.cost_nanos)]) })),
    ] : [h("p", { class: "muted card wide" }, "No upstream requests in this period yet.")];

    replace(content,
      h("div", { class: "stats" },
        stat("Spend", usd(t.cost_nanos), `last ${days} days`),
        stat("Requests", count(t.requests), `${count(t.succeeded)} ok · ${count(t.failed)} failed`),
        stat("Tokens", count(t.total_tokens), `${count(t.input_tokens)} in · ${count(t.output_tokens)} out`),
        stat("Credit available", credits.unlimited ? "unlimited" : usd(credits.available_nanos),
          credits.unlimited ? "no limit set" : `${usd(credits.held_nanos)} held by running batches`)),
      h("section", { class: "card wide", "aria-labelledby": "status-title" },
        h("h2", { id: "status-title" }, "Batches by status"),
        byStatus.length ? h("ul", { class: "status-counts" }, byStatus.map(([st, n]) => h("li", null,
          h("a", { href: `#/batches?status=${st}`, class: `badge status-${st}` }, statusLabel(st)), ` ${count(n)}`)))
          : h("p", { class: "muted" }, "No batches in this period.")),
      charts);
  }
  load();

  const el = h("section", { class: "view" },
    h("div", { class: "view-head" }, h("h1", null, "Overview"),
      h("div", { class: "field inline" }, h("label", { for: "range" }, "Period"), range)),
    content);
  return { el, dispose() { disposed = true; } };
}
