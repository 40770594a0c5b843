// Conversations and settings, kept in localStorage.
// A conversation: { id, title, system, messages: [{ role, content, metrics?, error?, stopped? }], updated }.

const CONVERSATIONS = "pyinfer.conversations";
const SETTINGS = "pyinfer.settings";
const DEFAULT_SETTINGS = { model: "", temperature: 0.7, top_p: 1, max_tokens: 512 };

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

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...load(SETTINGS, {}) };
}

export function saveSettings(settings) {
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
}
