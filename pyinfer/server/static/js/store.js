// Conversations and settings, kept in localStorage.
// A conversation: { id, title, system, messages: [{ role, content, metrics?, error?, stopped? }], updated }.

const CONVERSATIONS = "pyinfer.conversations";
const SETTINGS = "pyinfer.settings.v2"; // v1 stored every control, defaults included

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

export function loadConversations() {
  const conversations = load(CONVERSATIONS, []);
  for (const message of conversations.flatMap((c) => c.messages)) {
    if (message.streaming) {
      delete message.streaming; // the page closed while it streamed
      message.stopped = true;
    }
  }
  return conversations;
}

export function saveConversations(conversations) {
  localStorage.setItem(CONVERSATIONS, JSON.stringify(conversations));
}

export function newConversation() {
  return { id: crypto.randomUUID(), title: "New chat", system: "", messages: [], updated: Date.now() };
}

// The model chosen and the sampling values the user set; the rest are the server's defaults.
export function loadSettings() {
  return { model: "", ...load(SETTINGS, {}) };
}

export function saveSettings(settings) {
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
}
