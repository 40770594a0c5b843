// Entry point: the tabs, the sidebar toggle, the server status, then the chat and the dashboard.

import { initChat } from "./chat.js";
import { initDashboard } from "./dashboard.js";
import { initSettings } from "./settings.js";

const $ = (id) => document.getElementById(id);

function showStatus(kind, text) {
  const status = $("server-status");
  status.className = `server-status ${kind}`;
  status.textContent = text;
  status.title = text;
}

function initTabs(onDashboard) {
  const tabs = [$("tab-chat"), $("tab-dashboard")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        $(other.getAttribute("aria-controls")).hidden = !selected;
      }
      $("sidebar-toggle").hidden = tab.id !== "tab-chat";
      onDashboard(tab.id === "tab-dashboard");
    });
  }
}

function initSidebarToggle() {
  const toggle = $("sidebar-toggle");
  toggle.addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    toggle.setAttribute("aria-expanded", String(open));
  });
  // On a phone the sidebar covers the chat: picking a conversation closes it.
  $("sidebar").addEventListener("click", (event) => {
    if (event.target.closest("button")) {
      document.body.classList.remove("sidebar-open");
      toggle.setAttribute("aria-expanded", "false");
    }
  });
}

initSettings(showStatus);
initChat();
initSidebarToggle();
initTabs(initDashboard());
