// The API key, asked for when the server answers 401 and kept in sessionStorage (this tab only).

const KEY = "pyinfer.apiKey";
let pending = null; // the dialog on screen: requests refused meanwhile wait for the same answer
let declined = false; // cancelled: ask no more until the page is reloaded

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

// Resolves true when the user gave a key, false when they cancelled (now or before).
export function askForApiKey(reason) {
  if (declined) return Promise.resolve(false);
  pending ??= showDialog(reason).then((given) => {
    declined = !given;
    pending = null;
    return given;
  });
  return pending;
}

function showDialog(reason) {
  const dialog = document.getElementById("api-key-dialog");
  const input = document.getElementById("api-key");
  dialog.querySelector("p").textContent = `${reason} It is kept for this browser session only.`;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = input.value.trim();
        if (dialog.returnValue === "ok" && key) sessionStorage.setItem(KEY, key);
        resolve(dialog.returnValue === "ok" && Boolean(key));
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}
