// The model picker (from /v1/models) and the sampling controls. A control starts from the server's
// default for the model (its `sampling_defaults`); only values the user changes are kept in
// localStorage and sent, so a request leaves the rest to the server.

import { getJson } from "./api.js";
import { loadSettings, saveSettings } from "./store.js";

const RETRY_MS = 2000;
const fields = {
  temperature: "temperature",
  top_p: "top-p",
  max_tokens: "max-tokens",
};
// What the server applies where the model gives no default: OpenAI's sampling; the UI caps replies.
const FALLBACKS = { temperature: 1, top_p: 1, max_tokens: 512 };
let serverDefaults = {};

export function initSettings(showStatus) {
  const settings = loadSettings();
  for (const [key, id] of Object.entries(fields)) {
    const input = document.getElementById(id);
    if (key in settings) input.value = settings[key];
    input.addEventListener("change", () => {
      const stored = loadSettings();
      const value = Number.parseFloat(input.value);
      if (Number.isFinite(value) && value !== defaultOf(key)) stored[key] = value;
      else delete stored[key];
      saveSettings(stored);
      showDefaults();
    });
  }
  const select = document.getElementById("model");
  select.addEventListener("change", () => saveSettings({ ...loadSettings(), model: select.value }));
  document.getElementById("reset-settings").addEventListener("click", () => {
    saveSettings({ model: loadSettings().model });
    showDefaults();
  });
  loadModels(select, settings.model, showStatus);
}

// The request fields: model (when known), the user's own values, and max_tokens (the UI's cap unless
// the server has a default).
export function currentSettings() {
  const { model: _stored, ...own } = loadSettings();
  const model = document.getElementById("model").value;
  const settings = model ? { model, ...own } : own;
  if (!("max_tokens" in settings) && !("max_tokens" in serverDefaults)) {
    settings.max_tokens = FALLBACKS.max_tokens;
  }
  return settings;
}

function defaultOf(key) {
  return serverDefaults[key] ?? FALLBACKS[key];
}

// Each control not set by the user shows the server's default.
function showDefaults() {
  const stored = loadSettings();
  for (const [key, id] of Object.entries(fields)) {
    const input = document.getElementById(id);
    if (!(key in stored)) input.value = defaultOf(key);
    input.classList.toggle("is-default", !(key in stored));
  }
}

async function loadModels(select, preferred, showStatus) {
  try {
    const { data } = await getJson("/v1/models");
    select.replaceChildren(...data.map((card) => new Option(card.id, card.id)));
    if (data.some((card) => card.id === preferred)) select.value = preferred;
    const card = data.find((c) => c.id === select.value);
    serverDefaults = card?.sampling_defaults ?? {};
    showDefaults();
    showStatus("ready", `Ready: ${select.value}`);
  } catch (e) {
    showStatus("error", e.message);
    setTimeout(() => loadModels(select, preferred, showStatus), RETRY_MS);
  }
}
