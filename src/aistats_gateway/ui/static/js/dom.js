// Building DOM nodes without innerHTML: every value from the API goes in as text, never as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("a", {href: "#/x", class: "y"}, "text", otherNode) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements (charts). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Says `message` to screen readers (polite live region). */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = message; }, 50);
}

/** Shows an error banner (assertive live region) that the user can dismiss. */
export function alertError(message) {
  const box = document.getElementById("alerts");
  if (!box) return;
  const item = h("div", { class: "alert" },
    h("span", null, message),
    h("button", { type: "button", class: "button subtle", "aria-label": "Dismiss message",
      onclick: () => item.remove() }, "×"));
  box.append(item);
  setTimeout(() => item.remove(), 12000);
}

/** A table whose cells carry their column name (shown as labels on narrow screens). */
export function table({ caption, hiddenCaption, columns, rows, empty, className }) {
  const head = h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c))));
  const body = h("tbody");
  for (const row of rows) body.append(tableRow(columns, row));
  const el = h("table", { class: `data ${className || ""}` },
    caption ? h("caption", { class: hiddenCaption ? "visually-hidden" : null }, caption) : null, head, body);
  if (!rows.length && empty) {
    body.append(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
  }
  return h("div", { class: "table-wrap" }, el);
}

export function tableRow(columns, cells, attrs) {
  return h("tr", attrs, cells.map((cell, i) => h("td", { "data-label": columns[i] }, cell)));
}

/** A <dl> from [[term, value], ...], skipping empty values. */
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(h("div", null, h("dt", null, term), h("dd", null, value)));
  }
  return dl;
}
