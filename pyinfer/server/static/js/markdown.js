// Markdown to sanitized HTML: marked parses, DOMPurify removes scripts, event handlers and the like.
/* global marked, DOMPurify */

import { copyText } from "./clipboard.js";

marked.setOptions({ gfm: true, breaks: true });

export function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text), { USE_PROFILES: { html: true } });
  for (const link of element.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  for (const pre of element.querySelectorAll("pre")) addCopyButton(pre);
}

function addCopyButton(pre) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy-code";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy code");
  button.addEventListener("click", () => copyText(pre.querySelector("code")?.textContent ?? pre.textContent, button));
  pre.append(button);
}
