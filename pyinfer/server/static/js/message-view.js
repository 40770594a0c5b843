// One chat message as an <article>: its text (markdown for replies), error or note, metrics, actions.

import { copyText } from "./clipboard.js";
import { renderMarkdown } from "./markdown.js";
import { metricItems } from "./perf.js";

const ROLE_NAMES = { user: "You", assistant: "Assistant" };

// actions: { onRegenerate } for the last reply, or {}.
export function messageElement(message, actions) {
  const article = document.createElement("article");
  article.className = `message ${message.role}`;
  article.dataset.role = message.role;
  article.innerHTML = `
    <header class="message-role"></header>
    <div class="content"></div>
    <p class="message-error" role="alert" hidden></p>
    <p class="message-note" hidden></p>
    <dl class="metrics" hidden></dl>
    <div class="message-actions">
      <button type="button" class="copy" aria-label="Copy message">Copy</button>
    </div>`;
  article.querySelector(".message-role").textContent = ROLE_NAMES[message.role] ?? message.role;
  const copy = article.querySelector(".copy");
  copy.addEventListener("click", () => copyText(message.content, copy));
  if (actions.onRegenerate) {
    const regenerate = document.createElement("button");
    regenerate.type = "button";
    regenerate.className = "regenerate";
    regenerate.textContent = "Regenerate";
    regenerate.addEventListener("click", actions.onRegenerate);
    article.querySelector(".message-actions").append(regenerate);
  }
  updateMessageElement(article, message);
  return article;
}

export function updateMessageElement(article, message) {
  const content = article.querySelector(".content");
  if (message.role === "assistant") {
    renderMarkdown(content, message.content);
  } else {
    content.textContent = message.content;
  }
  article.classList.toggle("streaming", Boolean(message.streaming));
  const error = article.querySelector(".message-error");
  error.hidden = !message.error;
  error.textContent = message.error ?? "";
  const note = article.querySelector(".message-note");
  note.textContent = message.stopped ? "Stopped." : message.truncated ? "Cut short by the max-tokens limit." : "";
  note.hidden = !note.textContent;
  const metrics = article.querySelector(".metrics");
  metrics.hidden = !message.usage;
  if (message.usage) metrics.replaceChildren(...metricItems(message.usage).map(metricPair));
  article.querySelector(".message-actions").hidden = Boolean(message.streaming);
}

function metricPair([label, value]) {
  const wrap = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = label;
  dd.textContent = value;
  wrap.append(dt, dd);
  return wrap;
}
