// The chat view: conversations (sidebar), the message list, sending, streaming, stopping, regenerating.

import { streamChat } from "./api.js";
import { messageElement, updateMessageElement } from "./message-view.js";
import { currentSettings } from "./settings.js";
import { loadConversations, newConversation, saveConversations } from "./store.js";

const $ = (id) => document.getElementById(id);

const state = {
  conversations: loadConversations(),
  current: null, // the conversation shown
  controller: null, // AbortController of the reply being streamed
};

export function initChat() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => show(null));
  $("system-prompt").addEventListener("input", (event) => {
    state.current.system = event.target.value;
    persist();
  });
  show(state.conversations[0]?.id ?? null);
}

// Shows a conversation by id; null starts a new one.
function show(id) {
  stop();
  let conversation = state.conversations.find((c) => c.id === id) ?? state.conversations.find(isEmpty);
  if (!conversation) {
    conversation = newConversation();
    state.conversations.unshift(conversation);
  }
  state.current = conversation;
  $("system-prompt").value = conversation.system;
  renderList();
  renderMessages();
  $("prompt").focus();
}

const isEmpty = (conversation) => !conversation.messages.length;

function renderList() {
  const items = state.conversations.map((conversation) => {
    const li = document.createElement("li");
    li.classList.toggle("active", conversation === state.current);
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conversation";
    open.textContent = conversation.title;
    open.addEventListener("click", () => show(conversation.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Delete conversation ${conversation.title}`);
    remove.addEventListener("click", () => deleteConversation(conversation));
    li.append(open, remove);
    return li;
  });
  $("conversation-list").replaceChildren(...items);
}

function renderMessages() {
  const { messages } = state.current;
  const last = messages.at(-1);
  const elements = messages.map((message) =>
    messageElement(message, message === last && message.role === "assistant" ? { onRegenerate: regenerate } : {}),
  );
  $("messages").replaceChildren(...elements);
  if (!elements.length) $("messages").innerHTML = '<p class="empty-hint">Ask something. Enter sends, Shift+Enter starts a new line.</p>';
  scrollToEnd();
}

function deleteConversation(conversation) {
  state.conversations = state.conversations.filter((c) => c !== conversation);
  persist();
  show(conversation === state.current ? (state.conversations[0]?.id ?? null) : state.current.id);
}

function send() {
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  $("prompt").value = "";
  const conversation = state.current;
  if (isEmpty(conversation)) conversation.title = text.slice(0, 48);
  conversation.messages.push({ role: "user", content: text });
  renderList();
  reply(conversation);
}

function regenerate() {
  if (state.controller || state.current.messages.at(-1)?.role !== "assistant") return;
  state.current.messages.pop();
  reply(state.current);
}

function stop() {
  state.controller?.abort();
}

// Streams the assistant's reply to the conversation as it stands.
async function reply(conversation) {
  const history = requestMessages(conversation);
  const message = { role: "assistant", content: "", streaming: true };
  conversation.messages.push(message);
  conversation.updated = Date.now();
  renderMessages();
  const element = $("messages").lastElementChild;
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let frame = 0;
  const onDelta = (text) => {
    message.content += text;
    frame ||= requestAnimationFrame(() => {
      frame = 0;
      updateMessageElement(element, message);
      scrollToEnd();
    });
  };
  try {
    const body = { ...currentSettings(), messages: history };
    const { usage, finishReason } = await streamChat(body, controller.signal, onDelta);
    message.usage = usage;
    message.truncated = finishReason === "length";
  } catch (e) {
    if (e.name === "AbortError") message.stopped = true;
    else message.error = e.message;
  } finally {
    cancelAnimationFrame(frame);
    delete message.streaming;
    state.controller = null;
    setBusy(false);
    persist();
    if (conversation === state.current) renderMessages();
  }
}

// What the server sees: the system prompt, then every turn that has text.
function requestMessages(conversation) {
  const messages = conversation.system.trim() ? [{ role: "system", content: conversation.system }] : [];
  for (const { role, content } of conversation.messages) {
    if (content) messages.push({ role, content });
  }
  return messages;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

function persist() {
  saveConversations(state.conversations);
}

function scrollToEnd() {
  const messages = $("messages");
  messages.scrollTop = messages.scrollHeight;
}
