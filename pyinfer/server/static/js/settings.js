// The model picker (from /v1/models) and the sampling controls, remembered in localStorage.

import { getJson } from "./api.js";
import { loadSettings, saveSettings } from "./store.js";

const RETRY_MS = 2000;
const fields = {
  temperature: "temperature",
  top_p: "top-p",
  max_tokens: "max-tokens",
};

export function initSettings(showStatus) {
  const settings = loadSettings();
  for (const [key, id] of Object.entries(fields)) {
    const input = document.getElementById(id);
    input.value = settings[key];
    input.addEventListener("change", () => saveSettings(currentSettings()));
  }
  const select = document.getElementById("model");
  select.addEventListener("change", () => saveSettings(currentSettings()));
  loadModels(select, settings.model, showStatus);
}

// The request fields: model (when known), temperature, top_p, max_tokens (those given).
export function currentSettings() {
  const model = document.getElementById("model").value;
  const settings = model ? { model } : {};
  for (const [key, id] of Object.entries(fields)) {
    const value = Number.parseFloat(document.getElementById(id).value);
    if (Number.isFinite(value)) settings[key] = value;
  }
  return settings;
}

async function loadModels(select, preferred, showStatus) {
  try {
    const { data } = await getJson("/v1/models");
    select.replaceChildren(...data.map((card) => new Option(card.id, card.id)));
    if (data.some((card) => card.id === preferred)) select.value = preferred;
    showStatus("ready", `Ready: ${select.value}`);
  } catch (e) {
    showStatus("error", e.message);
    setTimeout(() => loadModels(select, preferred, showStatus), RETRY_MS);
  }
}
