// Display formats: money from integer nanos, ages, dates, counts, statuses.

const NANOS_PER_USD = 1e9;

export const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);

export const STATUSES = ["validating", "in_progress", "finalizing", "completed", "failed", "cancelling",
  "cancelled", "expired"];

/** "$12.34" for cents and above, more decimals for fractions of a cent, "$0.00" for nothing. */
export function usd(nanos) {
  const n = Number(nanos || 0);
  if (n === 0) return "$0.00";
  const value = n / NANOS_PER_USD;
  const abs = Math.abs(value);
  if (abs >= 0.01) {
    return value.toLocaleString("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2,
      maximumFractionDigits: abs < 1 ? 4 : 2 });
  }
  return (value < 0 ? "-$" : "$") + abs.toFixed(9).replace(/0+$/, "");
}

export function count(n) {
  return Number(n || 0).toLocaleString("en-US");
}

export function statusLabel(status) {
  return String(status || "").replace(/_/g, " ");
}

/** "12 s", "5 min", "3 h", "2 d" since a Unix time (seconds). */
export function age(unixSeconds, now = Date.now() / 1000) {
  if (!unixSeconds) return "";
  const d = Math.max(0, now - unixSeconds);
  if (d < 60) return `${Math.floor(d)} s`;
  if (d < 3600) return `${Math.floor(d / 60)} min`;
  if (d < 86400) return `${Math.floor(d / 3600)} h`;
  return `${Math.floor(d / 86400)} d`;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// The API serves OpenAI's own timestamps as Unix seconds and the gateway's extra ones (billing, webhook
// telemetry) as ISO 8601 strings, as the AI Stats SDKs type them: both read here.
function toDate(value) {
  return typeof value === "string" ? new Date(value) : new Date(value * 1000);
}

export function dateTime(value) {
  if (!value) return "";
  return dateTimeFormat.format(toDate(value));
}

export function isoTime(value) {
  return value ? toDate(value).toISOString() : "";
}

export function bytes(n) {
  const v = Number(n || 0);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

/** The batch's cost so far: the settled amount once billed, else the running sum of its pricing lines. */
export function batchCost(batch) {
  const billing = batch.billing || {};
  if (billing.state === "settled" || billing.state === "void") {
    return { nanos: billing.cost_nanos || 0, final: true };
  }
  const lines = batch.pricing_lines || [];
  return { nanos: lines.reduce((sum, line) => sum + Number(line.line_nanos || 0), 0), final: false };
}

/** Fixed precision for cost columns: "$0.3400", "$1,234.5000" (the running sum and the settled amount alike). */
export function usdFixed(nanos) {
  const value = Number(nanos || 0) / NANOS_PER_USD;
  return (value < 0 ? "-$" : "$") + Math.abs(value).toLocaleString("en-US", { minimumFractionDigits: 4,
    maximumFractionDigits: 4 });
}

/**
 * A batch's lines as the dashboard tells them: OpenAI's `failed` includes lines that never ran (the batch was
 * cancelled or expired first); the gateway's request_counts extensions split them out. An older gateway without
 * them counts every failure as failed.
 */
export function lineCounts(batch) {
  const c = batch.request_counts || {};
  const total = Number(c.total || 0);
  const succeeded = Number(c.succeeded ?? c.completed ?? 0);
  const cancelled = Number(c.cancelled || 0);
  const expired = Number(c.expired || 0);
  const errored = Number(c.errored ?? Math.max(0, Number(c.failed || 0) - cancelled - expired));
  const notRun = cancelled + expired;
  const why = [cancelled ? "cancelled" : null, expired ? "expired" : null].filter(Boolean).join(" and ");
  return { total, succeeded, errored, cancelled, expired, notRun, why, ran: succeeded + errored,
    pending: Math.max(0, total - succeeded - errored - notRun) };
}

/** "300 done · 1,700 not run (cancelled)", "120 done · 2 failed · 1,878 to go". */
export function countsText(batch) {
  const c = lineCounts(batch);
  const parts = [`${count(c.succeeded)} done`];
  if (c.errored) parts.push(`${count(c.errored)} failed`);
  if (c.notRun) parts.push(`${count(c.notRun)} not run (${c.why})`);
  if (c.pending && !TERMINAL.has(batch.status)) parts.push(`${count(c.pending)} to go`);
  return parts.join(" · ");
}

/** Whole percent of the lines that ran (answered or failed): a batch cancelled at 15 % shows 15 %, not 100 %. */
export function progressOf(batch) {
  const c = lineCounts(batch);
  if (!c.total) return 0;
  if (!c.notRun && typeof batch.progress === "number") return batch.progress;
  return c.ran >= c.total ? 100 : Math.min(99, Math.floor((c.ran * 100) / c.total));
}

/** A batch that ended with most of its lines that ran failing: not a plain green "completed". */
export function mostlyFailed(batch) {
  const c = lineCounts(batch);
  return TERMINAL.has(batch.status) && c.errored > 0 && c.errored > c.succeeded;
}

/**
 * Lines per second over the last `windowMs` of observations, and the time left at that pace. Fed the settled
 * count of each new batch state; never counts lines that settled before the page first saw the batch.
 */
export function rateMeter(windowMs = 15000) {
  const samples = [];
  return {
    observe(settled, now = Date.now()) {
      if (samples.length && settled < samples[samples.length - 1][1]) samples.length = 0;
      samples.push([now, settled]);
      while (samples.length > 2 && samples[1][0] <= now - windowMs) samples.shift();
    },
    rate() {
      if (samples.length < 2) return null;
      const [t0, s0] = samples[0];
      const [t1, s1] = samples[samples.length - 1];
      return t1 - t0 >= 1000 ? ((s1 - s0) * 1000) / (t1 - t0) : null;
    },
  };
}

export function rateText(rate) {
  if (rate === null || rate === undefined) return "";
  return rate >= 10 ? `${Math.round(rate).toLocaleString("en-US")}/s` : `${rate.toFixed(1)}/s`;
}

/** "ETA 3 min" from the lines left and the rate; "" without a rate to go by. */
export function etaText(remaining, rate) {
  if (!remaining) return "";
  if (!rate || rate <= 0) return "ETA unknown";
  const seconds = remaining / rate;
  if (seconds < 60) return `ETA ${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `ETA ${Math.ceil(seconds / 60)} min`;
  return `ETA ${(seconds / 3600).toFixed(1)} h`;
}

/** Re-renders every `time[data-age]` under `root` (ages tick without a reload). */
export function tickAges(root) {
  const now = Date.now() / 1000;
  for (const el of root.querySelectorAll("time[data-age]")) {
    const text = age(Number(el.dataset.age), now);
    if (el.textContent !== text) el.textContent = text;
  }
}
