// Sign-in: the user types an API key; it is checked against GET /v1/credits (which also names the
// key's workspace) and kept in this tab's sessionStorage, or on this device when the user opts in.

import { Api, ApiError, saveSession } from "../api.js";
import { h } from "../dom.js";

export function renderSignIn({ onSignedIn }) {
  const input = h("input", { id: "api-key", name: "api-key", type: "password", required: true,
    autocomplete: "off", spellcheck: "false", autocapitalize: "off", "aria-describedby": "api-key-help" });
  const error = h("p", { class: "form-error", id: "sign-in-error", role: "alert" });
  const remember = h("input", { id: "remember-key", name: "remember", type: "checkbox",
    "aria-describedby": "remember-help" });
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h("form", { class: "card signin-card", novalidate: true, "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", null, "Use an API key of this gateway. The dashboard shows only that key's workspace."),
    h("div", { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("p", { class: "hint", id: "api-key-help" },
        "No key yet? Create one with ", h("code", null, "aistats keys create"),
        ", or use the key the gateway printed when it first started.")),
    h("div", { class: "field inline" },
      remember,
      h("label", { for: "remember-key", class: "plain-label" }, "Remember on this device")),
    h("p", { class: "hint", id: "remember-help" },
      "Off: the key is kept only in this tab and removed when you sign out or close it. On: it stays in this "
      + "browser until you sign out, so shared batch links open signed in. Leave it off on a shared computer."),
    error,
    h("div", { class: "actions" }, button));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.textContent = "";
    if (!key) {
      error.textContent = "Enter an API key.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    try {
      const credits = await new Api(key).get("credits");
      saveSession(key, credits.workspace_id || "", remember.checked);
      onSignedIn();
    } catch (err) {
      const message = err instanceof ApiError && err.status === 401
        ? "That key was not accepted by this gateway."
        : (err.message || "Sign-in failed.");
      error.textContent = message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      input.select();
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });

  const el = h("section", { class: "signin" }, form);
  return { el, dispose: () => {} };
}
