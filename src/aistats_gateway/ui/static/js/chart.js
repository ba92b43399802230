// A stacked bar chart drawn as inline SVG (no chart library): one bar per day, one stack segment per
// series (model). Colours come from the stylesheet (classes series-0..7), so the CSP needs no inline
// style; each segment has a <title> for a tooltip, and the chart a title and description for
// assistive technology (the overview also shows the same numbers as a table).

import { s } from "./dom.js";

// On a phone the chart is drawn at about its displayed width (not scaled down from a laptop's), so its axis
// labels stay at least 11 px on screen (the stylesheet sizes `.chart.narrow .axis`).
const NARROW = "(max-width: 640px)";
const WIDE = { W: 720, H: 260, PAD: { left: 64, right: 12, top: 12, bottom: 36 }, labels: 10 };
const SMALL = { W: 340, H: 220, PAD: { left: 62, right: 8, top: 12, bottom: 34 }, labels: 4 };
export const SERIES_CLASSES = 8;

/** A round step for `ticks` gridlines covering `value` (whole numbers only when `integer`). */
function niceStep(value, ticks, integer) {
  const raw = value / ticks;
  if (raw <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(raw));
  for (const m of integer && exp < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]) {
    const step = m * exp;
    if (step >= raw && (!integer || Number.isInteger(step))) return step;
  }
  return 10 * exp;
}

/**
 * dates: ["2025-11-01", ...]; series: ["model-a", ...]; value(date, series) → number;
 * format(number) → label; title/desc: accessible name and description; integer: whole-number gridlines.
 */
export function stackedBars({ id, dates, series, value, format, title, desc, integer }) {
  const narrow = window.matchMedia(NARROW).matches;
  const { W, H, PAD, labels } = narrow ? SMALL : WIDE;
  const totals = dates.map((d) => series.reduce((sum, name) => sum + value(d, name), 0));
  const ticks = 4;
  const step = niceStep(Math.max(0, ...totals), ticks, integer);
  const max = step * ticks;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, dates.length);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const y = (v) => PAD.top + plotH - (v / max) * plotH;

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: narrow ? "chart narrow" : "chart", role: "img", "aria-labelledby": `${id}-t ${id}-d`,
    id, preserveAspectRatio: "xMidYMid meet" },
  s("title", { id: `${id}-t` }, title),
  s("desc", { id: `${id}-d` }, desc));

  for (let i = 0; i <= ticks; i += 1) {
    const v = step * i;
    const ty = y(v);
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: ty, y2: ty, class: "grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: ty + 4, class: "axis", "text-anchor": "end" }, format(v)));
  }
  const labelEvery = Math.ceil(dates.length / labels);
  dates.forEach((date, i) => {
    const x = PAD.left + slot * i + (slot - barW) / 2;
    let base = 0;
    series.forEach((name, k) => {
      const v = value(date, name);
      if (v <= 0) return;
      const top = y(base + v);
      const rect = s("rect", { x, y: top, width: barW, height: Math.max(1, y(base) - top),
        class: `bar series-${k % SERIES_CLASSES}`, "data-date": date, "data-series": name },
      s("title", null, `${date} · ${name}: ${format(v)}`));
      svg.append(rect);
      base += v;
    });
    if (i % labelEvery === 0 || i === dates.length - 1) {
      svg.append(s("text", { x: PAD.left + slot * i + slot / 2, y: H - PAD.bottom + 16, class: "axis",
        "text-anchor": "middle" }, date.slice(5)));
    }
  });
  svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: "baseline" }));
  return svg;
}
