// The failure toast: one title, one line per part that failed.

import { h } from "./dom.js";

const toast = document.querySelector('[data-testid="toast"]');
const lines = toast.querySelector(".toast-lines");

toast.querySelector(".toast-close").addEventListener("click", hideToast);

/** Shows the toast with `messages`, one line each. */
export function showToast(messages) {
  lines.replaceChildren(...messages.map((m) => h("li", {}, m)));
  toast.hidden = false;
}

export function hideToast() {
  toast.hidden = true;
  lines.replaceChildren();
}
