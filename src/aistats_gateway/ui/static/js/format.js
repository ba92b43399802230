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

export function progressOf(batch) {
  if (typeof batch.progress === "number") return batch.progress;
  const c = batch.request_counts || {};
  return c.total ? Math.floor(((c.completed + c.failed) * 100) / c.total) : 0;
}
