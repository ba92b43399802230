// Creating a batch: drop (or choose) a JSONL file, pick the endpoint and window, add a session and
// metadata, see the validation result and the cost estimate (a dry run of the very same request), then
// submit. The file is uploaded once when chosen; an upload that never became a batch is deleted again.

import { alertError, announce, h, replace, table } from "../dom.js";
import { bytes, count, usd } from "../format.js";

const ENDPOINTS = ["/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions",
  "/v1/moderations", "/v1/messages"];
const WINDOWS = ["24h", "1h", "4h", "12h", "48h", "72h", "168h"];
const MAX_METADATA = 16;

export function renderCreate(ctx) {
  const { api } = ctx;
  let upload = null; // the uploaded file object, until a batch uses it
  let estimate = null; // the last dry run, for the current inputs
  let estimateSeq = 0;
  let debounce = null;
  let created = false;
  let disposed = false;

  const fileInput = h("input", { id: "batch-file", name: "file", type: "file", accept: ".jsonl,.json,.txt",
    class: "file-input", "aria-describedby": "drop-help file-status" });
  const fileStatus = h("p", { id: "file-status", class: "muted", role: "status" }, "No file chosen.");
  const drop = h("div", { class: "dropzone", id: "dropzone" },
    h("label", { for: "batch-file" },
      h("strong", null, "Drop a JSONL file here"), " or ", h("span", { class: "link" }, "choose one")),
    fileInput,
    h("p", { id: "drop-help", class: "hint" },
      "One request per line: {\"custom_id\", \"method\": \"POST\", \"url\", \"body\"}."),
    fileStatus);

  const endpoint = h("select", { id: "endpoint", name: "endpoint" },
    ENDPOINTS.map((e) => h("option", { value: e }, e)));
  const windowInput = h("input", { id: "window", name: "completion_window", list: "window-options",
    value: "24h", required: true, pattern: "\\s*\\d+\\s*[hm]\\s*", "aria-describedby": "window-help" });
  const windowList = h("datalist", { id: "window-options" }, WINDOWS.map((w) => h("option", { value: w })));
  const session = h("input", { id: "session", name: "session_id", maxlength: 256, autocomplete: "off",
    placeholder: "optional, e.g. agent-run-42" });
  const metaRows = h("div", { class: "meta-rows", id: "metadata-rows" });
  const addMeta = h("button", { type: "button", class: "button subtle", id: "add-metadata" }, "+ Add metadata");

  const estimatePanel = h("div", { class: "estimate", id: "estimate", "aria-live": "polite" },
    h("p", { class: "muted" }, "Choose a file to see its validation and cost estimate."));
  const submit = h("button", { type: "submit", class: "button primary", id: "submit-batch", disabled: true },
    "Create batch");
  const formError = h("p", { class: "form-error", role: "alert" });

  function metaRow(key = "", value = "") {
    const n = metaRows.children.length + 1;
    const row = h("div", { class: "meta-row" },
      h("label", { class: "visually-hidden", for: `meta-key-${n}` }, `Metadata key ${n}`),
      h("input", { id: `meta-key-${n}`, class: "meta-key", maxlength: 64, placeholder: "key", value: key }),
      h("label", { class: "visually-hidden", for: `meta-value-${n}` }, `Metadata value ${n}`),
      h("input", { id: `meta-value-${n}`, class: "meta-value", maxlength: 512, placeholder: "value", value }),
      h("button", { type: "button", class: "button subtle", "aria-label": `Remove metadata ${n}`,
        onclick: () => { row.remove(); addMeta.disabled = false; scheduleEstimate(); } }, "Remove"));
    metaRows.append(row);
    addMeta.disabled = metaRows.children.length >= MAX_METADATA;
    return row;
  }
  addMeta.addEventListener("click", () => metaRow().querySelector("input").focus());

  function metadata() {
    const out = {};
    for (const row of metaRows.children) {
      const k = row.querySelector(".meta-key").value.trim();
      if (k) out[k] = row.querySelector(".meta-value").value;
    }
    return Object.keys(out).length ? out : null;
  }

  function body(dryRun) {
    const b = { input_file_id: upload.id, endpoint: endpoint.value, completion_window: windowInput.value.trim() };
    const m = metadata();
    if (m) b.metadata = m;
    if (session.value.trim()) b.session_id = session.value.trim();
    if (dryRun) b.dry_run = true;
    return b;
  }

  async function forget() {
    if (upload && !created) {
      const old = upload;
      upload = null;
      api.delete(`files/${encodeURIComponent(old.id)}`).catch(() => {});
    }
  }

  async function chooseFile(file) {
    if (!file) return;
    await forget();
    estimate = null;
    submit.disabled = true;
    formError.textContent = "";
    fileStatus.textContent = `Uploading ${file.name} (${bytes(file.size)})…`;
    try {
      upload = await api.upload(file);
      if (disposed) { await forget(); return; } // the user left while it uploaded
      fileStatus.textContent = `${file.name} · ${bytes(upload.bytes)} uploaded as ${upload.id}.`;
      drop.classList.add("has-file");
      announce(`${file.name} uploaded.`);
      runEstimate();
    } catch (err) {
      fileStatus.textContent = `Upload failed: ${err.message}`;
      replace(estimatePanel, h("p", { class: "form-error" }, err.message));
    }
  }

  function scheduleEstimate() {
    clearTimeout(debounce);
    submit.disabled = true;
    debounce = setTimeout(runEstimate, 400);
  }

  async function runEstimate() {
    if (!upload) return;
    const seq = ++estimateSeq;
    replace(estimatePanel, h("p", { class: "muted" }, "Validating and estimating…"));
    try {
      const result = await api.post("batches", body(true));
      if (seq !== estimateSeq) return;
      estimate = result;
      showEstimate(result);
      submit.disabled = !result.valid || result.would_be_refused;
    } catch (err) {
      if (seq !== estimateSeq) return;
      estimate = null;
      submit.disabled = true;
      replace(estimatePanel, h("p", { class: "form-error" },
        err.param ? `${err.param}: ${err.message}` : err.message));
    }
  }

  function showEstimate(r) {
    const errors = (r.errors && r.errors.data) || [];
    replace(estimatePanel,
      h("h2", { id: "estimate-title" }, "Before you submit"),
      h("p", { class: r.valid ? "ok" : "bad", id: "estimate-verdict" },
        r.valid ? `Valid: ${count(r.request_counts.total)} requests.`
          : `${count(errors.length)} problem${errors.length === 1 ? "" : "s"} found; the batch would fail.`),
      h("dl", { class: "facts" },
        // expected: the lines' prompts with typical answers; upper bound: every answer at its output cap (what a
        // limited workspace holds)
        h("div", null, h("dt", null, "Expected cost"),
          h("dd", { id: "estimate-expected" }, usd(r.expected_cost_nanos),
            h("span", { class: "muted small" }, " with typical answers"))),
        h("div", null, h("dt", null, "Upper bound"),
          h("dd", { id: "estimate-cost" }, usd(r.estimated_nanos),
            h("span", { class: "muted small" }, r.estimated_nanos === r.expected_cost_nanos ? " (the same)"
              : " if every answer runs to its cap"))),
        h("div", null, h("dt", null, "Models"), h("dd", { id: "estimate-models" },
          Object.entries(r.models || {}).map(([m, n]) => `${m} × ${count(n)}`).join(", ") || "—")),
        h("div", null, h("dt", null, "Available credit"),
          h("dd", null, r.available_nanos === null ? "unlimited" : usd(r.available_nanos)))),
      r.would_be_refused ? h("p", { class: "bad" },
        "Not enough credit for this estimate: the gateway would refuse the batch (402).") : null,
      errors.length ? table({ caption: "Validation errors", className: "responsive errors-table",
        columns: ["Line", "Code", "Parameter", "Message"],
        rows: errors.map((e) => [e.line === null || e.line === undefined ? "—" : String(e.line), e.code,
          e.param || "—", e.message]) }) : null);
  }

  fileInput.addEventListener("change", () => chooseFile(fileInput.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) chooseFile(file);
  });
  for (const input of [endpoint, windowInput]) input.addEventListener("change", scheduleEstimate);
  metaRows.addEventListener("input", scheduleEstimate);

  const form = h("form", { class: "create-form", novalidate: true, "aria-labelledby": "create-title" },
    drop,
    h("div", { class: "grid-2" },
      h("div", { class: "field" }, h("label", { for: "endpoint" }, "Endpoint"), endpoint),
      h("div", { class: "field" }, h("label", { for: "window" }, "Completion window"), windowInput, windowList,
        h("p", { class: "hint", id: "window-help" }, "Hours or minutes, e.g. 24h or 90m; at most 168h."))),
    h("div", { class: "field" }, h("label", { for: "session" }, "Session"), session),
    h("fieldset", { class: "metadata" }, h("legend", null, "Metadata (up to 16 pairs)"), metaRows, addMeta),
    estimatePanel,
    formError,
    h("div", { class: "actions" }, submit, h("a", { href: "#/batches", class: "button subtle" }, "Back to batches")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!upload || !estimate || !estimate.valid) return;
    submit.disabled = true;
    formError.textContent = "";
    try {
      const batch = await api.post("batches", body(false));
      created = true;
      announce(`Batch ${batch.id} created.`);
      ctx.navigate(`#/batches?created=${encodeURIComponent(batch.id)}`);
    } catch (err) {
      formError.textContent = err.param ? `${err.param}: ${err.message}` : err.message;
      submit.disabled = false;
    }
  });

  const el = h("section", { class: "view narrow" },
    h("div", { class: "view-head" }, h("h1", { id: "create-title" }, "New batch")),
    form);
  return {
    el,
    dispose() {
      disposed = true;
      clearTimeout(debounce);
      forget().catch((err) => alertError(err.message));
    },
  };
}
