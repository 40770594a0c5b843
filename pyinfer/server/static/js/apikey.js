// The API key, asked for when the server answers 401 and kept in sessionStorage (this tab only).

const KEY = "pyinfer.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

// Shows the dialog; resolves true when the user gave a key, false when they cancelled.
export function askForApiKey(reason) {
  const dialog = document.getElementById("api-key-dialog");
  const input = document.getElementById("api-key");
  dialog.querySelector("p").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = input.value.trim();
        if (dialog.returnValue === "ok" && key) {
          sessionStorage.setItem(KEY, key);
          resolve(true);
        } else {
          resolve(false);
        }
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}
